//! [`WebSocketHandle`]: close, abort or watch a socket from another task.

use std::fmt;
use std::future::Future;
use std::sync::Weak;

use super::core::Shared;
use crate::error::Error;
use crate::protocol::CloseCode;

/// A handle to a [`WebSocket`](crate::WebSocket) for other tasks: close
/// it, abort it, or wait until it is finished, while its owner keeps
/// receiving and sending.
///
/// What ASP.NET allows from any thread (`CloseOutputAsync` while a
/// `ReceiveAsync` is pending, `Abort`), for the task that does not own the
/// socket: typically a server's graceful shutdown, which closes every open
/// socket with 1001 (going away) without putting anything in the sockets'
/// receive loops. A loop that handles the peer's Close (as the echo loop
/// does) then ends by itself.
///
/// Obtained from [`WebSocket::handle`](crate::WebSocket::handle) (or
/// either half's). Cheap to clone; it does not keep the socket alive: once
/// the owner drops the socket, the handle's operations do nothing.
///
/// ```no_run
/// # async fn f(socket: tower_websockets::WebSocket) {
/// use tower_websockets::CloseCode;
///
/// let handle = socket.handle();
/// tokio::spawn(async move {
///     // ... on shutdown:
///     let _ = handle.close(CloseCode::GOING_AWAY, "server is shutting down").await;
/// });
/// # }
/// ```
#[derive(Clone)]
pub struct WebSocketHandle {
    shared: Weak<Shared>,
}

impl WebSocketHandle {
    pub(crate) fn new(shared: Weak<Shared>) -> WebSocketHandle {
        WebSocketHandle { shared }
    }

    /// Closes the socket with the full handshake, from outside: sends our
    /// Close frame (unless one was sent already), then waits until the
    /// socket is finished, at most the
    /// [close timeout](crate::WebSocketOptions::close_timeout), and aborts
    /// it if it is not.
    ///
    /// The Close frame is written without this task touching the
    /// connection: a receive pending on the owner's task writes it, or the
    /// socket's background task does. The peer's answering Close is seen
    /// by the owner's pending receive (a [`MessageType::Close`] result, or
    /// [`Message::Close`]), which completes the handshake; while no
    /// receive is pending, the socket reads the answer itself (dropping
    /// data that arrives first), so the close completes within one round
    /// trip either way. The owner's sends fail with
    /// [`Error::SendAfterClose`] from the moment our Close is queued.
    ///
    /// Returns `Ok(())` at once if the socket was dropped or is already
    /// closed.
    ///
    /// [`MessageType::Close`]: crate::MessageType::Close
    /// [`Message::Close`]: crate::Message::Close
    ///
    /// # Errors
    ///
    /// [`Error::CloseTimeout`] if the socket was not finished in time (it
    /// is aborted); [`Error::Aborted`] (or the error that ended it) on a
    /// socket that was aborted.
    ///
    /// # Cancel safety
    ///
    /// Our Close frame is queued on the first poll; dropping the future
    /// after that only stops the wait (and the abort at its end).
    pub fn close<'a>(
        &'a self,
        status: impl Into<Option<CloseCode>>,
        description: &'a str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        let status = status.into();
        async move {
            // The strong reference is dropped before the wait: the owner
            // dropping the socket must still finish it.
            let (timeout, finished) = {
                let Some(shared) = self.shared.upgrade() else {
                    return Ok(());
                };
                (
                    shared.close_from_handle(status, description)?,
                    shared.finished(),
                )
            };
            if tokio::time::timeout(timeout, finished).await.is_ok() {
                return Ok(());
            }
            match self.shared.upgrade() {
                Some(shared) => Err(shared.close_timed_out()),
                None => Ok(()),
            }
        }
    }

    /// Drops the connection at once, without a close handshake, as
    /// [`WebSocket::abort`](crate::WebSocket::abort). The owner's pending
    /// and later operations fail with [`Error::Aborted`].
    pub fn abort(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.abort();
        }
    }

    /// A future that resolves when the socket is finished: closed, aborted
    /// or dropped (at once if it already is), as
    /// [`WebSocket::finished`](crate::WebSocket::finished).
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let finished = self.shared.upgrade().map(|shared| shared.finished());
        async move {
            if let Some(finished) = finished {
                finished.await;
            }
        }
    }
}

impl fmt::Debug for WebSocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketHandle")
            .field("dropped", &(self.shared.strong_count() == 0))
            .finish_non_exhaustive()
    }
}
