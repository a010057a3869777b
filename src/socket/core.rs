//! The connection core: protocol state and buffers behind one lock, driven
//! by poll functions that read and write the upgraded I/O directly.
//!
//! Every operation (receive, send, the keep-alive timer) locks the core for
//! the length of one non-blocking poll, never across an `await`, so a split
//! reader and writer on two tasks never wait for each other. Whoever polls
//! the I/O does it with one shared *proxy* waker that wakes every party
//! that is waiting, so a reader's poll can never steal a writer's wakeup
//! (the two directions of a socket share one waker slot each in tokio).
//!
//! All state changes happen synchronously inside a poll; the only point
//! where a future can be dropped is a `Pending` from the I/O, which
//! consumes nothing. That is what makes receive and send cancel-safe.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::transport::Transport;
use tokio::sync::{Notify, watch};

use super::message::{CloseFrame, Message, MessageType, ReceiveResult, WebSocketState};
use super::read_buffer::ReadBuffer;
use super::spare;
use crate::error::Error;
use crate::protocol::{
    CloseCode, Connection, Incoming, Limits, ProtocolError, Queued, SendRejected, WholeFrame,
    header_len,
};

/// Payloads up to this size are copied behind their header and written
/// with it in one call; larger ones are written vectored from the caller's
/// buffer without a copy.
const COPY_THRESHOLD: usize = 8 * 1024;

/// The most one read asks for once reads keep filling the buffer.
const MAX_READ_SIZE: usize = 64 * 1024;

/// How many short reads in a row halve the read size.
const SHRINK_AFTER: u8 = 8;

/// Payload is read straight into the caller's buffer (saving a copy) only
/// when that read can be at least this large; smaller targets are served
/// from the read buffer, whose reads grow under load, because a system
/// call costs far more than copying a few KiB.
const DIRECT_READ_MIN: usize = 32 * 1024;

/// A whole binary message at least this large that arrived in one read
/// is handed to `receive_message` as a slice of the read buffer instead of
/// a copy. The message then shares the buffer's allocation (at most
/// [`MAX_READ_SIZE`] beyond the frame) until it is dropped, so the share
/// is limited to messages for which the copy would cost the most.
const SHARE_MIN: usize = 8 * 1024;

/// Small frames sent while more input is already buffered are queued, up
/// to this many bytes, and written together when the input runs dry.
const COALESCE_LIMIT: usize = 64 * 1024;

/// When the whole-message API reads a payload straight from the I/O, it
/// reserves at most this much at a time, so a frame header announcing a
/// large payload does not allocate before the bytes arrive.
const MESSAGE_READ_CHUNK: usize = 256 * 1024;

/// Who is polling, so the proxy waker can wake them all.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Party {
    Reader,
    Writer,
    KeepAlive,
}

/// The wakers of everyone waiting on the I/O.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    reader: AtomicWaker,
    writer: AtomicWaker,
    keep_alive: AtomicWaker,
    /// The low bits: which parties registered a waker since the last
    /// [`wake_all`](Self::wake_all), so it wakes only those. Above them: a
    /// count of `wake_all`s, so that a poll that registers its waker only
    /// after finding it must wait can tell whether a wake came in between
    /// (see [`Shared::poll_with`]).
    state: AtomicUsize,
}

/// [`Wakers::state`]'s bits for the parties.
const PARTIES: usize = 0b111;
/// One [`Wakers::wake_all`] in [`Wakers::state`]'s count.
const EPOCH_ONE: usize = PARTIES + 1;

impl Party {
    fn bit(self) -> usize {
        match self {
            Party::Reader => 0b001,
            Party::Writer => 0b010,
            Party::KeepAlive => 0b100,
        }
    }
}

impl Wakers {
    /// The count of wakes so far, for [`registered`](Self::registered).
    fn epoch(&self) -> usize {
        self.state.load(Ordering::SeqCst) & !PARTIES
    }

    /// Registers `waker` for `party`, after a poll that began at `epoch`
    /// found it must wait. Returns whether a wake came since `epoch`,
    /// which may have missed the new waker.
    ///
    /// The mark is a read-modify-write: if it comes before a `wake_all`'s,
    /// that `wake_all` sees the mark and wakes the waker registered before
    /// it; if after, it sees that `wake_all`'s count.
    fn registered(&self, party: Party, waker: &Waker, epoch: usize) -> bool {
        match party {
            Party::Reader => self.reader.register(waker),
            Party::Writer => self.writer.register(waker),
            Party::KeepAlive => self.keep_alive.register(waker),
        }
        let before = self.state.fetch_or(party.bit(), Ordering::SeqCst);
        before & !PARTIES != epoch
    }

