//! [`WebSocketUpgrade`]: the `HttpContext.WebSockets` of a request.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch};

use crate::error::Error;
use crate::handshake::{
    Flavor, Handshake, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL,
};
use crate::layer::live::Registration;
use crate::options::{DeflateOptions, WebSocketOptions};
use crate::protocol::CompressionConfig;
use crate::socket::{PipelineLink, SocketConfig, Transport, WebSocket};
use tokio::net::TcpStream;

/// The handle [`WebSocketLayer`](crate::WebSocketLayer) puts in the
/// extensions of every valid WebSocket request: the analog of ASP.NET's
/// `HttpContext.WebSockets` (`IsWebSocketRequest`,
/// `WebSocketRequestedProtocols`, `AcceptWebSocketAsync`).
///
/// ```no_run
/// use http::{Request, Response, StatusCode};
/// use tower_websockets::{AcceptOptions, WebSocketUpgrade};
///
/// async fn handler<B>(mut req: Request<B>) -> Result<Response<String>, tower_websockets::Error> {
///     let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
///         let mut bad = Response::new("expected a websocket request".to_owned());
///         *bad.status_mut() = StatusCode::BAD_REQUEST;
///         return Ok(bad);
///     };
///     // Pick "chat" if the client offered it.
///     let chat = upgrade.requested_subprotocols().any(|p| p == "chat");
///     let options = if chat { AcceptOptions::new().subprotocol("chat") } else { AcceptOptions::new() };
///     let mut socket = upgrade.accept_with(options).await?;
///     socket.send("hello".into()).await?;
///     socket.close_with(tower_websockets::CloseCode::NORMAL, "bye").await?;
///     Ok(Response::default()) // discarded: the 101 was already sent
/// }
/// ```
#[derive(Clone)]
pub struct WebSocketUpgrade {
    inner: Arc<Inner>,
    /// What [`accept`](WebSocketUpgrade::accept) and
    /// [`on_upgrade`](WebSocketUpgrade::on_upgrade) accept with.
    options: AcceptOptions,
}

struct Inner {
    handshake: Handshake,
    options: Arc<WebSocketOptions>,
    pending: Mutex<Option<Pending>>,
}

/// What accepting consumes: hyper's upgrade future, the channel to the
/// layer's response future, and the socket's completion.
pub(crate) struct Pending {
    pub(crate) on_upgrade: OnUpgrade,
    pub(crate) respond: oneshot::Sender<Response<()>>,
    pub(crate) finished: watch::Sender<bool>,
    /// The request pipeline the layer holds until the socket is finished.
    pub(crate) pipeline: Arc<PipelineLink>,
    /// The request's place in the layer's count, for the socket to
    /// register with.
    pub(crate) registration: Registration,
    /// The socket's span.
    pub(crate) span: tracing::Span,
}

/// Per-socket choices made at accept (ASP.NET `WebSocketAcceptContext`).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AcceptOptions {
    subprotocol: Option<String>,
    /// The server's subprotocols, in its order of preference.
    protocols: Vec<String>,
    keep_alive_interval: Option<Option<Duration>>,
    keep_alive_timeout: Option<Option<Duration>>,
    permessage_deflate: Option<Option<DeflateOptions>>,
}

impl AcceptOptions {
    /// Default accept options: no subprotocol, the layer's keep-alive.
    pub fn new() -> Self {
        AcceptOptions::default()
    }

