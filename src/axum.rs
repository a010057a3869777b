//! axum integration (feature `axum`): [`WebSocketUpgrade`] is an extractor.
//!
//! Put [`WebSocketLayer`](crate::WebSocketLayer) around the routes that
//! accept WebSockets (one route, or the whole `Router`), and take the
//! upgrade in the handler as with axum's own `WebSocketUpgrade`:
//!
//! ```no_run
//! use axum::{Router, response::Response, routing::get};
//! use tower_websockets::{Message, WebSocketLayer, WebSocketUpgrade};
//!
//! async fn ws(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade.protocols(["chat"]).on_upgrade(|mut socket| async move {
//!         while let Some(Ok(message)) = socket.recv().await {
//!             if message.is_text() && socket.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! let app: Router = Router::new()
//!     .route("/ws", get(ws))
//!     .layer(WebSocketLayer::default());
//! # let _ = app;
//! ```
//!
//! Porting an axum handler means changing its imports (`axum::extract::ws`
//! → `tower_websockets`) and adding the layer: `recv`, `send`, `Message`
//! (with `Utf8Bytes` text), `CloseFrame`, `close_code`, `protocols` and
//! `on_upgrade` have axum's names and shapes. Unlike axum's, a handler may
//! also `accept().await` and keep the socket itself: the pipeline inside
//! the layer (and whatever inner layers hold) then lives exactly as long
//! as the socket.
//!
//! The extractor's rejections are axum's: `400` for a request that is not
//! a WebSocket handshake, `426` (with `Sec-WebSocket-Version: 13`) for a
//! wrong version, `405` for a wrong method, `500` naming the missing
//! layer for a valid handshake that no `WebSocketLayer` saw, and `500` for
//! a second extractor of the same upgrade.
//! `Option<WebSocketUpgrade>` is `None` for a request that is not a
//! WebSocket handshake.

use std::fmt;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::handshake::{self, HandshakeRejection};
use crate::upgrade::WebSocketUpgrade;

/// Why the [`WebSocketUpgrade`] extractor refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebSocketUpgradeRejection {
    /// Not a valid WebSocket handshake (RFC 6455 §4.2.1, RFC 8441): the
    /// reason, answered with its status (400, 405 or 426).
    Handshake(HandshakeRejection),
    /// A valid handshake that no [`WebSocketLayer`](crate::WebSocketLayer)
    /// saw: the layer is missing around this route (500).
    LayerMissing,
    /// The request's upgrade was already taken, by an earlier extractor
    /// of the same handler (500).
    AlreadyTaken,
}

/// Marks a request whose upgrade an extractor took.
#[derive(Clone, Copy, Debug)]
struct Taken;

impl fmt::Display for WebSocketUpgradeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebSocketUpgradeRejection::Handshake(rejection) => rejection.fmt(f),
            WebSocketUpgradeRejection::LayerMissing => f.write_str(
                "websocket request, but no WebSocketLayer around this route \
                 (add .layer(WebSocketLayer::default()))",
            ),
            WebSocketUpgradeRejection::AlreadyTaken => {
                f.write_str("the request's WebSocketUpgrade was already extracted")
            }
        }
    }
}

impl std::error::Error for WebSocketUpgradeRejection {}

impl IntoResponse for WebSocketUpgradeRejection {
    fn into_response(self) -> Response {
        let (mut response, message) = match self {
            WebSocketUpgradeRejection::Handshake(rejection) => (
                rejection.into_response::<axum_core::body::Body>(),
                self.to_string(),
            ),
            WebSocketUpgradeRejection::LayerMissing | WebSocketUpgradeRejection::AlreadyTaken => {
                let mut response = Response::new(axum_core::body::Body::empty());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                (response, self.to_string())
            }
        };
        *response.body_mut() = axum_core::body::Body::from(message);
        response
    }
}

/// Why a request without the layer's upgrade was refused.
fn rejection(parts: &Parts) -> WebSocketUpgradeRejection {
    if parts.extensions.get::<Taken>().is_some() {
        return WebSocketUpgradeRejection::AlreadyTaken;
    }
    match handshake::detect_parts(
        &parts.method,
        parts.version,
        &parts.headers,
        &parts.extensions,
    ) {
        Ok(_) => WebSocketUpgradeRejection::LayerMissing,
        Err(rejection) => WebSocketUpgradeRejection::Handshake(rejection),
    }
}

/// The layer's upgrade, marking the request as taken.
fn take(parts: &mut Parts) -> Option<WebSocketUpgrade> {
    let upgrade = parts.extensions.remove::<WebSocketUpgrade>()?;
    parts.extensions.insert(Taken);
    Some(upgrade)
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        take(parts).ok_or_else(|| rejection(parts))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = WebSocketUpgradeRejection;

    /// `None` for a request that is not a WebSocket handshake at all; a
    /// handshake the layer refused to hand over is still rejected.
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if let Some(upgrade) = take(parts) {
            return Ok(Some(upgrade));
        }
        match rejection(parts) {
            WebSocketUpgradeRejection::Handshake(HandshakeRejection::NotWebSocket) => Ok(None),
            other => Err(other),
        }
    }
}
