//! The write path: frames go from the engine's output queue (or, for a
//! large payload, straight from the caller's buffer, vectored behind its
//! header) to the transport; small replies are coalesced while more input
//! is buffered, and written when the input runs dry.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use super::*;
use crate::error::Error;
use crate::protocol::{MAX_SLICES, Output, Queued, SendRejected, SharedFrames, header_len};
use crate::socket::message::{MessageType, WebSocketState};

/// Payloads up to this size are copied behind their header and written
/// with it in one call; larger ones are written vectored from the caller's
/// buffer without a copy.
pub(super) const COPY_THRESHOLD: usize = 8 * 1024;

/// Small frames sent while more input is already buffered are queued, up
/// to this many bytes, and written together when the input runs dry.
pub(super) const COALESCE_LIMIT: usize = 64 * 1024;

impl Core {
    /// Writes all queued output and flushes.
    pub(super) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.conn.stage_control();
        while !self.conn.output().is_empty() {
            let Some(io) = self.io.as_mut() else {
                return Poll::Ready(Err(self.finished_error()));
            };
            let out = self.conn.output();
            let result = if out.is_contiguous() {
                Pin::new(&mut *io).poll_write(cx, out.contiguous())
            } else {
                // Shared frames of prepared messages: one vectored write.
                poll_write_vectored(io, cx, out, &[])
            };
            match result {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(
                        self.abort_with(Error::Io(io::ErrorKind::WriteZero.into()))
                    ));
                }
                // Control frames that waited behind the output are staged
                // once it is written.
                Poll::Ready(Ok(n)) => {
                    self.conn.written(n);
                    self.conn.traffic().wrote(n);
                    self.write_epoch = self.write_epoch.wrapping_add(1);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.abort_with(e.into()))),
                Poll::Pending => return Poll::Pending,
            }
        }
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(self.finished_error()));
        };
        self.deferred = false;
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.abort_with(e.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The background task's safety net: writes output a send deferred, if
    /// the application has not read (and so written it) since.
    pub(crate) fn poll_write_deferred(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.deferred || self.conn.frame_in_progress() || self.io.is_none() {
            return Poll::Ready(());
        }
        self.poll_write_out(cx).map(drop)
    }

    /// Writes queued output and control frames if nothing else is writing;
    /// never waits. Used by the reader so pongs and coalesced replies go out
    /// while it receives.
    #[inline]
    pub(super) fn try_write_control(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.conn.frame_in_progress() || !self.conn.has_output() {
            return Ok(());
        }
        match self.poll_write_out(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// One frame of a send. `progress` lives in the send future so that a
    /// cancelled send can be completed by [`Core::cancel_send`].
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        payload: &[u8],
        message_type: MessageType,
        end_of_message: bool,
        progress: &mut SendProgress,
    ) -> Poll<Result<(), Error>> {
        loop {
            match progress {
                SendProgress::NotStarted => {
                    if let Err(e) =
                        self.start_frame(payload, message_type, end_of_message, progress)
                    {
                        return Poll::Ready(Err(e));
                    }
                }
                SendProgress::Streaming { written } => {
                    let Some(io) = self.io.as_mut() else {
                        return Poll::Ready(Err(self.finished_error()));
                    };
                    while *written < payload.len() {
                        let rest = &payload[*written..];
                        let out = self.conn.output();
                        let result = if out.is_empty() {
                            Pin::new(&mut *io).poll_write(cx, rest)
                        } else {
                            poll_write_vectored(io, cx, out, rest)
                        };
                        match ready!(result) {
                            Ok(0) => {
                                return Poll::Ready(Err(
                                    self.abort_with(Error::Io(io::ErrorKind::WriteZero.into()))
                                ));
                            }
                            Ok(mut n) => {
                                self.write_epoch = self.write_epoch.wrapping_add(1);
                                self.conn.traffic().wrote(n);
                                let from_out = n.min(self.conn.queued());
                                if from_out > 0 {
                                    self.conn.written(from_out);
                                }
                                n -= from_out;
                                *written += n;
                            }
                            Err(e) => return Poll::Ready(Err(self.abort_with(e.into()))),
                        }
                    }
                    self.conn.end_streamed_frame();
                    *progress = SendProgress::Flushing;
                }
                SendProgress::Flushing => {
                    ready!(self.poll_sent(cx))?;
                    *progress = SendProgress::Done;
                    return Poll::Ready(Ok(()));
                }
                SendProgress::Done => return Poll::Ready(Ok(())),
            }
        }
    }

    /// The end of a send whose frame is queued: writes it, or leaves it
    /// queued when that is better or must be, and waits only while the
    /// queue is past its bound.
    #[inline]
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.may_defer() {
            // More input is already here: the application is about to
            // receive again, and the read that finds the input dry writes
            // all the replies in one go. The background task writes them
            // if it does not.
            self.defer_write();
        } else if let Poll::Ready(written) = self.poll_write_out(cx) {
            written?;
        } else if self.conn.buffered_amount() <= self.max_buffered && self.conn.has_chunk_room() {
            // The peer's window is full, but the queue is within its
            // bound: the send is done, and the background task writes the
            // rest when the peer reads.
            self.defer_write();
        } else {
            // Past the bound: wait until the peer reads.
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// A prepared message's send (see [`WebSocket::send_prepared`]): its
    /// shared frame is queued on the first poll, then written as any
    /// send's.
    ///
    /// [`WebSocket::send_prepared`]: crate::WebSocket::send_prepared
    pub(crate) fn poll_send_prepared(
        &mut self,
        cx: &mut Context<'_>,
        frames: &SharedFrames,
        progress: &mut SendProgress,
    ) -> Poll<Result<(), Error>> {
        if let SendProgress::NotStarted = progress {
            self.queue_prepared(frames, false)?;
            *progress = SendProgress::Flushing;
        }
        if let SendProgress::Flushing = progress {
            ready!(self.poll_sent(cx))?;
            *progress = SendProgress::Done;
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a prepared message's frame. From a handle (`from_handle`),
    /// an open fragmented or streamed message of the owner's is a busy
    /// socket (`Ok(false)`); from the owner, a misuse.
    fn queue_prepared(&mut self, frames: &SharedFrames, from_handle: bool) -> Result<bool, Error> {
        match self.conn.queue_prepared(frames) {
            Ok(()) => Ok(true),
            Err(SendRejected::Finished) => Err(self.finished_error()),
            Err(SendRejected::AfterClose) => Err(Error::SendAfterClose),
            Err(SendRejected::TypeChanged | SendRejected::NotNow) if from_handle => Ok(false),
            Err(SendRejected::TypeChanged | SendRejected::NotNow) => Err(Error::InvalidArgument(
                "a whole message cannot go in the middle of a fragmented message",
            )),
        }
    }

    /// Queues a prepared message without waiting: `Ok(false)` when it does
    /// not fit the send queue's bound (or, `from_handle`, the owner is in
    /// the middle of a message). The owner's call starts writing it at
    /// once, as [`try_queue_message`](Self::try_queue_message) does; a
    /// handle's leaves the write to the socket's background task, which
    /// writes everything queued by the time it runs in one vectored write:
    /// a broadcaster's messages to one socket go out together.
    pub(crate) fn try_queue_prepared(
        &mut self,
        cx: &mut Context<'_>,
        frames: &SharedFrames,
        from_handle: bool,
    ) -> Result<bool, Error> {
        let can_send = matches!(
            self.state(),
            WebSocketState::Open | WebSocketState::CloseReceived
        );
        if can_send && !self.make_room(cx, frames.frame_len(), true)? {
            return Ok(false);
        }
        if !self.queue_prepared(frames, from_handle)? {
            return Ok(false);
        }
        self.written_by(cx, from_handle)?;
        Ok(true)
    }

    /// Whether `len` more bytes (and, `chunk`, one more shared frame) fit
    /// the send queue, once what waits in it has been written as far as
    /// the connection takes it now: a queue full of output that no one
    /// tried to write yet (a handle's sends leave it to the background
    /// task) is not a slow peer. What stays queued is left to the
    /// background task.
    fn make_room(&mut self, cx: &mut Context<'_>, len: usize, chunk: bool) -> Result<bool, Error> {
        let fits = |core: &Self| core.has_room(len) && (!chunk || core.conn.has_chunk_room());
        if fits(self) {
            return Ok(true);
        }
        if self.conn.frame_in_progress() || self.io.is_none() {
            return Ok(false);
        }
        match self.poll_write_out(cx) {
            Poll::Ready(result) => result?,
            Poll::Pending if !self.deferred => self.defer_write(),
            Poll::Pending => {}
        }
        Ok(fits(self))
    }

    /// Leaves the queued output to the next read or the background task.
    fn defer_write(&mut self) {
        self.deferred = true;
        self.flush_notify.notify();
    }

    /// Whether `len` more bytes fit in the send queue: the queue is empty
    /// (a message larger than the bound still goes out), or stays within
    /// [`max_buffered`](Core::max_buffered) with them.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        let buffered = self.conn.buffered_amount();
        buffered == 0 || buffered.saturating_add(len) <= self.max_buffered
    }

    /// Queues a whole message without waiting: the `try_send` path. Fails
    /// with `Ok(false)` when it does not fit the send queue's bound, or
    /// (`from_handle`) when the owner is in the middle of a message. The
    /// owner's call starts writing it; a handle's leaves that to the
    /// background task (see [`try_queue_prepared`](Self::try_queue_prepared)).
    pub(crate) fn try_queue_message(
        &mut self,
        cx: &mut Context<'_>,
        payload: &[u8],
        message_type: MessageType,
        from_handle: bool,
    ) -> Result<bool, Error> {
        let can_send = matches!(
            self.state(),
            WebSocketState::Open | WebSocketState::CloseReceived
        );
        if from_handle && can_send && self.conn.mid_message() {
            return Ok(false);
        }
        // A socket that cannot send gives a send's error, full or not.
        let len = header_len(payload.len() as u64, false) + payload.len();
        if can_send && !self.make_room(cx, len, false)? {
            return Ok(false);
        }
        self.queue_message(payload, message_type)?;
        self.written_by(cx, from_handle)?;
        Ok(true)
    }

    /// After a message was queued without waiting: the owner's call
    /// starts writing it; a handle's leaves the write to the background
    /// task, once for everything queued until it runs.
    pub(crate) fn written_by(
        &mut self,
        cx: &mut Context<'_>,
        from_handle: bool,
    ) -> Result<(), Error> {
        if !from_handle {
            self.try_write_now(cx)
        } else {
            if !self.deferred {
                self.defer_write();
            }
            Ok(())
        }
    }

    /// Whether a streamed frame's payload is being written: nothing, not
    /// even a control frame, may go out before it ends.
    pub(crate) fn frame_in_progress(&self) -> bool {
        self.conn.frame_in_progress()
    }

    /// Writes what is queued as far as the transport takes it now; the
    /// background task writes the rest.
    pub(crate) fn try_write_now(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.conn.frame_in_progress() {
            return Ok(());
        }
        match self.poll_write_out(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                self.defer_write();
                Ok(())
            }
        }
    }

    /// Whether a completed send may leave its bytes queued (write
    /// coalescing): only while the application is about to receive again —
    /// unread input is buffered, or an incoming frame is still arriving —
    /// and the queue is small (and within the send bound: coalesced bytes
    /// are accepted but not written).
    pub(super) fn may_defer(&self) -> bool {
        (!self.rbuf.is_empty() || self.conn.remaining() > 0)
            && self.conn.queued() < COALESCE_LIMIT.min(self.max_buffered)
            && self.state() == WebSocketState::Open
    }

    /// Checks a send against the state, queues the frame header (and a
    /// small payload), and moves `progress` on.
    pub(super) fn start_frame(
        &mut self,
        payload: &[u8],
        message_type: MessageType,
        end_of_message: bool,
        progress: &mut SendProgress,
    ) -> Result<(), Error> {
        let text = match message_type {
            MessageType::Close => {
                return Err(Error::InvalidArgument(
                    "message type Close cannot be sent as data; use close or close_output",
                ));
            }
            MessageType::Text => true,
            MessageType::Binary => false,
        };
        let copy = payload.len() <= COPY_THRESHOLD;
        match self.conn.queue_data(payload, text, end_of_message, copy) {
            Ok(Queued::Whole) => *progress = SendProgress::Flushing,
            Ok(Queued::Header) => *progress = SendProgress::Streaming { written: 0 },
            Err(SendRejected::Finished) => return Err(self.finished_error()),
            Err(SendRejected::AfterClose) => return Err(Error::SendAfterClose),
            Err(SendRejected::TypeChanged | SendRejected::NotNow) => {
                return Err(Error::InvalidArgument(
                    "message type changed in the middle of a fragmented message",
                ));
            }
        }
        Ok(())
    }

    /// Queues the application's ping (`ping`) or pong, as a frame behind
    /// the output queued so far.
    pub(crate) fn queue_control(&mut self, ping: bool, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > 125 {
            return Err(Error::InvalidArgument(
                "a ping or pong payload is at most 125 bytes",
            ));
        }
        match self.conn.queue_app_control(ping, payload) {
            Ok(()) => Ok(()),
            Err(SendRejected::Finished) => Err(self.finished_error()),
            Err(SendRejected::AfterClose) => Err(Error::SendAfterClose),
            Err(SendRejected::TypeChanged | SendRejected::NotNow) => Err(Error::InvalidArgument(
                "a ping or pong cannot go in the middle of a frame being written",
            )),
        }
    }

    /// A send future was dropped: keep the stream whole by queuing the rest
    /// of a half-written frame, which the next write sends.
    pub(crate) fn cancel_send(&mut self, payload: &[u8], progress: &SendProgress) {
        if let SendProgress::Streaming { written } = progress {
            self.conn.queue_rest(&payload[*written..]);
        }
    }

    /// Queues a whole message into the output without writing (the
    /// `Sink::start_send` path).
    pub(crate) fn queue_message(
        &mut self,
        payload: &[u8],
        message_type: MessageType,
    ) -> Result<(), Error> {
        let mut progress = SendProgress::NotStarted;
        self.start_frame(payload, message_type, true, &mut progress)?;
        if let SendProgress::Streaming { .. } = progress {
            // Sink items are owned, so copy instead of streaming.
            self.conn.queue_rest(payload);
        }
        Ok(())
    }

    /// Bytes accepted but not yet handed to the transport: the queued
    /// output plus the control frames waiting to be staged.
    pub(crate) fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// Writes queued output (data, control frames, our Close) and
    /// flushes; once both Close frames are exchanged, hands the connection
    /// over to be closed.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.conn.frame_in_progress() {
            // A send is writing a large frame; it flushes when done.
            return Poll::Ready(Ok(()));
        }
        if self.io.is_none() {
            return Poll::Ready(match self.state() {
                WebSocketState::Closed => Ok(()),
                _ => Err(self.finished_error()),
            });
        }
        ready!(self.poll_write_out(cx))?;
        if self.state() == WebSocketState::Closed {
            self.linger();
        }
        Poll::Ready(Ok(()))
    }
}

/// One vectored write of `out`'s pieces, then `extra`: at most
/// [`MAX_SLICES`] of them, in a slice array no larger than needed (a
/// broadcast writes a few frames at a time, and setting up 64 slices for
/// each would cost more than queuing them).
fn poll_write_vectored(
    io: &mut Transport,
    cx: &mut Context<'_>,
    out: &Output,
    extra: &[u8],
) -> Poll<io::Result<usize>> {
    fn write<const N: usize>(
        io: &mut Transport,
        cx: &mut Context<'_>,
        out: &Output,
        extra: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); N];
        let n = out.slices(&mut slices, extra);
        Pin::new(io).poll_write_vectored(cx, &slices[..n])
    }
    // The chunks, the owned frames after them, and `extra`.
    if out.chunks() + 2 <= 4 {
        write::<4>(io, cx, out, extra)
    } else if out.chunks() + 2 <= 16 {
        write::<16>(io, cx, out, extra)
    } else {
        write::<MAX_SLICES>(io, cx, out, extra)
    }
}
