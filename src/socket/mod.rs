//! The [`WebSocket`] over an upgraded connection, and its halves.
//!
//! [`core`] moves bytes between the sans-IO protocol engine
//! ([`Connection`](crate::protocol::Connection)) and the I/O, behind one
//! short-lived lock, split by role; [`websocket`] is the public surface;
//! [`message`] the values it trades.

mod core;
mod handle;
mod message;
mod pipeline;
mod prepared;
mod read_buffer;
mod spare;
mod transport;
mod utf8_bytes;
mod websocket;

pub(crate) use core::Shared;
pub use handle::WebSocketHandle;
pub use message::{CloseFrame, Message, MessageType, ReceiveResult, WebSocketState};
pub(crate) use pipeline::PipelineLink;
pub use prepared::PreparedMessage;
pub(crate) use transport::Transport;
pub use utf8_bytes::Utf8Bytes;
pub(crate) use websocket::SocketConfig;
pub use websocket::{ReuniteError, WebSocket, WebSocketReader, WebSocketWriter};
