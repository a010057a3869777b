//! The values a [`WebSocket`](crate::WebSocket) sends and receives.

use std::fmt;

use bytes::Bytes;

use super::utf8_bytes::Utf8Bytes;
use crate::error::Error;
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

/// The result of [`WebSocket::receive_buffer`](crate::WebSocket::receive_buffer) (ASP.NET
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
    pub reason: Utf8Bytes,
}

/// A whole message: what [`WebSocket::recv`](crate::WebSocket::recv), the
/// `Stream` and [`WebSocket::receive_message`](crate::WebSocket::receive_message)
/// return, and what [`WebSocket::send`](crate::WebSocket::send), the `Sink`
/// and [`WebSocket::try_send`](crate::WebSocket::try_send) take. The same
/// shape as axum's and tungstenite's `Message`.
///
/// Pings are answered by the socket by itself, whoever receives; they are
/// also handed to the application ([`Message::Ping`]), as are pongs, so a
/// server can see that a client is alive. Sending a [`Message::Ping`]
/// sends a ping; its answer arrives as a [`Message::Pong`]. The buffer API
/// ([`WebSocket::receive_buffer`](crate::WebSocket::receive_buffer), the
/// ASP.NET one) never shows them.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping: received (already answered), or to send. At most 125
    /// bytes.
    Ping(Bytes),
    /// A pong: the answer to our ping (the keep-alive timer's included),
    /// or an unsolicited one to send. At most 125 bytes.
    Pong(Bytes),
    /// The peer's Close frame (`None`: no status code), when received;
    /// when sent, this side's Close frame, like
    /// [`WebSocket::close_output`](crate::WebSocket::close_output).
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// Whether this is a [`Message::Text`].
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// Whether this is a [`Message::Binary`].
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }

    /// Whether this is a [`Message::Ping`].
    pub fn is_ping(&self) -> bool {
        matches!(self, Message::Ping(_))
    }

    /// Whether this is a [`Message::Pong`].
    pub fn is_pong(&self) -> bool {
        matches!(self, Message::Pong(_))
    }

    /// Whether this is a [`Message::Close`].
    pub fn is_close(&self) -> bool {
        matches!(self, Message::Close(_))
    }

    /// The payload bytes (a Close's reason).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data,
            Message::Close(Some(frame)) => frame.reason.as_bytes(),
            Message::Close(None) => &[],
        }
    }

    /// The payload (a Close's reason), as [`Bytes`], without a copy.
    pub fn into_data(self) -> Bytes {
        match self {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data,
            Message::Close(Some(frame)) => frame.reason.into_bytes(),
            Message::Close(None) => Bytes::new(),
        }
    }

    /// The text of a text message (a Close's reason), or of a binary or
    /// control payload that is UTF-8.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the payload is not UTF-8.
    pub fn into_text(self) -> Result<Utf8Bytes, Error> {
        match self {
            Message::Text(text) => Ok(text),
            Message::Close(Some(frame)) => Ok(frame.reason),
            Message::Close(None) => Ok(Utf8Bytes::default()),
            Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => {
                Utf8Bytes::try_from(data)
                    .map_err(|_| Error::InvalidArgument("payload is not UTF-8"))
            }
        }
    }

    /// The text, borrowed: as [`into_text`](Self::into_text).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the payload is not UTF-8.
    pub fn to_text(&self) -> Result<&str, Error> {
        std::str::from_utf8(self.as_bytes())
            .map_err(|_| Error::InvalidArgument("payload is not UTF-8"))
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let bytes = |f: &mut fmt::Formatter<'_>, name: &str, data: &[u8]| {
            if data.len() > SHOWN {
                write!(f, "{name}({:?}.. {} bytes)", &data[..SHOWN], data.len())
            } else {
                write!(f, "{name}({data:?})")
            }
        };
        match self {
            Message::Text(text) if text.len() > SHOWN => {
                let mut end = SHOWN;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                write!(f, "Text({:?}.. {} bytes)", &text[..end], text.len())
            }
            Message::Text(text) => write!(f, "Text({:?})", text.as_str()),
            Message::Binary(data) => bytes(f, "Binary", data),
            Message::Ping(data) => bytes(f, "Ping", data),
            Message::Pong(data) => bytes(f, "Pong", data),
            Message::Close(frame) => write!(f, "Close({frame:?})"),
        }
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Message::Text(text)
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text.into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.into())
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
