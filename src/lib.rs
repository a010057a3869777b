//! Server-side WebSockets for any hyper 1.x / tower 0.5 stack, modelled on
//! ASP.NET Core's WebSockets middleware, with its own RFC 6455 engine.
//!
//! Add [`WebSocketLayer`] to the stack (`UseWebSockets`), find the
//! [`WebSocketUpgrade`] in a request (`IsWebSocketRequest`),
//! [`accept`](WebSocketUpgrade::accept) it (`AcceptWebSocketAsync`), and
//! [`recv`](WebSocket::recv) and [`send`](WebSocket::send) [`Message`]s on
//! the [`WebSocket`], as with axum's (or use the ASP.NET buffer calls,
//! [`receive_buffer`](WebSocket::receive_buffer) and
//! [`send_buffer`](WebSocket::send_buffer)). The request pipeline inside
//! the layer stays alive until the socket is finished.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use hyper_util::service::TowerToHyperService;
//! use tower::ServiceBuilder;
//! use tower_websockets::{WebSocketLayer, WebSocketOptions, WebSocketUpgrade};
//!
//! async fn handler(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
//!         let mut response = Response::new(Full::from("not a websocket request"));
//!         *response.status_mut() = StatusCode::BAD_REQUEST;
//!         return Ok(response);
//!     };
//!     drop(req); // its headers share hyper's read buffer: free it for the socket's life
//!     let Ok(mut socket) = upgrade.accept().await else {
//!         return Ok(Response::default());
//!     };
//!     // Echo text and binary; pings are answered by the socket itself.
//!     while let Some(Ok(message)) = socket.recv().await {
//!         if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
//!             break;
//!         }
//!     }
//!     Ok(Response::default()) // discarded: the 101 was already sent
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = WebSocketLayer::new(WebSocketOptions::default())?;
//! let service = ServiceBuilder::new().layer(layer).service_fn(handler);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let server = tokio::spawn(async move {
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let service = TowerToHyperService::new(service.clone());
//!     tokio::spawn(async move {
//!         // Upgrades must be enabled for WebSockets.
//!         let _ = auto::Builder::new(TokioExecutor::new())
//!             .serve_connection_with_upgrades(TokioIo::new(tcp), service)
//!             .await;
//!     });
//! }
//! # #[allow(unreachable_code)] Ok::<(), std::io::Error>(())
//! # });
//! # use futures_util::{SinkExt, StreamExt};
//! # let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
//! # client.send(tokio_tungstenite::tungstenite::Message::text("hello")).await?;
//! # let echoed = client.next().await.unwrap()?;
//! # assert_eq!(echoed.into_text()?.as_str(), "hello");
//! # server.abort();
//! # Ok(())
//! # }
//! ```
//!
//! # The parts
//!
//! | ASP.NET Core | here |
//! | --- | --- |
//! | `app.UseWebSockets(options)` | [`WebSocketLayer::new`] |
//! | `WebSocketOptions` | [`WebSocketOptions`] |
//! | `HttpContext.WebSockets.IsWebSocketRequest` | [`WebSocketUpgrade::from_request`] / [`WebSocketUpgrade::is_websocket_request`] |
//! | `AcceptWebSocketAsync(context)` | [`WebSocketUpgrade::accept_with`]\([`AcceptOptions`]) |
//! | `WebSocket` | [`WebSocket`] |
//! | `ReceiveAsync(buffer)` / `SendAsync(buffer, type, endOfMessage)` | [`WebSocket::receive_buffer`] / [`WebSocket::send_buffer`] (whole messages: [`WebSocket::recv`] / [`WebSocket::send`]) |
//! | `CloseAsync` / `CloseOutputAsync` | [`WebSocket::close_with`] / [`WebSocket::close_output`] |
//! | `WebSocketReceiveResult` | [`ReceiveResult`] |
//! | `WebSocketState`, `WebSocketCloseStatus` | [`WebSocketState`], [`CloseCode`] |
//! | the `TaskCompletionSource` pattern | [`WebSocket::finished`] |
//! | `CloseOutputAsync` / `Abort` from another thread | [`WebSocketHandle`] ([`WebSocket::handle`]) |
//! | graceful shutdown (no ASP.NET analog) | [`DrainHandle`] ([`WebSocketLayer::drain_handle`]) |
//! | counters (ASP.NET's event counters) | [`WebSocketStats`] ([`WebSocketLayer::stats`]) |
//!
//! See [`layer`] for where to place the layer in a stack, what outer and
//! inner layers see, the socket cap, draining and the counters, and
//! [`WebSocket`] for the close handshake.
//!
//! Each socket has a `websocket` [`tracing`](https://docs.rs/tracing)
//! span (path, HTTP version, subprotocol, extensions); at `debug` the
//! crate reports when a socket finishes (outcome, code, reason, who closed
//! first, duration, traffic), protocol errors, keep-alive and close
//! timeouts, and rejected handshakes. Nothing is formatted when the level
//! is off.
//!
//! # Limits and deadlines
//!
//! Every buffer a peer can make a socket fill has a bound in bytes, and
//! every wait on a peer has a deadline. Per socket, with the defaults of
//! [`WebSocketOptions`]:
//!
//! | what the peer fills | bound |
//! | --- | --- |
//! | one frame | [`max_frame_size`](WebSocketOptions::max_frame_size), 16 MiB, refused (1009) from its header |
//! | a whole message ([`WebSocket::receive_message`], the `Stream`) | [`max_message_size`](WebSocketOptions::max_message_size), 64 MiB, refused (1009) from the header that passes it; the buffer API ([`WebSocket::receive_buffer`]) assembles nothing |
//! | a compressed message ([`permessage_deflate`](WebSocketOptions::permessage_deflate)) | the same limit on its inflated size, checked while inflating (1009 having inflated at most one byte past it); its compressed input waits in at most one read's worth (64 KiB) |
//! | the read buffer | [`receive_buffer_size`](WebSocketOptions::receive_buffer_size) (4 KiB), doubling while reads fill it, to 64 KiB (or the receive buffer size, if larger); none while idle. Input the application has not received: at most 1 MiB more, read by the keep-alive check |
//! | control frames to send | one pong (the latest ping's answer, RFC 6455 §5.5.3), one keep-alive ping, our Close: 3 × 127 bytes |
//! | the send queue ([`WebSocket::buffered_amount`]): sends, coalesced replies, the `Sink` | [`max_buffered_amount`](WebSocketOptions::max_buffered_amount), 64 KiB, or one message larger than it; sends wait past it, [`WebSocket::try_send`] fails, and the socket stops reading until the peer has read it; also at most 1,024 queued [prepared](PreparedMessage) frames, whatever their size (each costs a few dozen bytes of queue) |
//! | HTTP/2 | hyper's flow-control windows: 1 MiB received per connection, 400 KiB sent per stream (hyper's defaults) |
//!
//! | what waits on the peer | deadline |
//! | --- | --- |
//! | the close handshake, and a failing socket's Close | [`close_timeout`](WebSocketOptions::close_timeout), 10 s |
//! | a peer that vanished without closing (half-open), or stopped reading our output | [`keep_alive_interval`](WebSocketOptions::keep_alive_interval) + [`keep_alive_timeout`](WebSocketOptions::keep_alive_timeout): 30 s + 30 s |
//! | a send waiting at the bound | the same: the peer read none of it since a ping |
//! | a request pipeline that completed while it waited on its socket (a timeout inside the layer) | closed with 1011 at once (see [`layer`]) |
//! | sockets closing in a drain ([`DrainHandle::drain`]) | [`DrainOptions::deadline`], 10 s, then aborted |
//! | the opening handshake: first bytes, request headers | the server's, before this crate sees the request: give hyper a timer and a header-read timeout, and bound the first bytes, as the examples do (README, "Running in production") |
//!
//! # Requirements
//!
//! A tokio runtime (the inner pipeline of an accepted request and the
//! keep-alive timer run on tasks of their own), and a hyper connection
//! served with upgrades enabled: `http1::Builder::serve_connection(..)
//! .with_upgrades()` or hyper-util's `serve_connection_with_upgrades`.
//!
//! # HTTP/2
//!
//! WebSockets over HTTP/2 (RFC 8441) work with the same handler code: the
//! layer detects extended `CONNECT` with `:protocol = websocket`, and
//! accepting answers `200` and turns the stream into the socket. hyper
//! must advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`:
//! `hyper::server::conn::http2::Builder::enable_connect_protocol()`, or
//! with hyper-util's auto builder `builder.http2().enable_connect_protocol()`.
//! Browsers use WebSockets over HTTP/2 only on TLS connections that
//! negotiated `h2` by ALPN with that setting; over cleartext they use
//! HTTP/1.1.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod error;
mod extensions;
mod handshake;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;
pub mod layer;
mod options;
mod protocol;
mod socket;
mod stats;
mod upgrade;

