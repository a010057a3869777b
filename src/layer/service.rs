use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tokio::sync::{oneshot, watch};
use tower_service::Service;

use super::live::{Live, Refusal};
use super::{DrainHandle, ResponseBody, ResponseFuture, WebSocketLayer};
use crate::handshake;
use crate::options::{OptionsError, WebSocketOptions};
use crate::socket::PipelineLink;
use crate::stats::{Rejection, WebSocketStats};
use crate::upgrade::{Pending, WebSocketUpgrade};

/// The service [`WebSocketLayer`] wraps around an inner service.
///
/// Every request goes through it. A WebSocket request is an HTTP/1.1
/// `GET` upgrade (RFC 6455) or an HTTP/2 extended `CONNECT` with
/// `:protocol = websocket` (RFC 8441; hyper's HTTP/2 builder needs
/// `enable_connect_protocol()`). Requests that are not valid WebSocket
/// requests pass straight to the inner service with no other work than
/// the header checks. A valid one from a disallowed `Origin` gets a bare
/// `403` without reaching the inner service, and one over
/// [`WebSocketOptions::max_sockets`] a bare `503`; any other gets a
/// [`WebSocketUpgrade`] in its extensions before the inner service is
/// called.
///
/// The inner service's future must be `Send + 'static`, because after an
/// accept it is moved onto a task of its own (on the current tokio
/// runtime) and kept until the socket is finished. Its response body can
/// be any type: responses come out as
/// [`ResponseBody`](super::ResponseBody)`<B>`, the inner body or the empty
/// one of the layer's own responses.
#[derive(Clone, Debug)]
pub struct WebSocketService<S> {
    inner: S,
    options: Arc<WebSocketOptions>,
    live: Arc<Live>,
}

impl<S> WebSocketService<S> {
    /// Wraps `inner`, validating the options.
    ///
    /// # Errors
    ///
    /// As [`WebSocketLayer::new`].
    pub fn new(inner: S, options: WebSocketOptions) -> Result<Self, OptionsError> {
        Ok(WebSocketService {
            inner,
            options: Arc::new(options.validate()?),
            live: Arc::default(),
        })
    }

    pub(crate) fn from_parts(inner: S, options: Arc<WebSocketOptions>, live: Arc<Live>) -> Self {
        WebSocketService {
            inner,
            options,
            live,
        }
    }

    /// The sockets this service and its clones have live (see
    /// [`WebSocketLayer::live_sockets`]).
    pub fn live_sockets(&self) -> usize {
        self.live.count()
    }

    /// The drain handle of the layer this service came from (see
    /// [`WebSocketLayer::drain_handle`]).
    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle::new(self.live.clone())
    }

    /// A snapshot of the counters of the layer this service came from (see
    /// [`WebSocketLayer::stats`]).
    pub fn stats(&self) -> WebSocketStats {
        self.live.stats()
    }

    /// A [`WebSocketLayer`] with these options.
    ///
    /// # Errors
    ///
    /// As [`WebSocketLayer::new`].
    pub fn layer(options: WebSocketOptions) -> Result<WebSocketLayer, OptionsError> {
        WebSocketLayer::new(options)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WebSocketService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Ok(handshake) = handshake::detect(&req) else {
            return ResponseFuture::pass_through(self.inner.call(req));
        };
        if !self.options.origin_allowed(req.headers()) {
            tracing::debug!(
                origin = ?req.headers().get_all(header::ORIGIN).iter().collect::<Vec<_>>(),
                path = req.uri().path(),
                "websocket request rejected (403): origin not allowed"
            );
            self.live.counters.rejected(Rejection::Origin);
            return ResponseFuture::rejected(StatusCode::FORBIDDEN, None);
        }
        let slot = match self.live.try_take(self.options.max_sockets) {
            Ok(slot) => slot,
            Err(Refusal::Capacity) => {
                tracing::debug!(
                    max_sockets = self.options.max_sockets,
                    path = req.uri().path(),
                    "websocket request rejected (503): at the socket cap"
                );
                self.live.counters.rejected(Rejection::Capacity);
                return ResponseFuture::rejected(StatusCode::SERVICE_UNAVAILABLE, None);
            }
            Err(Refusal::Draining(retry_after)) => {
                tracing::debug!(
                    path = req.uri().path(),
                    "websocket request rejected (503): draining"
                );
                self.live.counters.rejected(Rejection::Draining);
                return ResponseFuture::rejected(StatusCode::SERVICE_UNAVAILABLE, retry_after);
            }
        };
        if req.extensions().get::<OnUpgrade>().is_none() {
            // Not served by hyper (or a request built by hand): there is no
            // connection to take over, so it cannot be a WebSocket here.
            tracing::warn!("websocket request without hyper's upgrade extension; passed through");
            return ResponseFuture::pass_through(self.inner.call(req));
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (respond, accepted) = oneshot::channel();
        let (finished, finished_rx) = watch::channel(false);
        let pipeline = Arc::new(PipelineLink::default());
        // One span per socket, from the request to the socket's end; its
        // fields are recorded only when the level is enabled.
        let span = tracing::debug_span!(
            "websocket",
            path = req.uri().path(),
            version = ?req.version(),
            subprotocol = tracing::field::Empty,
            extensions = tracing::field::Empty,
        );
        let upgrade = WebSocketUpgrade::new(
            handshake,
            self.options.clone(),
            Pending {
                on_upgrade,
                respond,
                finished,
                pipeline: pipeline.clone(),
                registration: slot.registration(),
                span,
            },
        );
        req.extensions_mut().insert(upgrade);
        ResponseFuture::upgrading(self.inner.call(req), accepted, finished_rx, pipeline, slot)
    }
}
