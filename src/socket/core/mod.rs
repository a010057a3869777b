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
//!
//! The protocol itself — what a frame means, the close handshake, which
//! control frames go out — is [`Connection`]'s, in `protocol/`; the core
//! moves bytes between it and the I/O. The rooms:
//!
//! - `mod.rs`: [`Core`], the [`Shared`] lock around it, and the poll
//!   wrapper that registers wakers;
//! - `wakers`: the proxy waker that wakes every party waiting on the I/O;
//! - `read`: the read buffer, receives into a caller's buffer or a whole
//!   message, the fast path, direct reads into large targets;
//! - `write`: sends, large payloads written vectored, write coalescing,
//!   flushes;
//! - `close`: the close handshake's I/O, lingering, aborts, failures, the
//!   last handle going away;
//! - `keep_alive`: the ping timer, the liveness check and the background
//!   task.

mod close;
mod keep_alive;
mod read;
mod wakers;
mod write;

use keep_alive::Liveness;
pub(crate) use keep_alive::spawn_background;
use wakers::Wakers;
pub(crate) use wakers::{FlushSignal, Party};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::BytesMut;

use tokio::sync::watch;

use super::message::{Message, WebSocketState};
use super::pipeline::PipelineMarks;
use super::read_buffer::ReadBuffer;
use super::transport::Transport;
use crate::error::Error;
use crate::protocol::{CloseCode, CompressionConfig, Connection, Limits};
use crate::stats::{Counters, Outcome, Traffic};

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
    /// when a read fills the buffer (up to [`MAX_READ_SIZE`](read::MAX_READ_SIZE)), and halves
    /// after [`SHRINK_AFTER`](read::SHRINK_AFTER) reads in a row came back under a quarter
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
    /// [`WebSocketOptions::max_buffered_amount`](crate::WebSocketOptions::max_buffered_amount):
    /// sends wait, and reading stops, while more output than this is
    /// queued.
    max_buffered: usize,
    /// The reader stopped because the output was past its bound, and waits
    /// to be woken when it is back within.
    reader_gated: bool,
    /// Sends completed without writing because more input was buffered:
    /// the next read (or the background task) writes them.
    deferred: bool,
    /// Wakes the socket's background task to write deferred output if the
    /// application does not read again soon.
    flush_notify: Arc<FlushSignal>,

    // ----- keep-alive -----
    /// Counts successful reads, so the keep-alive timer can tell whether
    /// anything arrived since its ping.
    read_epoch: u64,
    /// `read_epoch` when the last keep-alive ping was queued.
    ping_epoch: u64,
    /// Counts writes that handed bytes to the transport, so the keep-alive
    /// timer can tell a peer that stopped reading.
    write_epoch: u64,
    /// `write_epoch` when the last keep-alive ping was queued.
    ping_write_epoch: u64,

    finished: watch::Sender<bool>,

    // ----- observability -----
    /// The layer's counters, if the socket came from one.
    counters: Option<Arc<Counters>>,
    /// The socket's span: the parent of every event about it.
    span: tracing::Span,
    /// When the socket was accepted.
    started: tokio::time::Instant,
    /// How the socket ended, where its state cannot tell (it closed itself
    /// with 1011 when the application left it open).
    ending: Option<Outcome>,
}

pub(crate) struct CoreConfig {
    pub(crate) flush_notify: Arc<FlushSignal>,
    pub(crate) limits: Limits,
    pub(crate) receive_buffer_size: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) max_buffered: usize,
    /// permessage-deflate, as negotiated.
    pub(crate) compression: Option<CompressionConfig>,
    /// The accepting pipeline's id, or 0.
    pub(crate) pipeline: usize,
    pub(crate) counters: Option<Arc<Counters>>,
    pub(crate) traffic: Arc<Traffic>,
    pub(crate) span: tracing::Span,
}

