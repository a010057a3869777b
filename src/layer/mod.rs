//! The tower middleware: [`WebSocketLayer`], [`WebSocketService`] and its
//! [`ResponseFuture`].
//!
//! # Where to place the layer
//!
//! ```text
//!   request ──▶ ┌──────────────── outer layers (e.g. TraceLayer) ───────────────┐
//!               │ see the request and the handshake response (101) only       │
//!               │   ┌──────────────── WebSocketLayer ──────────────────────┐   │
//!               │   │ detects, checks Origin (403), adds WebSocketUpgrade  │   │
//!               │   │   ┌──────── inner layers (e.g. ConcurrencyLimit) ──┐  │   │
//!               │   │   │ their future is held until the socket is       │  │   │
//!               │   │   │ finished: a limit here counts live sockets     │  │   │
//!               │   │   │        handler: accept(), receive, send ...    │  │   │
//!               │   │   └────────────────────────────────────────────────┘  │   │
//!               │   └────────────────────────────────────────────────────────┘   │
//!               └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! When the handler accepts, the layer's future returns the handshake
//! response so hyper can send it, and moves the inner future to a task of
//! its own that polls it to completion and keeps it (unfinished or
//! finished, but not dropped) until the socket is closed, aborted or
//! dropped. Anything an inner layer keeps in its future, such as
//! `ConcurrencyLimit`'s permit or a span guard, lives exactly as long as
//! the socket. An inner layer that acts when its future *completes* sees
//! the handler return; handlers that want it to see the whole socket await
//! [`WebSocket::finished`](crate::WebSocket::finished) before returning.
//!
//! Layers *outside* `WebSocketLayer` only see the handshake: their
//! response future completes with the `101`.
//!
//! # A cap on live sockets
//!
//! [`WebSocketOptions::max_sockets`](crate::WebSocketOptions::max_sockets) caps the sockets one layer (and every
//! service made from it) has live: a WebSocket request counts from the
//! moment the layer sees it until its socket is finished, or until the
//! handler answers without accepting. A request over the cap is answered
//! `503 Service Unavailable` before the inner service runs; other requests
//! pass as usual. [`WebSocketLayer::live_sockets`] reads the count.
//!
//! tower's `ConcurrencyLimitLayer` *inside* the layer also counts live
//! sockets (its permit lives in the held future), but it queues: over its
//! limit the service is not ready, so hyper stops reading requests on that
//! connection, ordinary requests included, until a socket finishes, and a
//! client waits with no answer. The cap answers at once, so a client (or a
//! load balancer) can retry elsewhere.
//!
//! # Draining and counters
//!
//! [`WebSocketLayer::drain_handle`] returns the [`DrainHandle`] that
//! drains the layer's sockets for a graceful shutdown: upgrades answered
//! `503`, every open socket sent 1001 (going away), a wait bounded by a
//! deadline, the rest aborted. [`WebSocketLayer::stats`] reads the
//! layer's counters ([`WebSocketStats`](crate::WebSocketStats)): live
//! sockets, accepts, rejections by reason, closes by outcome, traffic.
//!
//! # Request timeouts
//!
//! Put a request timeout (tower's `Timeout`, tower-http's `TimeoutLayer`)
//! *outside* the layer: it then bounds the handshake, and the socket
//! outlives it. Inside, it completes the pipeline's future while the
//! handler in it is still running. A handler left waiting on its socket
//! would never be polled again, so the socket would stop answering with
//! its connection open; the layer notices (the socket's operations know
//! whether they wait inside the pipeline), closes the socket with 1011
//! ("server handler ended") and frees its connection, and drops the
//! completed future, with the guards it holds, once the socket is
//! finished. A socket the handler handed to another task before the
//! timeout is left alone.

mod body;
mod drain;
mod future;
#[expect(
    clippy::module_inception,
    reason = "tower-http's layout: layer.rs in layer/"
)]
mod layer;
pub(crate) mod live;
mod service;

pub use body::ResponseBody;
pub use drain::{
    DEFAULT_DRAIN_DEADLINE, DEFAULT_DRAIN_REASON, DrainHandle, DrainOptions, DrainReport,
};
pub use future::ResponseFuture;
pub use layer::WebSocketLayer;
pub use service::WebSocketService;