    /// The subprotocol to answer with (ASP.NET
    /// `WebSocketAcceptContext.SubProtocol`). It must be one the client
    /// offered in `Sec-WebSocket-Protocol`, compared exactly.
    #[must_use]
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// The subprotocols this server speaks, in its order of preference:
    /// the accept answers with the first of them the client offered, or
    /// with none if the client offered none of them (the socket is
    /// accepted either way, as axum's `WebSocketUpgrade::protocols` does).
    /// A [`subprotocol`](Self::subprotocol) chosen by hand takes
    /// precedence. The choice is on the socket:
    /// [`WebSocket::subprotocol`](crate::WebSocket::subprotocol).
    #[must_use]
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// This socket's keep-alive interval, overriding
    /// [`WebSocketOptions::keep_alive_interval`]; `None` disables
    /// keep-alive pings for it.
    #[must_use]
    pub fn keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }

    /// This socket's permessage-deflate settings, overriding
    /// [`WebSocketOptions::permessage_deflate`]; `None` accepts this socket
    /// uncompressed (ASP.NET `DangerousEnableCompression`, per accept).
    ///
    /// # Panics
    ///
    /// Never; settings out of range are reported by
    /// [`accept_with`](WebSocketUpgrade::accept_with) as
    /// [`Error::InvalidArgument`].
    #[must_use]
    #[doc(alias = "DangerousEnableCompression")]
    pub fn permessage_deflate(mut self, deflate: Option<DeflateOptions>) -> Self {
        self.permessage_deflate = Some(deflate);
        self
    }

    /// This socket's keep-alive timeout, overriding
    /// [`WebSocketOptions::keep_alive_timeout`]; `None` disables it for
    /// this socket. A zero timeout counts as `None`.
    #[must_use]
    pub fn keep_alive_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.keep_alive_timeout = Some(timeout.filter(|t| !t.is_zero()));
        self
    }
}

impl WebSocketUpgrade {
    pub(crate) fn new(
        handshake: Handshake,
        options: Arc<WebSocketOptions>,
        pending: Pending,
    ) -> Self {
        WebSocketUpgrade {
            inner: Arc::new(Inner {
                handshake,
                options,
                pending: Mutex::new(Some(pending)),
            }),
            options: AcceptOptions::new(),
        }
    }

    /// Takes the handle out of a request's extensions: `Some` exactly when
    /// [`WebSocketLayer`](crate::WebSocketLayer) found a valid WebSocket
    /// request (ASP.NET `IsWebSocketRequest`).
    ///
    /// The handle keeps nothing of the request. The request itself does:
    /// hyper parses headers in place, so its header values share the
    /// connection's read buffer (8 KiB or more). Drop the request once you
    /// have what you need from it, before the socket's long life, or every
    /// idle socket keeps that buffer alive.
    pub fn from_request<B>(req: &mut Request<B>) -> Option<WebSocketUpgrade> {
        req.extensions_mut().remove::<WebSocketUpgrade>()
    }

    /// Whether the request is a valid WebSocket request that can be
    /// accepted (ASP.NET `IsWebSocketRequest`), without taking the handle.
    pub fn is_websocket_request<B>(req: &Request<B>) -> bool {
        req.extensions().get::<WebSocketUpgrade>().is_some()
    }

    /// The subprotocols the client offered, in its order of preference
    /// (ASP.NET `WebSocketRequestedProtocols`).
    pub fn requested_subprotocols(&self) -> impl Iterator<Item = &str> {
        self.inner.handshake.subprotocols.iter().map(|p| &**p)
    }

