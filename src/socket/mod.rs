//! The [`WebSocket`] over an upgraded connection, and its halves.
//!
//! [`core`] holds the connection state behind one short-lived lock and the
//! poll functions that drive the protocol engine against the I/O;
//! [`websocket`] is the public surface; [`message`] the values it trades.

mod core;
mod handle;
mod message;
mod read_buffer;
mod spare;
mod transport;
mod websocket;

pub use handle::WebSocketHandle;
pub use message::{CloseFrame, Message, MessageType, ReceiveResult, WebSocketState};
pub(crate) use transport::Transport;
pub(crate) use websocket::SocketConfig;
pub use websocket::{WebSocket, WebSocketReader, WebSocketWriter};