pub use error::{Error, TrySendError};
pub use handshake::HandshakeRejection;
pub use layer::{
    DEFAULT_DRAIN_DEADLINE, DEFAULT_DRAIN_REASON, DrainHandle, DrainOptions, DrainReport,
    ResponseBody, ResponseFuture, WebSocketLayer, WebSocketService,
};
pub use options::{
    DEFAULT_CLOSE_TIMEOUT, DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_BUFFERED_AMOUNT, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE, DeflateOptions, OptionsError, WebSocketOptions,
};
pub use protocol::close::InvalidCloseCode;
pub use protocol::{CloseCode, ProtocolError};
pub use socket::{
    CloseFrame, Message, MessageType, PreparedMessage, ReceiveResult, ReuniteError, Utf8Bytes,
    WebSocket, WebSocketHandle, WebSocketReader, WebSocketState, WebSocketWriter,
};
pub use stats::{Closes, Rejections, TrafficStats, WebSocketStats};
pub use upgrade::{AcceptOptions, WebSocketUpgrade};

/// Close codes under axum's names (`axum::extract::ws::close_code`), so a
/// ported handler's `CloseFrame { code: close_code::NORMAL, .. }` compiles
/// unchanged; each is the [`CloseCode`] constant of the same code.
pub mod close_code {
    use crate::CloseCode;