    /// The first of `supported` (the server's subprotocols, in its order
    /// of preference) that the client offered, compared exactly; what
    /// [`AcceptOptions::protocols`] answers with.
    pub fn select_subprotocol<'a, S: AsRef<str>>(&self, supported: &'a [S]) -> Option<&'a str> {
        supported.iter().map(AsRef::as_ref).find(|wanted| {
            self.requested_subprotocols()
                .any(|offered| offered == *wanted)
        })
    }

    /// The extensions the client offered in `Sec-WebSocket-Extensions`.
    /// None is negotiated yet.
    pub fn requested_extensions(&self) -> impl Iterator<Item = &str> {
        self.inner.handshake.extensions.iter().map(|p| &**p)
    }

    /// Accepts with default [`AcceptOptions`] (ASP.NET
    /// `AcceptWebSocketAsync()`).
    ///
    /// # Errors
    ///
    /// As [`accept_with`](Self::accept_with).
    pub async fn accept(self) -> Result<WebSocket, Error> {
        let options = self.options.clone();
        self.accept_with(options).await
    }

    /// The subprotocols this server speaks, in its order of preference,
    /// for [`accept`](Self::accept) and [`on_upgrade`](Self::on_upgrade):
    /// as [`AcceptOptions::protocols`] (axum's `WebSocketUpgrade::protocols`).
    #[must_use]
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options = self.options.protocols(protocols);
        self
    }

    /// The accept options [`accept`](Self::accept) and
    /// [`on_upgrade`](Self::on_upgrade) use (keep-alive, compression, a
    /// subprotocol chosen by hand).
    #[must_use]
    pub fn with_options(mut self, options: AcceptOptions) -> Self {
        self.options = options;
        self
    }

    /// axum's way: answers the handshake now and runs `callback` with the
    /// socket on a task of its own; returns the response the handler
    /// returns (the layer sends the handshake's `101` in its place). The
    /// socket still counts, and the request pipeline is still held, until
    /// it is finished (the lifetime rule), although the handler has
    /// returned.
    ///
    /// ```no_run
    /// use http::Response;
    /// use tower_websockets::{Message, WebSocketUpgrade};
    ///
    /// fn handler(upgrade: WebSocketUpgrade) -> Response<String> {
    ///     upgrade.on_upgrade(|mut socket| async move {
    ///         while let Some(Ok(message)) = socket.recv().await {
    ///             if message.is_text() && socket.send(message).await.is_err() {
    ///                 break;
    ///             }
    ///         }
    ///     })
    /// }
    /// ```
    ///
    /// If the accept cannot be answered (a subprotocol chosen by hand that
    /// the client did not offer, settings out of range, an accept through
    /// a clone of this handle), the response is a `400` or `500` and
    /// `callback` never runs; a connection that goes away before the
    /// upgrade completes does not run it either.
    pub fn on_upgrade<C, Fut, B>(self, callback: C) -> Response<B>
    where
        C: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
        B: Default,
    {
        let options = self.options.clone();
        let mut response = Response::new(B::default());
        match self.respond(options) {
            Ok(accepting) => {
                tokio::spawn(async move {
                    if let Ok(socket) = accepting.finish().await {
                        callback(socket).await;
                    }
                });
            }
            Err(error) => {
                *response.status_mut() = match error {
                    Error::SubprotocolNotOffered => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
            }
        }
        response
    }

    /// Accepts the request: the handshake response (`101 Switching
    /// Protocols` over HTTP/1.1, `200 OK` over HTTP/2) is handed to the
    /// layer, which returns it to hyper; once hyper has sent it and handed
    /// over the connection (or the HTTP/2 stream), this returns the socket.
    ///
    /// # Errors
    ///
    /// [`Error::SubprotocolNotOffered`] if the chosen subprotocol was not
    /// offered (nothing is sent; the request can still be answered
    /// normally); [`Error::AlreadyAccepted`] if this request was already
    /// accepted through a clone of this handle;
    /// [`Error::HandshakeAborted`] if the HTTP connection went away first;
    /// [`Error::Upgrade`] if hyper could not hand over the connection —
    /// notably when the connection is served without upgrades (hyper's
    /// `http1::Connection::with_upgrades()` /
    /// `serve_connection_with_upgrades`), which hyper only reveals after
    /// the `101` was sent; the connection then ends.
    pub async fn accept_with(self, options: AcceptOptions) -> Result<WebSocket, Error> {
        self.respond(options)?.finish().await
    }

    /// The synchronous half of an accept: checks the options, builds the
    /// handshake response and hands it to the layer. What is left (hyper's
    /// upgrade, the socket) is the returned [`Accepting`]'s.
    fn respond(self, options: AcceptOptions) -> Result<Accepting, Error> {
        let subprotocol = match &options.subprotocol {
            Some(chosen) if self.requested_subprotocols().any(|p| p == chosen) => {
                Some(chosen.clone())
            }
            Some(_) => return Err(Error::SubprotocolNotOffered),
            None => self
                .select_subprotocol(&options.protocols)
                .map(str::to_owned),
        };
        let deflate = match options.permessage_deflate {
            Some(deflate) => deflate,
            None => self.inner.options.permessage_deflate,
        };
        if let Some(deflate) = &deflate {
            deflate
                .validate()
                .map_err(|_| Error::InvalidArgument("permessage_deflate settings out of range"))?;
        }
        let negotiated = deflate.and_then(|deflate| {
            crate::extensions::negotiate(
                &self.inner.handshake.extension_offers,
                &deflate.negotiation(),
            )
            .map(|(agreed, header)| (deflate, agreed, header))
        });
        let pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(Error::AlreadyAccepted)?;

        let mut response = Response::new(());
        match &self.inner.handshake.flavor {
            Flavor::Http11 { accept } => {
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept.clone());
            }
            // RFC 8441 §5: a 2xx answer opens the stream as the socket.
            Flavor::Http2 => *response.status_mut() = StatusCode::OK,
        }
        if let Some(protocol) = &subprotocol {
            let value =
                HeaderValue::from_str(protocol).map_err(|_| Error::SubprotocolNotOffered)?;
            response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
        let mut extensions = None;
        let mut compression = None;
        if let Some((deflate, agreed, header)) = negotiated {
            extensions = header.to_str().ok().map(Box::from);
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_EXTENSIONS, header);
            compression = Some(CompressionConfig {
                server_window_bits: agreed.server_window_bits,
                client_window_bits: agreed.client_window_bits,
                server_no_context_takeover: agreed.server_no_context_takeover,
                client_no_context_takeover: agreed.client_no_context_takeover,
                level: deflate.level,
                threshold: deflate.threshold,
            });
        }

        let Pending {
            on_upgrade,
            respond,
            finished,
            pipeline,
            registration,
            span,
        } = pending;
        if respond.send(response).is_err() {
            tracing::debug!(parent: &span, "websocket accept failed: the connection went away first");
            return Err(Error::HandshakeAborted);
        }
        Ok(Accepting {
            options,
            layer_options: self.inner.options.clone(),
            on_upgrade,
            finished,
            pipeline,
            registration,
            span,
            subprotocol,
            extensions,
            compression,
        })
    }
}