/// The state shared by a socket's handles and its keep-alive timer.
pub(crate) struct Shared {
    core: Mutex<Core>,
    wakers: Arc<Wakers>,
    proxy: Waker,
    pub(crate) subprotocol: Option<Box<str>>,
    pub(crate) extensions: Option<Box<str>>,
    finished_rx: watch::Receiver<bool>,
    /// Which operations wait inside the request pipeline that accepted
    /// the socket (see `socket::pipeline`).
    pub(crate) pipeline: PipelineMarks,
    /// A receive is pending (its last poll returned `Pending` and it was
    /// not dropped since): it will see what arrives, so the background
    /// task does not read for it (see [`Shared::poll_closing_read`]).
    reader_waiting: AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        io: Transport,
        leftover: &[u8],
        config: CoreConfig,
        subprotocol: Option<Box<str>>,
        extensions: Option<Box<str>>,
        finished: watch::Sender<bool>,
    ) -> Arc<Shared> {
        let wakers = Arc::new(Wakers::default());
        let proxy = Waker::from(wakers.clone());
        let finished_rx = finished.subscribe();
        let mut conn = Connection::with_traffic(config.limits, config.traffic);
        if let Some(compression) = config.compression {
            conn.enable_compression(compression);
        }
        Arc::new(Shared {
            core: Mutex::new(Core {
                io: Some(io),
                conn,
                terminal: None,
                // Frames the client sent along with its handshake.
                rbuf: ReadBuffer::from_slice(leftover),
                rbuf_size: config.receive_buffer_size,
                read_size: config.receive_buffer_size,
                small_reads: 0,
                message: BytesMut::new(),
                close_timeout: config.close_timeout,
                max_buffered: config.max_buffered,
                reader_gated: false,
                deferred: false,
                flush_notify: config.flush_notify,
                read_epoch: 0,
                ping_epoch: 0,
                write_epoch: 0,
                ping_write_epoch: 0,
                finished,
                counters: config.counters,
                span: config.span,
                started: tokio::time::Instant::now(),
                ending: None,
            }),
            wakers,
            proxy,
            subprotocol,
            extensions,
            finished_rx,
            pipeline: PipelineMarks::new(config.pipeline),
            reader_waiting: AtomicBool::new(false),
        })
    }

    #[inline]
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
    #[inline]
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
        self.pipeline.polled(party, result.is_pending());
        if let Party::Reader = party {
            self.reader_waiting
                .store(result.is_pending(), Ordering::Relaxed);
        }
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

    /// Runs `f`, a call that never waits, on the core with the proxy
    /// waker's context: whatever it leaves registered with the I/O wakes
    /// the parties waiting there.
    pub(crate) fn poll_now<R>(&self, f: impl FnOnce(&mut Core, &mut Context<'_>) -> R) -> R {
        let mut io_cx = Context::from_waker(&self.proxy);
        let mut core = self.lock();
        let was_finished = core.state().is_finished();
        let result = f(&mut core, &mut io_cx);
        let now_finished = core.state().is_finished();
        drop(core);
        if now_finished && !was_finished {
            self.wakers.wake_all();
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
                core.flush_notify.notify();
            }
        }
        let timeout = core.close_timeout;
        drop(core);
        self.wakers.wake_all();
        Ok(timeout)
    }

    /// Whether a receive is pending: it will write what is queued when it
    /// finds the input dry.
    #[inline]
    pub(crate) fn reader_waiting(&self) -> bool {
        self.reader_waiting.load(Ordering::Relaxed)
    }

    /// A receive future was dropped: no receive is pending any more.
    #[inline]
    pub(crate) fn reader_gone(&self) {
        self.reader_waiting.store(false, Ordering::Relaxed);
    }

    /// The background task's write of deferred output. Once done, after
    /// our Close (state `CloseSent`): the close timeout, and whether the
    /// background task should read the peer's answer itself (no receive
    /// is pending to see it); `None` in any other state.
    pub(crate) fn poll_write_deferred(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(Duration, bool)>> {
        self.poll_with(cx, Party::KeepAlive, |core, io_cx| {
            ready!(core.poll_write_deferred(io_cx));
            Poll::Ready((core.state() == WebSocketState::CloseSent).then(|| {
                (
                    core.close_timeout,
                    !self.reader_waiting.load(Ordering::Relaxed),
                )
            }))
        })
    }

    /// The background task's read after our Close, for an application
    /// that is not receiving: data is validated and dropped (as
    /// [`WebSocket::close_with`](crate::WebSocket::close_with) does while it
    /// waits) until the peer's Close arrives, which completes the
    /// handshake and finishes the socket. Ready once the socket is
    /// finished, or once a receive is pending again (it reads on).
    pub(crate) fn poll_closing_read(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.reader_waiting.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        self.poll_with(cx, Party::KeepAlive, |core, io_cx| {
            loop {
                if core.state() != WebSocketState::CloseSent {
                    return Poll::Ready(());
                }
                match core.poll_receive(io_cx, Target::Discard) {
                    Poll::Ready(Ok(_)) => {}
                    // The receive failed and ended the socket with its cause.
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
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

    /// A send future was dropped before it completed: keep the stream
    /// whole (see [`Core::cancel_send`]), and let a reader that waited for
    /// that send go on.
    pub(crate) fn send_dropped(&self, payload: Option<&[u8]>, progress: &SendProgress) {
        let mut core = self.lock();
        if let Some(payload) = payload {
            core.cancel_send(payload, progress);
        }
        let ungated = core.reader_gated && core.output_within_bound();
        if ungated {
            core.reader_gated = false;
        }
        drop(core);
        if ungated {
            self.wakers.wake_all();
        }
    }

    /// Whether the socket is closed or aborted.
    pub(crate) fn is_finished(&self) -> bool {
        self.lock().state().is_finished()
    }

    /// The request pipeline completed and left an operation on this
    /// socket waiting that nothing will poll again: close the socket with
    /// 1011 and free its connection (see `socket::pipeline`).
    pub(crate) fn end_unpolled(&self) {
        let mut core = self.lock();
        tracing::warn!(
            parent: &core.span,
            "the request pipeline completed while it was still waiting on its websocket \
             (a timeout inside WebSocketLayer?); closing the socket with 1011"
        );
        core.leave();
        drop(core);
        self.wakers.wake_all();
    }

    /// Aborts the socket and wakes every party waiting on it, so pending
    /// operations on other tasks see the abort at once.
    pub(crate) fn abort(&self) {
        self.lock().abort();
        self.wakers.wake_all();
    }

    /// The peer did not answer our Close in time: abort, waking every
    /// party so pending operations see it.
    pub(crate) fn close_timed_out(&self) -> Error {
        let error = self.lock().close_timed_out();
        self.wakers.wake_all();
        error
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
            // The background task ends when it sees the socket finished.
            self.flush_notify.notify();
            self.count_end();
        }
    }

    /// The socket just ended: count how, and say so in its span.
    #[cold]
    fn count_end(&self) {
        let outcome = self.outcome();
        let mut traffic = self.conn.traffic().get();
        if self.state() == WebSocketState::Closed {
            // A handshake completed by our answer ends here, before the
            // linger task is handed that answer (and counts it): say it.
            traffic.bytes_out += self.conn.buffered_amount() as u64;
        }
        if let Some(counters) = &self.counters {
            counters.closed(outcome);
        }
        tracing::debug!(
            parent: &self.span,
            outcome = outcome.as_str(),
            code = self.close_status().map(CloseCode::as_u16),
            reason = self.close_description(),
            initiator = match self.conn.peer_closed_first() {
                Some(true) => "client",
                Some(false) => "server",
                None => "none",
            },
            duration = ?self.started.elapsed(),
            messages_in = traffic.messages_in,
            messages_out = traffic.messages_out,
            bytes_in = traffic.bytes_in,
            bytes_out = traffic.bytes_out,
            "websocket finished"
        );
    }

    /// How the socket ended, once it has.
    fn outcome(&self) -> Outcome {
        if let Some(outcome) = self.ending {
            return outcome;
        }
        match (&self.terminal, self.state()) {
            (_, WebSocketState::Closed) => Outcome::Clean,
            (Some(Error::Protocol(_)), _) => Outcome::ProtocolError,
            (Some(Error::KeepAliveTimeout), _) => Outcome::KeepAliveTimeout,
            (Some(Error::CloseTimeout), _) => Outcome::CloseTimeout,
            (Some(Error::ConnectionReset | Error::Io(_)), _) => Outcome::ConnectionLost,
            _ => Outcome::Aborted,
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
}
