//! [`PreparedMessage`]: one message framed once and sent to many sockets.

use std::fmt;

use crate::protocol::SharedFrames;

/// A text or binary message framed once, to send to any number of sockets
/// without a copy per socket: what gorilla/websocket calls a
/// `PreparedMessage`, for broadcasts to a room.
///
/// Making one copies the payload once, behind its frame header, into one
/// buffer; every socket that sends it queues a reference to that buffer
/// (no copy, no allocation, no framing per socket) and writes it with its
/// other output in one vectored write. With permessage-deflate, sockets
/// that negotiated no context takeover share one compressed frame per
/// compression setting (level and window), built the first time a socket
/// with that setting sends the message; a socket with context takeover
/// compresses the payload itself, with its own window, as for any
/// message. Messages under the compression threshold go uncompressed, as
/// always.
///
/// It is `Send + Sync` and is sent by reference; share it between tasks
/// with an `Arc`. Sending it from a [`WebSocketHandle`] never waits:
/// [`try_send_prepared`](crate::WebSocketHandle::try_send_prepared) queues it,
/// or reports the socket's queue full, so one slow subscriber never
/// stalls a room.
///
/// ```no_run
/// use tower_websockets::{CloseCode, PreparedMessage, TrySendError, WebSocketHandle};
///
/// fn broadcast(room: &[WebSocketHandle], text: &str) {
///     let message = PreparedMessage::text(text);
///     for member in room {
///         match member.try_send_prepared(&message) {
///             Ok(()) => {}
///             // 64 KiB (by default) still wait for this member: too slow.
///             Err(TrySendError::Full(())) => {
///                 let member = member.clone();
///                 tokio::spawn(async move {
///                     let _ = member.close(CloseCode::TRY_AGAIN_LATER, "too slow").await;
///                 });
///             }
///             Err(TrySendError::Failed(_)) => {} // closed or gone
///         }
///     }
/// }
/// ```
///
/// [`WebSocketHandle`]: crate::WebSocketHandle
pub struct PreparedMessage {
    pub(crate) frames: SharedFrames,
}

impl PreparedMessage {
    /// A text message.
    pub fn text(text: impl AsRef<str>) -> PreparedMessage {
        PreparedMessage {
            frames: SharedFrames::new(text.as_ref().as_bytes(), true),
        }
    }

    /// A binary message.
    pub fn binary(data: impl AsRef<[u8]>) -> PreparedMessage {
        PreparedMessage {
            frames: SharedFrames::new(data.as_ref(), false),
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.frames.is_text()
    }

    /// The payload, uncompressed.
    pub fn as_bytes(&self) -> &[u8] {
        self.frames.payload()
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.frames.payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedMessage")
            .field("text", &self.is_text())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}