/// An accept whose handshake response is on its way: what is left to do
/// once hyper has sent it.
struct Accepting {
    options: AcceptOptions,
    layer_options: Arc<WebSocketOptions>,
    on_upgrade: OnUpgrade,
    finished: watch::Sender<bool>,
    pipeline: Arc<PipelineLink>,
    registration: Registration,
    span: tracing::Span,
    subprotocol: Option<String>,
    extensions: Option<Box<str>>,
    compression: Option<CompressionConfig>,
}

impl Accepting {
    /// Waits for hyper to hand over the connection and makes the socket.
    async fn finish(self) -> Result<WebSocket, Error> {
        let Accepting {
            options,
            layer_options,
            on_upgrade,
            finished,
            pipeline,
            registration,
            span,
            subprotocol,
            extensions,
            compression,
        } = self;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(parent: &span, %error, "websocket accept failed: hyper could not hand over the connection");
                return Err(Error::Upgrade(error));
            }
        };
        span.record("subprotocol", subprotocol.as_deref());
        span.record("extensions", extensions.as_deref());

        let mut config = SocketConfig::from_options(&layer_options);
        if let Some(interval) = options.keep_alive_interval {
            config.keep_alive_interval = interval.filter(|i| !i.is_zero());
        }
        if let Some(timeout) = options.keep_alive_timeout {
            config.keep_alive_timeout = timeout;
        }
        config.subprotocol = subprotocol.map(String::into_boxed_str);
        config.extensions = extensions;
        config.compression = compression;
        config.pipeline = Some(pipeline);
        config.registration = Some(registration);
        config.span = span;
        // Under hyper-util's `TokioIo<TcpStream>` the TCP stream is used
        // directly, with the bytes hyper read past the request (frames the
        // client sent along with its handshake).
        let socket = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => WebSocket::new(
                Transport::tcp(parts.io.into_inner()),
                &parts.read_buf,
                config,
                finished,
            ),
            Err(upgraded) => WebSocket::new(
                Transport::new(TokioIo::new(upgraded)),
                &[],
                config,
                finished,
            ),
        };
        Ok(socket)
    }
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("subprotocols", &self.inner.handshake.subprotocols)
            .field("extensions", &self.inner.handshake.extensions)
            .finish_non_exhaustive()
    }
}
