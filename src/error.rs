//! The socket's [`Error`].

use std::{fmt, io};

use crate::protocol::ProtocolError;
use crate::socket::Message;

/// Why a [`WebSocket`](crate::WebSocket) operation or an
/// [`accept`](crate::WebSocketUpgrade::accept) failed.
///
/// `Display` says what went wrong including its cause (the I/O error, the
/// protocol violation and the close code sent, hyper's upgrade error), so
/// `{err}` alone is a useful log line; the cause is also returned by
/// [`source`](std::error::Error::source), to downcast or walk.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading from or writing to the connection failed; the socket is
    /// aborted.
    Io(io::Error),
    /// The peer broke the protocol; the socket sent a Close frame with
    /// [`ProtocolError::close_code`] and is aborted.
    Protocol(ProtocolError),
    /// The peer closed the TCP connection without a close handshake; the
    /// socket is aborted.
    ConnectionReset,
    /// The socket was aborted (by [`abort`](crate::WebSocket::abort), an
    /// earlier error, or the close timeout) and can no longer be used.
    Aborted,
    /// The close handshake finished; nothing more can be received.
    Closed,
    /// A send after this side's Close frame was sent.
    SendAfterClose,
    /// Within the keep-alive timeout after a keep-alive ping, the peer
    /// sent nothing (not even a pong), or read none of the output waiting
    /// for it; the socket is aborted.
    KeepAliveTimeout,
    /// The peer did not answer our Close frame within the close timeout;
    /// the connection was dropped and the socket is aborted.
    CloseTimeout,
    /// A call that does not fit the socket's state or arguments, such as
    /// changing message type in the middle of a fragmented message or
    /// sending [`MessageType::Close`](crate::MessageType::Close) as data.
    InvalidArgument(&'static str),
    /// [`accept`](crate::WebSocketUpgrade::accept) was called on a handle
    /// whose request was already accepted.
    AlreadyAccepted,
    /// [`accept_with`](crate::WebSocketUpgrade::accept_with) chose a
    /// subprotocol the client did not offer.
    SubprotocolNotOffered,
    /// The HTTP connection ended before the handshake response was sent.
    HandshakeAborted,
    /// hyper could not hand over the upgraded connection.
    Upgrade(hyper::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "websocket i/o error: {e}"),
            Error::Protocol(e) => write!(
                f,
                "websocket protocol error: {e} (closed with {})",
                e.close_code().as_u16()
            ),
            Error::Upgrade(e) => write!(f, "connection upgrade failed: {e}"),
            Error::ConnectionReset => f.write_str("connection closed without a close handshake"),
            Error::Aborted => f.write_str("websocket was aborted"),
            Error::Closed => f.write_str("websocket is closed"),
            Error::SendAfterClose => f.write_str("cannot send after the close frame was sent"),
            Error::KeepAliveTimeout => f.write_str(
                "peer did not answer the keep-alive ping, or read none of our output, in time",
            ),
            Error::CloseTimeout => f.write_str("peer did not answer the close frame in time"),
            Error::InvalidArgument(message) => f.write_str(message),
            Error::AlreadyAccepted => f.write_str("websocket request was already accepted"),
            Error::SubprotocolNotOffered => {
                f.write_str("subprotocol was not offered by the client")
            }
            Error::HandshakeAborted => {
                f.write_str("connection ended before the handshake response was sent")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Upgrade(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl Error {
    /// A cheap copy for repeating a terminal error to later calls (I/O
    /// errors keep their kind, not their payload).
    pub(crate) fn replay(&self) -> Error {
        match self {
            Error::Io(e) => Error::Io(io::Error::from(e.kind())),
            Error::Protocol(e) => Error::Protocol(*e),
            Error::ConnectionReset => Error::ConnectionReset,
            Error::CloseTimeout => Error::CloseTimeout,
            Error::KeepAliveTimeout => Error::KeepAliveTimeout,
            Error::Closed => Error::Closed,
            _ => Error::Aborted,
        }
    }
}

/// Why [`try_send`](crate::WebSocket::try_send) (or
/// [`try_send_prepared`](crate::WebSocketHandle::try_send_prepared)) did
/// not take a message. `T` is what is handed back: the [`Message`] of a
/// `try_send`, nothing (`()`) for a prepared message, which the caller
/// still holds.
#[derive(Debug)]
pub enum TrySendError<T = Message> {
    /// The socket cannot take the message now: its send queue is at its
    /// bound
    /// ([`max_buffered_amount`](crate::WebSocketOptions::max_buffered_amount)),
    /// because the peer reads slower than the socket is sent to; or, for
    /// a send from a [`WebSocketHandle`](crate::WebSocketHandle), the
    /// socket's own task is in the middle of a fragmented or streamed
    /// message. The message is handed back, unsent.
    Full(T),
    /// The socket cannot send (it is closing, closed or aborted, or the
    /// connection failed); the message was dropped.
    Failed(Error),
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("websocket send queue is full"),
            TrySendError::Failed(_) => f.write_str("websocket cannot send"),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for TrySendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySendError::Full(_) => None,
            TrySendError::Failed(error) => Some(error),
        }
    }
}

impl<T> From<Error> for TrySendError<T> {
    fn from(error: Error) -> Self {
        TrySendError::Failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_the_cause() {
        let protocol = Error::Protocol(ProtocolError::InvalidUtf8);
        let text = protocol.to_string();
        assert!(text.starts_with("websocket protocol error: "), "{text}");
        assert!(
            text.contains(&ProtocolError::InvalidUtf8.to_string()),
            "{text}"
        );
        assert!(text.ends_with("(closed with 1007)"), "{text}");
        let io = Error::Io(io::Error::new(io::ErrorKind::BrokenPipe, "pipe gone"));
        assert_eq!(io.to_string(), "websocket i/o error: pipe gone");
        assert!(std::error::Error::source(&io).is_some());
    }
}