    fn wake_all(&self) {
        let mut current = self.state.load(Ordering::Relaxed);
        let marked = loop {
            let next = (current & !PARTIES).wrapping_add(EPOCH_ONE);
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(before) => break before & PARTIES,
                Err(actual) => current = actual,
            }
        };
        if marked & Party::Reader.bit() != 0 {
            self.reader.wake();
        }
        if marked & Party::Writer.bit() != 0 {
            self.writer.wake();
        }
        if marked & Party::KeepAlive.bit() != 0 {
            self.keep_alive.wake();
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

/// Where received payload goes.
pub(crate) enum Target<'a> {
    /// The caller's buffer (the buffer-based API).
    Slice(&'a mut [u8]),
    /// Appended to the message being assembled (the whole-message API);
    /// a message that arrives whole in one piece is put in `whole`
    /// instead, without the assembly buffer.
    Message {
        data: &'a mut BytesMut,
        whole: &'a mut Option<Message>,
    },
    /// Validated and dropped (waiting for the peer's Close).
    Discard,
}

/// Progress of one send, kept by the send future.
#[derive(Debug, Default)]
pub(crate) enum SendProgress {
    #[default]
    NotStarted,
    /// Header (and maybe payload) queued; `written` payload bytes of a
    /// large frame are on the wire.
    Streaming {
        written: usize,
    },
    /// Everything queued; flushing.
    Flushing,
    Done,
}

pub(crate) struct Core {
    io: Option<Transport>,
    /// The protocol: decoder, close handshake, control frames, output.
    conn: Connection,
    /// The error that ended the socket, repeated to later calls.
    terminal: Option<Error>,

    // ----- receive -----
    rbuf: ReadBuffer,
    rbuf_size: usize,
    /// How much the next read asks for: starts at `rbuf_size`, doubles
    /// when a read fills the buffer (up to [`MAX_READ_SIZE`]), and halves
    /// after [`SHRINK_AFTER`] reads in a row came back under a quarter
    /// full. The hysteresis matters: a frame that arrives in a full read
    /// plus a short tail must not make the size swing back and forth.
    read_size: usize,
    /// Reads in a row that came back under a quarter of `read_size`.
    small_reads: u8,
    /// The whole-message API's partial message; kept here so a cancelled
    /// `receive_message` loses nothing.
    pub(crate) message: BytesMut,

    // ----- send -----
    close_timeout: Duration,
    /// Sends completed without writing because more input was buffered:
    /// the next read (or the background task) writes them.
    deferred: bool,
    /// Wakes the socket's background task to write deferred output if the
    /// application does not read again soon.
    flush_notify: Arc<Notify>,

    // ----- keep-alive -----
    /// Counts successful reads, so the keep-alive timer can tell whether
    /// anything arrived since its ping.
    read_epoch: u64,
    /// `read_epoch` when the last keep-alive ping was queued.
    ping_epoch: u64,

    finished: watch::Sender<bool>,
}

/// What the keep-alive timer found when its timeout expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The peer sent something since the ping (or the socket is no longer
    /// open, so there is nothing to check).
    Alive,
    /// Nothing arrived: the socket was aborted.
    Dead,
}

/// While this much input is buffered and unread by the application, the
/// keep-alive check reads no more and counts the peer as alive.
const KEEP_ALIVE_READ_CAP: usize = 1 << 20;

pub(crate) struct CoreConfig {
    pub(crate) flush_notify: Arc<Notify>,
    pub(crate) limits: Limits,
    pub(crate) receive_buffer_size: usize,
    pub(crate) close_timeout: Duration,
}

/// The state shared by a socket's handles and its keep-alive timer.
pub(crate) struct Shared {
    core: Mutex<Core>,
    wakers: Arc<Wakers>,
    proxy: Waker,
    pub(crate) subprotocol: Option<Box<str>>,
    finished_rx: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(
        io: Transport,
        leftover: &[u8],
        config: CoreConfig,
        subprotocol: Option<Box<str>>,
        finished: watch::Sender<bool>,
    ) -> Arc<Shared> {
        let wakers = Arc::new(Wakers::default());
        let proxy = Waker::from(wakers.clone());
        let finished_rx = finished.subscribe();
        Arc::new(Shared {
            core: Mutex::new(Core {
                io: Some(io),
                conn: Connection::new(config.limits),
                terminal: None,
                // Frames the client sent along with its handshake.
                rbuf: ReadBuffer::from_slice(leftover),
                rbuf_size: config.receive_buffer_size,
                read_size: config.receive_buffer_size,
                small_reads: 0,
                message: BytesMut::new(),
                close_timeout: config.close_timeout,
                deferred: false,
                flush_notify: config.flush_notify,
                read_epoch: 0,
                ping_epoch: 0,
                finished,
            }),
            wakers,
            proxy,
            subprotocol,
            finished_rx,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // Nothing under this lock calls user code or can panic midway, but
        // a poisoned lock must not turn into a panic on the next call.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the core with the proxy waker's context; if it returns
    /// `Pending`, registers `cx`'s waker for `party`.
    ///
    /// Registering only when the poll must wait saves the registration on
    /// every poll that completes, which is most of them. The price is a
    /// window: the I/O can wake the proxy after `f` arranged for it and
    /// before the waker is registered, and that wake finds no one to wake.
    /// The wake counter closes it: if it moved since before `f`, the
    /// caller is woken at once (at worst a spurious poll).
    pub(crate) fn poll_with<R>(
        &self,
        cx: &mut Context<'_>,
        party: Party,
        f: impl FnOnce(&mut Core, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        let epoch = self.wakers.epoch();
        let mut io_cx = Context::from_waker(&self.proxy);
        let mut core = self.lock();
        let was_finished = core.state().is_finished();
        let result = f(&mut core, &mut io_cx);
        let now_finished = core.state().is_finished();
        drop(core);
        if now_finished && !was_finished {
            // Whoever else waits on the I/O (the other half, the timer)
            // must see that the socket ended.
            self.wakers.wake_all();
        }
        if result.is_pending() && self.wakers.registered(party, cx.waker(), epoch) {
            cx.waker().wake_by_ref();
        }
        result
    }

    /// Resolves once the socket is finished: closed, aborted or dropped.
    pub(crate) fn finished(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut rx = self.finished_rx.clone();
        async move {
            // An error means the sender is gone: the socket was dropped.
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    pub(crate) fn finished_receiver(&self) -> watch::Receiver<bool> {
        self.finished_rx.clone()
    }

    /// Aborts the socket and wakes every party waiting on it, so pending
    /// operations on other tasks see the abort at once.
    pub(crate) fn abort(&self) {
        self.lock().abort();
        self.wakers.wake_all();
    }

    /// Queues this side's Close frame for a [`WebSocketHandle`] on another
    /// task, and gets it written without polling the I/O from there: a
    /// pending receive is woken and writes it when it finds the input dry,
    /// and the background task writes it if no one is receiving. Returns
    /// the close timeout, for the caller's wait.
    ///
    /// [`WebSocketHandle`]: crate::WebSocketHandle
    pub(crate) fn close_from_handle(
        &self,
        status: Option<CloseCode>,
        reason: &str,
    ) -> Result<Duration, Error> {
        let mut core = self.lock();
        if core.start_close(status, reason)? {
            if core.state() == WebSocketState::Closed && !core.conn.frame_in_progress() {
                // The peer's Close had arrived: the handshake is complete.
                core.linger();
            } else {
                core.deferred = true;
                core.flush_notify.notify_one();
            }
        }
        let timeout = core.close_timeout;
        drop(core);
        self.wakers.wake_all();
        Ok(timeout)
    }

    /// The peer did not answer our Close in time: abort, waking every
    /// party so pending operations see it.
    pub(crate) fn close_timed_out(&self) -> Error {
        let error = self.lock().close_timed_out();
        self.wakers.wake_all();
        error
    }

    /// The keep-alive timeout expired: check the peer, abort it if silent.
    pub(crate) fn check_keep_alive(&self) -> Liveness {
        let mut io_cx = Context::from_waker(&self.proxy);
        let (liveness, read) = self.lock().check_alive(&mut io_cx);
        if liveness == Liveness::Dead || read {
            // A reader waiting on the I/O would otherwise not notice that
            // its bytes were read for it, or that the socket was aborted.
            self.wakers.wake_all();
        }
        liveness
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let core = self.core.get_mut().unwrap_or_else(PoisonError::into_inner);
        core.on_drop();
    }
}

impl Core {
    pub(crate) fn state(&self) -> WebSocketState {
        self.conn.state()
    }

    pub(crate) fn close_status(&self) -> Option<CloseCode> {
        self.conn.close_status()
    }

    pub(crate) fn close_description(&self) -> Option<&str> {
        self.conn.close_description()
    }

    /// Tells whoever awaits the socket's end, once it has ended.
    fn note_state(&mut self) {
        if self.state().is_finished() && !*self.finished.borrow() {
            self.finished.send_replace(true);
        }
    }

    /// The error for an operation on a finished socket.
    fn finished_error(&self) -> Error {
        match (&self.terminal, self.state()) {
            (Some(e), _) => e.replay(),
            (None, WebSocketState::Closed) => Error::Closed,
            _ => Error::Aborted,
        }
    }

    /// Drops the connection at once: no Close frame.
    pub(crate) fn abort(&mut self) {
        self.io = None;
        self.conn.abort();
        self.rbuf = ReadBuffer::default();
        self.message = BytesMut::new();
        self.note_state();
    }

    /// Aborts with `error`, remembered for later calls.
    fn abort_with(&mut self, error: Error) -> Error {
        let replay = error.replay();
        self.terminal = Some(replay);
        self.abort();
        error
    }

    /// Fails the connection for a protocol violation (RFC 6455 §7.1.7):
    /// send a Close frame with the violation's code, close the connection.
    fn fail(&mut self, violation: ProtocolError) -> Error {
        tracing::debug!(%violation, "failing websocket connection");
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
    fn linger(&mut self) {
        let out = self.conn.take_output();
        self.linger_with(out);
    }

    /// [`linger`](Self::linger), writing `out` first.
    fn linger_with(&mut self, out: BytesMut) {
        let Some(mut io) = self.io.take() else {
            return;
        };
        let timeout = self.close_timeout;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let linger = async {
                io.write_all(&out).await?;
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
    fn on_drop(&mut self) {
        let frame_in_progress = self.conn.frame_in_progress();
        match self.state() {
            WebSocketState::CloseReceived if !frame_in_progress => {
                // Answer the peer's Close (RFC 6455 §5.5.1) on the way out.
                let _ = self.conn.start_close(self.conn.close_status(), "");
                self.linger();
                self.note_state();
            }
            WebSocketState::CloseSent | WebSocketState::Closed if !frame_in_progress => {
                self.linger();
            }
            WebSocketState::Open if self.conn.queued() > 0 && !frame_in_progress => {
                // Sends that completed (coalesced, not yet written) are
                // still delivered; then the connection closes without a
                // close handshake, as an abort.
                self.linger();
            }
            _ => {}
        }
        self.abort();
    }

    // ===================================================================
    // Writing
    // ===================================================================

    /// Writes all queued output and flushes.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.conn.stage_control();
        while !self.conn.output().is_empty() {
            let Some(io) = self.io.as_mut() else {
                return Poll::Ready(Err(self.finished_error()));
            };
            match Pin::new(&mut *io).poll_write(cx, self.conn.output()) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(
                        self.abort_with(Error::Io(io::ErrorKind::WriteZero.into()))
                    ));
                }
                // Control frames that waited behind the output are staged
                // once it is written.
                Poll::Ready(Ok(n)) => self.conn.written(n),
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
    fn try_write_control(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.conn.frame_in_progress() || !self.conn.has_output() {
            return Ok(());
        }
        match self.poll_write_out(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// The keep-alive timer's tick: queue a ping and try to write it.
    /// Returns whether the socket is still open.
    pub(crate) fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.state() != WebSocketState::Open {
            return Poll::Ready(false);
        }
        self.conn.queue_ping();
        self.ping_epoch = self.read_epoch;
        let _ = self.try_write_control(cx);
        Poll::Ready(self.state() == WebSocketState::Open)
    }

    /// Whether the peer showed any sign of life since the last ping. If
    /// nothing was read since, read now: an application that is busy and
    /// not receiving leaves the peer's pong unread in the kernel, and that
    /// must not count as silence (ASP.NET's false timeouts). What is read
    /// stays buffered for the application, in order.
    ///
    /// Returns the verdict and whether bytes were read here.
    fn check_alive(&mut self, cx: &mut Context<'_>) -> (Liveness, bool) {
        if self.state() != WebSocketState::Open || self.read_epoch != self.ping_epoch {
            return (Liveness::Alive, false);
        }
        if self.rbuf.len() >= KEEP_ALIVE_READ_CAP {
            // The peer sent more than the application has read.
            return (Liveness::Alive, false);
        }
        match self.poll_fill(cx) {
            Poll::Ready(Ok(())) => (Liveness::Alive, true),
            // The read failed and aborted the socket with its cause.
            Poll::Ready(Err(_)) => (Liveness::Dead, false),
            Poll::Pending => {
                tracing::debug!("websocket keep-alive timeout: no answer to ping");
                self.abort_with(Error::KeepAliveTimeout);
                (Liveness::Dead, false)
            }
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
                            let slices = [IoSlice::new(out), IoSlice::new(rest)];
                            Pin::new(&mut *io).poll_write_vectored(cx, &slices)
                        };
                        match ready!(result) {
                            Ok(0) => {
                                return Poll::Ready(Err(
                                    self.abort_with(Error::Io(io::ErrorKind::WriteZero.into()))
                                ));
                            }
                            Ok(mut n) => {
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
                    if self.may_defer() {
                        // More input is already here: the application is
                        // about to receive again, and the read that finds the
                        // input dry writes all the replies in one go. The
                        // background task writes them if it does not.
                        self.deferred = true;
                        self.flush_notify.notify_one();
                    } else {
                        ready!(self.poll_write_out(cx))?;
                    }
                    *progress = SendProgress::Done;
                    return Poll::Ready(Ok(()));
                }
                SendProgress::Done => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Whether a completed send may leave its bytes queued (write
    /// coalescing): only while the application is about to receive again —
    /// unread input is buffered, or an incoming frame is still arriving —
    /// and the queue is small.
    fn may_defer(&self) -> bool {
        (!self.rbuf.is_empty() || self.conn.remaining() > 0)
            && self.conn.queued() < COALESCE_LIMIT
            && self.state() == WebSocketState::Open
    }

    /// Checks a send against the state, queues the frame header (and a
    /// small payload), and moves `progress` on.
    fn start_frame(
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
            Err(SendRejected::TypeChanged) => {
                return Err(Error::InvalidArgument(
                    "message type changed in the middle of a fragmented message",
                ));
            }
        }
        Ok(())
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

    /// Bytes queued but not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.conn.queued()
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

    /// Queues this side's Close frame. Returns `false` if one was already
    /// sent.
    pub(crate) fn start_close(
        &mut self,
        status: Option<CloseCode>,
        reason: &str,
    ) -> Result<bool, Error> {
        match self.conn.start_close(status, reason) {
            Ok(queued) => {
                self.note_state();
                Ok(queued)
            }
            Err(_) => Err(self.finished_error()),
        }
    }

    /// The close timeout, for [`WebSocket::close`](crate::WebSocket::close).
    pub(crate) fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// The peer did not answer our Close in time.
    pub(crate) fn close_timed_out(&mut self) -> Error {
        self.abort_with(Error::CloseTimeout)
    }

    // ===================================================================
    // Reading
    // ===================================================================

    /// Reads more bytes into the read buffer. When the input has run dry
    /// (the read would block), queued output (coalesced replies, pongs) is
    /// written.
    ///
    /// An idle socket holds no read buffer: with nothing buffered, it waits
    /// for readiness first (on TCP, without a buffer) and frees the buffer
    /// when a read finds nothing. Under load, reads that fill the buffer
    /// double the next read, up to [`MAX_READ_SIZE`], so large messages and
    /// pipelined frames take fewer system calls.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(self.finished_error()));
        };
        if !self.rbuf.has_allocation() {
            // No buffer: take this thread's spare, or, if there is none,
            // wait for input before allocating one. (With a buffer at hand
            // the read itself checks readiness first, no system call.)
            if let Some(spare) = spare::take_read_buffer() {
                self.rbuf.adopt(spare);
            }
            if !self.rbuf.has_allocation() {
                match io.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(self.abort_with(e.into()))),
                    Poll::Pending => {
                        self.try_write_control(cx)?;
                        return Poll::Pending;
                    }
                }
            }
        }
        // The rest of a frame whose header was read is known to be coming:
        // make room for it (up to a read's maximum), so it takes one read.
        let frame_rest = usize::try_from(self.conn.remaining())
            .unwrap_or(usize::MAX)
            .saturating_sub(self.rbuf.len())
            .min(MAX_READ_SIZE);
        // An empty buffer is refilled to the full read size (reclaiming its
        // space is free then); a partly consumed one is topped up only when
        // nearly full or too small for the frame's rest.
        let want = if self.rbuf.is_empty() {
            self.read_size
        } else {
            256
        };
        if self.rbuf.spare() < want.max(frame_rest) {
            self.rbuf.reserve(self.read_size.max(frame_rest));
        }
        let spare = self.rbuf.spare();
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, self.rbuf.as_bytes_mut()) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(self.abort_with(Error::ConnectionReset))),
            Poll::Ready(Ok(n)) => {
                self.read_epoch = self.read_epoch.wrapping_add(1);
                if n == spare {
                    self.read_size = (self.read_size * 2).min(MAX_READ_SIZE.max(self.rbuf_size));
                    self.small_reads = 0;
                } else if n < self.read_size / 4 {
                    self.small_reads += 1;
                    if self.small_reads >= SHRINK_AFTER {
                        self.read_size = (self.read_size / 2).max(self.rbuf_size);
                        self.small_reads = 0;
                    }
                } else {
                    self.small_reads = 0;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.abort_with(e.into()))),
            Poll::Pending => {
                if self.rbuf.is_empty() {
                    self.release_read_buffer();
                }
                // The input ran dry: now write what was coalesced.
                self.try_write_control(cx)?;
                Poll::Pending
            }
        }
    }

    /// The socket is idle with nothing buffered: give the read buffer back.
    /// The read size learned under load is kept (it decays as reads come
    /// back small), so a busy socket does not relearn it every message.
    ///
    /// The buffer goes to this thread's spare (see [`spare`]) if that is
    /// empty and the buffer not oversized.
    fn release_read_buffer(&mut self) {
        if let Some(buffer) = self.rbuf.take_if_empty() {
            spare::give_read_buffer(buffer, MAX_READ_SIZE.max(self.rbuf_size));
        }
    }

    /// Receives the next piece of data (or the peer's Close) into `target`.
    ///
    /// Returns as soon as some payload is available, like ASP.NET's
    /// `ReceiveAsync`; pings are answered and pongs consumed on the way.
    pub(crate) fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        mut target: Target<'_>,
    ) -> Poll<Result<ReceiveResult, Error>> {
        match self.state() {
            WebSocketState::Open | WebSocketState::CloseSent => {}
            WebSocketState::CloseReceived => return Poll::Ready(Err(Error::Closed)),
            WebSocketState::Closed | WebSocketState::Aborted => {
                return Poll::Ready(Err(self.finished_error()));
            }
        }
        if let Target::Slice(buf) = &target {
            if buf.is_empty() {
                return Poll::Ready(Err(Error::InvalidArgument("receive buffer is empty")));
            }
        }
        loop {
            let remaining = self.conn.remaining();
            if remaining > 0 {
                let text = self.conn.message_is_text() == Some(true);
                let message_type = if text {
                    MessageType::Text
                } else {
                    MessageType::Binary
                };
                if self.rbuf.is_empty() {
                    match ready!(self.poll_direct(cx, &mut target, remaining)) {
                        Ok(Some((count, done))) => {
                            return Poll::Ready(Ok(data_result(count, message_type, done)));
                        }
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    if self.rbuf.is_empty() {
                        ready!(self.poll_fill(cx))?;
                    }
                }
                let mut n = self
                    .rbuf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                if let Target::Slice(buf) = &target {
                    n = n.min(buf.len());
                }
                if let Target::Message { data, whole } = &mut target {
                    let whole_text = if data.is_empty() {
                        self.conn.whole_message(n)
                    } else {
                        None
                    };
                    if let Some(text) = whole_text {
                        **whole = Some(match self.take_whole_message(n, text) {
                            Ok(message) => message,
                            Err(e) => return Poll::Ready(Err(e)),
                        });
                        return Poll::Ready(Ok(data_result(n, message_type, true)));
                    }
                }
                let done = match self.conn.payload(&mut self.rbuf.unread_mut()[..n]) {
                    Ok(done) => done,
                    Err(e) => return Poll::Ready(Err(self.fail(e))),
                };
                let chunk = &self.rbuf.unread()[..n];
                match &mut target {
                    Target::Slice(buf) => buf[..n].copy_from_slice(chunk),
                    Target::Message { data, .. } => {
                        begin_large_message(data, remaining);
                        data.extend_from_slice(chunk);
                    }
                    Target::Discard => {}
                }
                self.rbuf.consume(n);
                return Poll::Ready(Ok(data_result(n, message_type, done)));
            }

            if self.rbuf.is_empty() {
                // Between messages, the usual wait: no header to look at.
                ready!(self.poll_fill(cx))?;
                continue;
            }
            let (incoming, used) = match self.conn.receive_header(self.rbuf.unread_mut()) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            };
            self.rbuf.consume(used);
            match incoming {
                Incoming::Data {
                    text,
                    len: 0,
                    message_done: true,
                } => {
                    let message_type = if text {
                        MessageType::Text
                    } else {
                        MessageType::Binary
                    };
                    return Poll::Ready(Ok(data_result(0, message_type, true)));
                }
                Incoming::Data { .. } | Incoming::Pong => {}
                // Its pong is queued: write it if nothing else is writing.
                Incoming::Ping => self.try_write_control(cx)?,
                Incoming::Close {
                    status,
                    description,
                } => return Poll::Ready(Ok(self.on_close(status, description))),
            }
        }
    }

    /// Takes the single-frame message [`Decoder::whole_frame`] found at the
    /// front of the read buffer (see [`take_unmasked_message`]).
    ///
    /// [`take_unmasked_message`]: Self::take_unmasked_message
    fn take_whole_frame(&mut self, frame: WholeFrame) -> Result<Message, Error> {
        frame.unmask(self.rbuf.unread_mut());
        self.take_unmasked_message(frame.header_len, frame.len, frame.text)
    }

    /// Takes a message whose whole payload is the first `n` buffered bytes
    /// (see [`Decoder::whole_message`]) without the assembly buffer: text is
    /// validated in one pass while it is copied into its `String`; a large
    /// binary message is handed over as a slice of the read buffer, a
    /// small one copied once into its `Bytes`.
    fn take_whole_message(&mut self, n: usize, text: bool) -> Result<Message, Error> {
        let payload = &mut self.rbuf.unread_mut()[..n];
        if text {
            self.conn.payload_whole_text(payload);
        } else if let Err(e) = self.conn.payload(payload) {
            return Err(self.fail(e));
        }
        self.take_unmasked_message(0, n, text)
    }

    /// Takes the `n` buffered bytes after the first `skip` (a header),
    /// already unmasked, as a whole message, and consumes both: text
    /// validated in one pass while copied into its `String` (1007 if it is
    /// not UTF-8), large binary as a slice of the read buffer, small binary
    /// copied once.
    // Always inlined: it is the tail of the receive fast path, and as a
    // call of its own it cost about 30 instructions per 16-byte echo
    // (callgrind).
    #[inline(always)]
    fn take_unmasked_message(
        &mut self,
        skip: usize,
        n: usize,
        text: bool,
    ) -> Result<Message, Error> {
        let payload = &self.rbuf.unread()[skip..skip + n];
        let message = if text {
            match simdutf8::basic::from_utf8(payload) {
                Ok(valid) => Message::Text(valid.to_owned()),
                Err(_) => return Err(self.fail(ProtocolError::InvalidUtf8)),
            }
        } else if n >= SHARE_MIN {
            self.rbuf.consume(skip);
            return Ok(Message::Binary(self.rbuf.split_to(n).freeze()));
        } else {
            Message::Binary(Bytes::copy_from_slice(payload))
        };
        self.rbuf.consume(skip + n);
        Ok(message)
    }

    /// Reads payload straight from the I/O into the target when that saves
    /// a copy: the read buffer is empty and the target can take a read's
    /// worth. Returns `Ok(None)` when the read buffer should be used.
    fn poll_direct(
        &mut self,
        cx: &mut Context<'_>,
        target: &mut Target<'_>,
        remaining: u64,
    ) -> Poll<Result<Option<(usize, bool)>, Error>> {
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        if matches!(target, Target::Discard) {
            return Poll::Ready(Ok(None));
        }
        // Direct reads are large and rare: write coalesced output first.
        self.try_write_control(cx)?;
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(self.finished_error()));
        };
        let (filled, count) = match target {
            Target::Slice(buf) => {
                let want = remaining.min(buf.len());
                if want < DIRECT_READ_MIN.max(self.read_size) {
                    return Poll::Ready(Ok(None));
                }
                let mut read_buf = ReadBuf::new(&mut buf[..want]);
                match ready!(Pin::new(io).poll_read(cx, &mut read_buf)) {
                    Ok(()) => {}
                    Err(e) => return Poll::Ready(Err(self.abort_with(e.into()))),
                }
                let n = read_buf.filled().len();
                (&mut buf[..n], n)
            }
            Target::Message { data: message, .. } => {
                if remaining < DIRECT_READ_MIN.max(self.read_size) {
                    return Poll::Ready(Ok(None));
                }
                begin_large_message(message, remaining as u64);
                let start = message.len();
                message.reserve(remaining.min(MESSAGE_READ_CHUNK));
                let mut limited = (&mut **message).limit(remaining);
                match ready!(tokio_util::io::poll_read_buf(
                    Pin::new(io),
                    cx,
                    &mut limited
                )) {
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(self.abort_with(e.into()))),
                }
                let n = message.len() - start;
                (&mut message[start..], n)
            }
            Target::Discard => return Poll::Ready(Ok(None)),
        };
        if count == 0 {
            return Poll::Ready(Err(self.abort_with(Error::ConnectionReset)));
        }
        self.read_epoch = self.read_epoch.wrapping_add(1);
        match self.conn.payload(filled) {
            Ok(done) => Poll::Ready(Ok(Some((count, done)))),
            Err(e) => Poll::Ready(Err(self.fail(e))),
        }
    }

    /// Receives the next whole message, assembling it in `self.message`.
    pub(crate) fn poll_receive_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Message, Error>> {
        loop {
            if matches!(
                self.state(),
                WebSocketState::Open | WebSocketState::CloseSent
            ) {
                // The common case first: a whole single-frame message at
                // the front of the read buffer, or nothing buffered between
                // messages (wait for input, then look again).
                if let Some(frame) = self.conn.whole_frame(self.rbuf.unread()) {
                    return Poll::Ready(self.take_whole_frame(frame));
                }
                if self.rbuf.is_empty() && self.conn.remaining() == 0 {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
            }
            let mut message = std::mem::take(&mut self.message);
            let mut whole = None;
            let result = self.poll_receive(
                cx,
                Target::Message {
                    data: &mut message,
                    whole: &mut whole,
                },
            );
            self.message = message;
            if let Some(whole) = whole {
                return Poll::Ready(Ok(whole));
            }
            let result = ready!(result)?;
            match result.message_type {
                MessageType::Close => {
                    let frame = result.close_status.map(|code| CloseFrame {
                        code,
                        reason: result.close_description.unwrap_or_default(),
                    });
                    return Poll::Ready(Ok(Message::Close(frame)));
                }
                _ if !result.end_of_message => continue,
                MessageType::Text => {
                    let data = std::mem::take(&mut self.message);
                    // Validated as it arrived; this cannot fail.
                    let text =
                        text_message(&data).map_err(|_| self.fail(ProtocolError::InvalidUtf8))?;
                    // Copied out: the next large message can use it.
                    spare::give_message_buffer(data);
                    return Poll::Ready(Ok(Message::Text(text)));
                }
                MessageType::Binary => {
                    let data = std::mem::take(&mut self.message).freeze();
                    return Poll::Ready(Ok(Message::Binary(data)));
                }
            }
        }
    }

    /// The peer's Close frame arrived. If ours was sent, the handshake is
    /// complete, and the server closes the TCP connection first (RFC 6455
    /// §7.1.1).
    fn on_close(
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

/// Starts assembling a large message whose first frame carries
/// `frame_len` bytes of payload, none of it in `data` yet: in this
/// thread's spare message buffer if there is one (no fresh allocation, no
/// pages to fault in), placed so that payload read straight into it lands
/// half a page away from where it sits in the sender's page (see
/// [`spare::place`]).
fn begin_large_message(data: &mut BytesMut, frame_len: u64) {
    if data.capacity() == 0 && frame_len >= spare::MESSAGE_SPARE_MIN as u64 {
        if let Some(buffer) = spare::take_message_buffer() {
            *data = buffer;
        }
        // Room for the frame, but no more up front than a spare already
        // holds or one read chunk: the header's claim is not yet data. (A
        // message that outgrows this is reallocated as it arrives, and the
        // new allocation's page offset is the allocator's: glibc keeps it
        // for large ones, which it remaps.)
        let room = usize::try_from(frame_len)
            .unwrap_or(usize::MAX)
            .min(data.capacity().max(MESSAGE_READ_CHUNK));
        // The sender's page holds the frame's (masked) header first.
        spare::place(
            data,
            room,
            spare::READ_PAGE_OFFSET + header_len(frame_len, true),
        );
    }
}

/// A text message assembled from pieces as a `String`.
///
/// The pieces were validated as they arrived (to fail fast with 1007), so
/// this cannot fail; but `String::from_utf8` would check the bytes again
/// with std's scalar validator, which was 63 % of the server's instructions
/// echoing 1 KiB text (callgrind, `loadgen --size 1024 --text`). simdutf8
/// checks them at over 10 GiB/s, and the copy into the `String` costs less
/// than std's check, without `unsafe`.
fn text_message(data: &[u8]) -> Result<String, simdutf8::basic::Utf8Error> {
    simdutf8::basic::from_utf8(data).map(str::to_owned)
}

fn data_result(count: usize, message_type: MessageType, end_of_message: bool) -> ReceiveResult {
    ReceiveResult {
        count,
        message_type,
        end_of_message,
        close_status: None,
        close_description: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{Message, WebSocket, WebSocketOptions};

    /// Counts how often it was woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn shared() -> Arc<Shared> {
        let (io, _peer) = tokio::io::duplex(64);
        let options = WebSocketOptions::default();
        let config = crate::socket::websocket::SocketConfig::from_options(&options);
        Shared::new(
            Transport::new(io),
            &[],
            CoreConfig {
                flush_notify: Arc::new(tokio::sync::Notify::new()),
                limits: config.limits,
                receive_buffer_size: config.receive_buffer_size,
                close_timeout: config.close_timeout,
            },
            None,
            watch::channel(false).0,
        )
    }

    /// The I/O wakes the proxy after the poll arranged for it but before
    /// the caller's waker is registered (here: from inside the poll). That
    /// wake must still reach the caller, for every party.
    #[test]
    fn a_wake_before_the_waker_is_registered_is_not_lost() {
        for party in [Party::Reader, Party::Writer, Party::KeepAlive] {
            let shared = shared();
            let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
            let waker = Waker::from(counter.clone());
            let mut cx = Context::from_waker(&waker);
            let poll = shared.poll_with(&mut cx, party, |_, io_cx| {
                io_cx.waker().wake_by_ref();
                Poll::<()>::Pending
            });
            assert!(poll.is_pending());
            assert_eq!(counter.0.load(Ordering::SeqCst), 1, "{party:?} woken");
            // Registered now: the next wake reaches it the usual way.
            Waker::from(shared.wakers.clone()).wake();
            assert_eq!(counter.0.load(Ordering::SeqCst), 2, "{party:?} woken again");
        }
    }

    /// A poll that completes registers no waker: a later wake of the I/O
    /// does not wake it.
    #[test]
    fn a_completed_poll_registers_no_waker() {
        let shared = shared();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let poll = shared.poll_with(&mut cx, Party::Reader, |_, _| Poll::Ready(()));
        assert!(poll.is_ready());
        shared.wakers.wake_all();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    /// A closed-loop client as a scripted stream: it sends its next frame
    /// only once the echo of the previous one has been written, and hands
    /// out what is in flight in reads as large as the socket asks for,
    /// counting them.
    struct ClosedLoopPeer {
        frame: Vec<u8>,
        echo_len: usize,
        frames_left: usize,
        in_flight: Vec<u8>,
        read_pos: usize,
        echoed: usize,
        reads: Arc<AtomicUsize>,
        reader: Option<Waker>,
    }

    /// A socket over a [`ClosedLoopPeer`] that sends `payload` as one
    /// masked binary frame `messages` times, each after the echo of the
    /// last, counting its reads in `reads`. Also returns the frame's header
    /// length.
    fn closed_loop_socket(
        payload: &[u8],
        messages: usize,
        reads: Arc<AtomicUsize>,
    ) -> (WebSocket, usize) {
        let mask = [9u8, 8, 7, 6];
        let (mut frame, echo_header_len) = match payload.len() {
            0..=125 => (vec![0x82, 0x80 | payload.len() as u8], 2),
            126..=0xFFFF => {
                let mut frame = vec![0x82, 0x80 | 126];
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                (frame, 4)
            }
            _ => {
                let mut frame = vec![0x82, 0x80 | 127];
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
                (frame, 10)
            }
        };
        frame.extend_from_slice(&mask);
        let header_len = frame.len();
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let mut peer = ClosedLoopPeer {
            frame,
            echo_len: echo_header_len + payload.len(),
            frames_left: messages,
            in_flight: Vec::new(),
            read_pos: 0,
            echoed: 0,
            reads,
            reader: None,
        };
        peer.send_next();
        let options = WebSocketOptions::default().keep_alive_interval(None);
        (
            WebSocket::from_raw_socket(peer, options).unwrap(),
            header_len,
        )
    }

    impl ClosedLoopPeer {
        fn send_next(&mut self) {
            if self.frames_left > 0 {
                self.frames_left -= 1;
                self.in_flight = self.frame.clone();
                self.read_pos = 0;
                if let Some(waker) = self.reader.take() {
                    waker.wake();
                }
            }
        }
    }

    impl AsyncRead for ClosedLoopPeer {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let rest = &self.in_flight[self.read_pos..];
            if rest.is_empty() {
                self.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.read_pos += n;
            self.reads.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for ClosedLoopPeer {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.echoed += buf.len();
            if self.echoed >= self.echo_len {
                assert_eq!(self.echoed, self.echo_len, "one echo frame per message");
                self.echoed = 0;
                self.send_next();
            }
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    proptest::proptest! {
        #[test]
        fn text_message_agrees_with_std(bytes in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<u8>(),
                // Bias towards multi-byte UTF-8 and its boundaries.
                proptest::sample::select(vec![0xc3u8, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xa0, 0xbf, 0xc0, 0xf5]),
            ],
            0..300,
        )) {
            let ours = text_message(&bytes).ok();
            let std = String::from_utf8(bytes).ok();
            proptest::prop_assert_eq!(ours, std);
        }
    }

    /// Large payload is read into its message half a page away from where
    /// it sits in a sender's page whose frame starts the page (see
    /// `spare::place`), from the first message (a fresh buffer) on (the
    /// recycled one). The message fits the first buffer's one read chunk:
    /// a message that outgrows its buffer is reallocated, and where its
    /// rest lands is then the allocator's choice.
    #[tokio::test]
    async fn large_messages_land_half_a_page_from_the_senders_offset() {
        const MESSAGES: usize = 4;
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let (mut socket, header_len) =
            closed_loop_socket(&payload, MESSAGES, Arc::new(AtomicUsize::new(0)));
        for i in 0..MESSAGES {
            let message = socket.receive_message().await.unwrap();
            let Message::Binary(data) = &message else {
                panic!("{message:?}")
            };
            assert!(data[..] == payload[..], "message {i}");
            assert_eq!(
                data.as_ptr() as usize % spare::PAGE,
                spare::READ_PAGE_OFFSET + header_len,
                "message {i}"
            );
            socket.send_message(message).await.unwrap();
        }
    }

    /// A 16 KiB frame is one full read plus an 8-byte tail while the read
    /// size is 16 KiB; the read size must settle above it (one read per
    /// message) rather than swing between 16 and 32 KiB (two per message).
    #[tokio::test]
    async fn closed_loop_16k_echo_settles_at_one_read_per_message() {
        const MESSAGES: usize = 50;
        let payload: Vec<u8> = (0..16_384u32).map(|i| (i * 13) as u8).collect();
        let reads = Arc::new(AtomicUsize::new(0));
        let (mut socket, _) = closed_loop_socket(&payload, MESSAGES, reads.clone());
        for _ in 0..MESSAGES {
            let message = socket.receive_message().await.unwrap();
            assert_eq!(message, Message::Binary(payload.clone().into()));
            socket.send_message(message).await.unwrap();
        }
        let reads = reads.load(Ordering::Relaxed);
        // Two reads for the first message (the read size grows 4 → 32 KiB
        // while the frame arrives), then one each.
        assert!(
            reads <= MESSAGES + 2,
            "{reads} reads for {MESSAGES} messages"
        );
    }
}
