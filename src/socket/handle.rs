//! [`WebSocketHandle`]: close, abort or watch a socket from another task.

use std::fmt;
use std::future::Future;
use std::sync::Weak;

use super::core::Shared;
use super::message::Message;
use super::prepared::PreparedMessage;
use super::websocket::{try_send_on, try_send_prepared_on};
use crate::error::{Error, TrySendError};
use crate::protocol::CloseCode;

/// A handle to a [`WebSocket`](crate::WebSocket) for other tasks: send to
/// it without waiting, close it, abort it, or wait until it is finished,
/// while its owner keeps receiving and sending.
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

    /// Queues a message on the socket without waiting, from any task:
    /// the broadcaster's send. The socket's background task writes it,
    /// with everything else queued by the time it runs, in one write; the
    /// owner's task keeps receiving meanwhile. A [`Message::Close`] starts
    /// the close as [`close`](Self::close) does, without the wait.
    ///
    /// A message never interrupts one the owner is sending: while the
    /// owner's task is in the middle of a fragmented message (or a large
    /// frame), the socket is reported full.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`], with the message, when it does not fit the
    /// send queue's bound
    /// ([`max_buffered_amount`](crate::WebSocketOptions::max_buffered_amount))
    /// even after what waits in the queue was written as far as the
    /// connection takes it now (so a burst to a peer that reads is not
    /// refused), or the owner is mid-message; [`TrySendError::Failed`] with the
    /// error a send would give, and [`Error::Aborted`] once the owner
    /// dropped the socket.
    pub fn try_send(&self, message: Message) -> Result<(), TrySendError> {
        match self.shared.upgrade() {
            Some(shared) => try_send_on(&shared, message, true),
            None => Err(TrySendError::Failed(Error::Aborted)),
        }
    }

    /// Queues a [`PreparedMessage`] on the socket without waiting, from
    /// any task, as [`try_send`](Self::try_send): its shared frame is
    /// queued by reference — no copy, allocation or framing per socket —
    /// and the background task writes it.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send), handing nothing back.
    pub fn try_send_prepared(&self, message: &PreparedMessage) -> Result<(), TrySendError<()>> {
        match self.shared.upgrade() {
            Some(shared) => try_send_prepared_on(&shared, message, true),
            None => Err(TrySendError::Failed(Error::Aborted)),
        }
    }

    /// Bytes queued on the socket but not yet handed to the connection,
    /// as [`WebSocket::buffered_amount`](crate::WebSocket::buffered_amount);
    /// 0 once the owner dropped the socket.
    pub fn buffered_amount(&self) -> usize {
        self.shared
            .upgrade()
            .map_or(0, |shared| shared.lock().buffered_amount())
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