    /// 1000, [`CloseCode::NORMAL`].
    pub const NORMAL: CloseCode = CloseCode::NORMAL;
    /// 1001, [`CloseCode::GOING_AWAY`].
    pub const AWAY: CloseCode = CloseCode::GOING_AWAY;
    /// 1002, [`CloseCode::PROTOCOL_ERROR`].
    pub const PROTOCOL: CloseCode = CloseCode::PROTOCOL_ERROR;
    /// 1003, [`CloseCode::UNSUPPORTED_DATA`].
    pub const UNSUPPORTED: CloseCode = CloseCode::UNSUPPORTED_DATA;
    /// 1007, [`CloseCode::INVALID_PAYLOAD`].
    pub const INVALID: CloseCode = CloseCode::INVALID_PAYLOAD;
    /// 1008, [`CloseCode::POLICY_VIOLATION`].
    pub const POLICY: CloseCode = CloseCode::POLICY_VIOLATION;
    /// 1009, [`CloseCode::MESSAGE_TOO_BIG`].
    pub const SIZE: CloseCode = CloseCode::MESSAGE_TOO_BIG;
    /// 1010, [`CloseCode::MANDATORY_EXTENSION`].
    pub const EXTENSION: CloseCode = CloseCode::MANDATORY_EXTENSION;
    /// 1011, [`CloseCode::INTERNAL_ERROR`].
    pub const ERROR: CloseCode = CloseCode::INTERNAL_ERROR;
    /// 1012, [`CloseCode::SERVICE_RESTART`].
    pub const RESTART: CloseCode = CloseCode::SERVICE_RESTART;
    /// 1013, [`CloseCode::TRY_AGAIN_LATER`].
    pub const AGAIN: CloseCode = CloseCode::TRY_AGAIN_LATER;
}

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
