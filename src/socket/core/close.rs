//! Ending a connection: the close handshake's I/O side (handing the
//! connection to a short linger task that writes our Close and drains the
//! peer), aborts, protocol failures and the last handle going away.

use std::io::{self};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::error::Error;
use crate::protocol::{CloseCode, Output, ProtocolError};
use crate::socket::message::{MessageType, ReceiveResult, WebSocketState};
use crate::socket::read_buffer::ReadBuffer;
use crate::stats::Outcome;

/// The reason sent with the 1011 that closes a socket the application left
/// open.
const LEFT_OPEN_REASON: &str = "server handler ended";

impl Core {
    /// Drops the connection at once: no Close frame.
    pub(crate) fn abort(&mut self) {
        self.io = None;
        self.conn.abort();
        self.rbuf = ReadBuffer::default();
        self.message = BytesMut::new();
        self.note_state();
    }

    /// Aborts with `error`, remembered for later calls.
    pub(super) fn abort_with(&mut self, error: Error) -> Error {
        let replay = error.replay();
        self.terminal = Some(replay);
        self.abort();
        error
    }

    /// Fails the connection for a protocol violation (RFC 6455 §7.1.7):
    /// send a Close frame with the violation's code, close the connection.
    pub(super) fn fail(&mut self, violation: ProtocolError) -> Error {
        tracing::debug!(
            parent: &self.span,
            %violation,
            code = violation.close_code().as_u16(),
            "websocket protocol error: failing the connection"
        );
        if let Some(out) = self.conn.fail(violation) {
            self.linger_with(out);
        }
        self.abort_with(Error::Protocol(violation))
    }

    /// Hands the connection to a short-lived task that writes what is
    /// queued (ending with our Close frame), shuts down our direction and
    /// reads until the peer closes, all within the close timeout. Closing
    /// with unread input would make the kernel reset the connection, and
    /// a reset can destroy our Close frame in the peer's receive buffer.
    pub(super) fn linger(&mut self) {
        let out = self.conn.take_output();
        self.linger_with(out);
    }

    /// [`linger`](Self::linger), writing `out` first.
    pub(super) fn linger_with(&mut self, out: Output) {
        let Some(mut io) = self.io.take() else {
            return;
        };
        let timeout = self.close_timeout;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Counted now, before the socket ends and its count is retired.
        self.conn.traffic().wrote(out.len());
        runtime.spawn(async move {
            let linger = async {
                for piece in out.pieces() {
                    io.write_all(piece).await?;
                }
                io.flush().await?;
                io.shutdown().await?;
                let mut scratch = [0u8; 512];
                while io.read(&mut scratch).await? != 0 {}
                Ok::<_, io::Error>(())
            };
            let _ = tokio::time::timeout(timeout, linger).await;
        });
    }

    /// The last handle is gone.
    pub(super) fn on_drop(&mut self) {
        self.leave();
        // The background task ends when it finds the socket gone.
        self.flush_notify.notify();
    }

    /// The application is gone from the socket (its last handle dropped,
    /// or its request pipeline completed without it): a received Close is
    /// answered with its own code; an open socket is closed with 1011
    /// ([`CloseCode::INTERNAL_ERROR`]), after the output that sends which
    /// completed left queued; the connection goes to the linger task and
    /// the socket ends. A half-written frame cannot be followed by a Close:
    /// then the connection is dropped as it is.
    pub(crate) fn leave(&mut self) {
        if !self.conn.frame_in_progress() {
            match self.state() {
                WebSocketState::CloseReceived => {
                    // Answer the peer's Close (RFC 6455 §5.5.1).
                    let _ = self.conn.start_close(self.conn.close_status(), "");
                    self.linger();
                    self.note_state();
                }
                WebSocketState::Open => {
                    self.ending = Some(Outcome::LeftOpen);
                    let _ = self
                        .conn
                        .start_close(Some(CloseCode::INTERNAL_ERROR), LEFT_OPEN_REASON);
                    self.linger();
                }
                WebSocketState::CloseSent | WebSocketState::Closed => self.linger(),
                WebSocketState::Aborted => {}
            }
        }
        self.abort();
    }

    /// Queues this side's Close frame. Returns `false` if one was already
    /// sent.
    pub(crate) fn start_close(
        &mut self,
        status: Option<CloseCode>,
        reason: &str,
    ) -> Result<bool, Error> {
        let was_open = self.state() == WebSocketState::Open;
        match self.conn.start_close(status, reason) {
            Ok(queued) => {
                if was_open {
                    // Our Close starts the handshake: the background task
                    // reads the answer if the application is not receiving,
                    // within the close timeout.
                    self.flush_notify.notify();
                }
                self.note_state();
                Ok(queued)
            }
            Err(_) => Err(self.finished_error()),
        }
    }

    /// The close timeout, for [`WebSocket::close_with`](crate::WebSocket::close_with).
    pub(crate) fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// The peer did not answer our Close in time.
    pub(crate) fn close_timed_out(&mut self) -> Error {
        tracing::debug!(
            parent: &self.span,
            timeout = ?self.close_timeout,
            "websocket close timeout: the peer did not answer our close"
        );
        self.abort_with(Error::CloseTimeout)
    }

    /// The peer's Close frame arrived. If ours was sent, the handshake is
    /// complete, and the server closes the TCP connection first (RFC 6455
    /// §7.1.1).
    pub(super) fn on_close(
        &mut self,
        status: Option<CloseCode>,
        description: Option<String>,
    ) -> ReceiveResult {
        if self.state() == WebSocketState::Closed {
            self.linger();
        }
        self.note_state();
        ReceiveResult {
            count: 0,
            message_type: MessageType::Close,
            end_of_message: true,
            close_status: status,
            close_description: description,
        }
    }
}
