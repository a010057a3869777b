//! The values a [`WebSocket`](crate::WebSocket) sends and receives.

use std::fmt;

use bytes::Bytes;

use crate::protocol::CloseCode;

/// The type of a message, or of the frame a receive returned (ASP.NET
/// `WebSocketMessageType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// The peer's Close frame: a receive returns it once, with the close
    /// status in [`ReceiveResult::close_status`].
    Close,
}

/// The result of [`WebSocket::receive`](crate::WebSocket::receive) (ASP.NET
/// `WebSocketReceiveResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveResult {
    pub(crate) count: usize,
    pub(crate) message_type: MessageType,
    pub(crate) end_of_message: bool,
    pub(crate) close_status: Option<CloseCode>,
    pub(crate) close_description: Option<String>,
}

impl ReceiveResult {
    /// How many bytes were written to the start of the caller's buffer.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The type of the message these bytes belong to, or
    /// [`MessageType::Close`].
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// Whether these bytes end the message. Sending them on with the same
    /// flag preserves the message's boundaries.
    pub fn end_of_message(&self) -> bool {
        self.end_of_message
    }

    /// For [`MessageType::Close`]: the peer's close code, or `None` if its
    /// Close frame carried no code (1005, "no status received").
    pub fn close_status(&self) -> Option<CloseCode> {
        self.close_status
    }

    /// For [`MessageType::Close`]: the peer's close reason.
    pub fn close_description(&self) -> Option<&str> {
        self.close_description.as_deref()
    }
}

/// A Close frame's code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes of UTF-8 on the wire (longer reasons
    /// are truncated on a character boundary when sent).
    pub reason: String,
}

/// A whole message, for [`WebSocket::receive_message`](crate::WebSocket::receive_message),
/// [`WebSocket::send_message`](crate::WebSocket::send_message) and the
/// `Stream` / `Sink` implementations.
///
/// Pings and pongs are handled by the socket and never surface here.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// The peer's Close frame (`None`: no status code), when received;
    /// when sent, this side's Close frame, like
    /// [`WebSocket::close_output`](crate::WebSocket::close_output).
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Text(_) => MessageType::Text,
            Message::Binary(_) => MessageType::Binary,
            Message::Close(_) => MessageType::Close,
        }
    }

    /// The payload bytes (empty for Close).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
            Message::Close(_) => &[],
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        match self {
            Message::Text(text) if text.len() > SHOWN => {
                let mut end = SHOWN;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                write!(f, "Text({:?}.. {} bytes)", &text[..end], text.len())
            }
            Message::Text(text) => write!(f, "Text({text:?})"),
            Message::Binary(data) if data.len() > SHOWN => {
                write!(f, "Binary({:?}.. {} bytes)", &data[..SHOWN], data.len())
            }
            Message::Binary(data) => write!(f, "Binary({:?})", &data[..]),
            Message::Close(frame) => write!(f, "Close({frame:?})"),
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.to_owned())
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Message::Binary(data)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message::Binary(data.into())
    }
}

pub use crate::protocol::WebSocketState;
