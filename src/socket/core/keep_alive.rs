//! Keep-alive and the socket's background task: the timer's ping, the
//! check that a peer answered it (which reads on the application's behalf,
//! so that an application not currently receiving does not make a live
//! peer look dead), and the safety net that writes coalesced output.

use std::future::poll_fn;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::error::Error;
use crate::socket::message::WebSocketState;

/// What woke the background task.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A send left output for this task to write, or the socket finished.
    Notified,
    /// The deferred output is written (or nothing is left to write);
    /// after our Close, the close timeout and whether this task reads the
    /// peer's answer.
    Written(Option<(Duration, bool)>),
    /// The read after our Close saw the socket finish, or a receive is
    /// pending again.
    ClosingReadDone,
    /// The peer did not answer our Close in time.
    CloseTimeout,
    /// Time for a keep-alive ping.
    Tick,
    /// The keep-alive timeout after a ping expired.
    Check,
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

impl Core {
    /// The keep-alive timer's tick: queue a ping and try to write it;
    /// `check` starts the liveness check from this ping (no earlier ping
    /// awaits one). Returns whether the socket is still open.
    pub(crate) fn poll_keep_alive(&mut self, cx: &mut Context<'_>, check: bool) -> Poll<bool> {
        if self.state() != WebSocketState::Open {
            return Poll::Ready(false);
        }
        self.conn.queue_ping();
        if check {
            self.ping_epoch = self.read_epoch;
            self.ping_write_epoch = self.write_epoch;
        }
        let _ = self.try_write_control(cx);
        Poll::Ready(self.state() == WebSocketState::Open)
    }

    /// Whether the peer showed any sign of life since the last ping.
    ///
    /// A peer that read none of the output waiting for it since the ping
    /// is dead, whatever it sent: it stopped reading. Otherwise any input
    /// since the ping is an answer. If nothing was read since, read now: an
    /// application that is busy and not receiving leaves the peer's pong
    /// unread in the kernel, and that must not count as silence (ASP.NET's
    /// false timeouts). What is read stays buffered for the application, in
    /// order. With nothing to read, the peer is still given the benefit of
    /// the doubt while our ping waits behind output it is reading.
    ///
    /// Returns the verdict and whether bytes were read here.
    pub(super) fn check_alive(&mut self, cx: &mut Context<'_>) -> (Liveness, bool) {
        if self.state() != WebSocketState::Open {
            return (Liveness::Alive, false);
        }
        let waiting = self.conn.buffered_amount() > 0;
        if waiting && self.write_epoch == self.ping_write_epoch {
            tracing::debug!(parent: &self.span, "websocket keep-alive timeout: the peer stopped reading");
            self.abort_with(Error::KeepAliveTimeout);
            return (Liveness::Dead, false);
        }
        if self.read_epoch != self.ping_epoch || self.rbuf.len() >= KEEP_ALIVE_READ_CAP {
            // An answer came, or the peer sent more than the application
            // has read.
            return (Liveness::Alive, false);
        }
        match self.poll_fill(cx) {
            Poll::Ready(Ok(())) => (Liveness::Alive, true),
            // The read failed and aborted the socket with its cause.
            Poll::Ready(Err(_)) => (Liveness::Dead, false),
            // Our ping is not out yet, and the peer is reading what is
            // ahead of it.
            Poll::Pending if waiting => (Liveness::Alive, false),
            Poll::Pending => {
                tracing::debug!(parent: &self.span, "websocket keep-alive timeout: no answer to ping");
                self.abort_with(Error::KeepAliveTimeout);
                (Liveness::Dead, false)
            }
        }
    }
}

/// The socket's background task, off the data path:
///
/// - keep-alive: sends a ping every `interval` while the socket is open
///   (ASP.NET `KeepAliveInterval`) and, with a `timeout`, aborts a peer
///   that stays silent that long after a ping (`KeepAliveTimeout`);
/// - the safety net of write coalescing: when a send left its bytes queued
///   because more input was buffered, and the application does not read
///   again before this task runs, it writes them;
/// - the end of a close we started: once our Close is out, the peer's
///   answer must come within the close timeout (or the socket is
///   aborted), and if no receive is pending to see it, this task reads it
///   (dropping data that comes first), so a close from a handle or the
///   writer half completes in one round trip while the application does
///   not receive.
///
/// It holds only a weak reference to the socket, sleeps between events,
/// and ends when the socket is finished or dropped.
pub(crate) fn spawn_background(
    shared: Weak<Shared>,
    finished: watch::Receiver<bool>,
    flush: Arc<FlushSignal>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime: websocket keep-alive and deferred writes disabled");
        return;
    };
    runtime.spawn(async move {
        // The timers live across events (one made per wake-up would cost
        // more than the write it wakes for, and a broadcast wakes this task
        // once per batch of messages), and each is polled only when armed
        // and elapsed, or not yet registered: the task's waker stays
        // registered with a timer until it fires.
        let mut ticker = interval.map(|interval| (interval, Timer::at(Instant::now() + interval)));
        let mut check: Option<Timer> = None;
        let mut close: Option<Timer> = None;
        // Deferred output is being written (the peer's window was full).
        let mut flushing = false;
        // After our Close: the deadline for the peer's, and whether this
        // task reads it.
        let mut closing_read = false;
        // Flush events in a row: after a run of them the deadlines are
        // looked at first, so a busy stream of writes cannot hold back the
        // keep-alive check or the close timeout, while the common wake-up
        // (a write) is served without polling the timers.
        let mut streak = 0u8;
        loop {
            let deadlines_first = streak >= 16;
            let event = poll_fn(|cx| {
                if !deadlines_first
                    && let Poll::Ready(event) =
                        poll_flush(cx, &shared, &mut flushing, &flush, &finished)
                {
                    return Poll::Ready(event);
                }
                if let Some(close) = close.as_mut()
                    && close.poll(cx).is_ready()
                {
                    return Poll::Ready(Event::CloseTimeout);
                }
                if let Some(check) = check.as_mut()
                    && check.poll(cx).is_ready()
                {
                    return Poll::Ready(Event::Check);
                }
                if let Some((_, ticker)) = ticker.as_mut()
                    && ticker.poll(cx).is_ready()
                {
                    return Poll::Ready(Event::Tick);
                }
                if closing_read {
                    let done = match shared.upgrade() {
                        Some(strong) => strong.poll_closing_read(cx),
                        None => Poll::Ready(()),
                    };
                    if done.is_ready() {
                        return Poll::Ready(Event::ClosingReadDone);
                    }
                }
                if deadlines_first {
                    return poll_flush(cx, &shared, &mut flushing, &flush, &finished);
                }
                Poll::Pending
            })
            .await;
            streak = match event {
                Event::Notified | Event::Written(_) => streak.saturating_add(1),
                _ => 0,
            };
            if deadlines_first {
                streak = 0;
            }
            if let Event::Written(closing) = event {
                // The common event, handled without the socket itself.
                flushing = false;
                if *finished.borrow() || shared.strong_count() == 0 {
                    return;
                }
                if let Some((timeout, read)) = closing {
                    close.get_or_insert_with(|| Timer::at(Instant::now() + timeout));
                    closing_read = read;
                }
                continue;
            }
            let Some(strong) = shared.upgrade() else {
                return;
            };
            match event {
                Event::Notified => {
                    // Also how the socket's end is told.
                    if *finished.borrow() {
                        return;
                    }
                    if !strong.reader_waiting() {
                        // The application's task may be about to receive
                        // again: let it run first, and it writes the queue
                        // itself. A receive already waiting will not (a
                        // handle's sends to a member that only listens).
                        drop(strong);
                        tokio::task::yield_now().await;
                    }
                    flushing = true;
                }
                // Handled above.
                Event::Written(_) => {}
                Event::ClosingReadDone => closing_read = false,
                Event::CloseTimeout => {
                    if !strong.is_finished() {
                        let _ = strong.close_timed_out();
                    }
                    return;
                }
                // Pings go out on every tick; the check runs from the
                // oldest ping it has not judged yet, so a timeout longer
                // than the interval does not space out the pings.
                Event::Tick => {
                    if let Some((interval, ticker)) = ticker.as_mut() {
                        // A tick missed while the task was busy is not
                        // made up for: the next one is an interval away.
                        ticker.reset(Instant::now() + *interval);
                    }
                    let first = check.is_none();
                    let open = poll_fn(|cx| {
                        strong.poll_with(cx, Party::KeepAlive, |core, io_cx| {
                            core.poll_keep_alive(io_cx, first)
                        })
                    })
                    .await;
                    if !open {
                        // Closing or finished: no more pings (the close
                        // has its own deadline).
                        ticker = None;
                        check = None;
                        continue;
                    }
                    if first && let Some(timeout) = timeout {
                        check = Some(Timer::at(Instant::now() + timeout));
                    }
                }
                Event::Check => {
                    check = None;
                    if strong.check_keep_alive() == Liveness::Dead {
                        return;
                    }
                }
            }
        }
    });
}

/// The background task's write events: the deferred output written
/// (while `flushing`: a poll of its own, not a wait inside an event, so
/// that a peer that does not read does not stop the timers), or a send's
/// request to write. A request for a socket whose receive is waiting is
/// written in the same poll (the receive would not write it, and this is
/// a broadcaster's every message); any other request, and the socket's
/// end, come back as [`Event::Notified`].
fn poll_flush(
    cx: &mut Context<'_>,
    shared: &Weak<Shared>,
    flushing: &mut bool,
    flush: &FlushSignal,
    finished: &watch::Receiver<bool>,
) -> Poll<Event> {
    if !*flushing {
        ready!(flush.poll(cx));
    }
    let Some(strong) = shared.upgrade() else {
        return Poll::Ready(Event::Written(None));
    };
    if !*flushing {
        if !strong.reader_waiting() || *finished.borrow() {
            return Poll::Ready(Event::Notified);
        }
        *flushing = true;
    }
    strong.poll_write_deferred(cx).map(Event::Written)
}

/// One of the background task's deadlines: a `Sleep` polled only when it
/// has elapsed or its waker is not registered yet (a poll that finds it
/// pending costs more than the check).
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    registered: bool,
}

impl Timer {
    fn at(deadline: Instant) -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            registered: false,
        }
    }

    fn reset(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.registered = false;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        let poll = self.sleep.as_mut().poll(cx);
        self.registered = poll.is_pending();
        poll
    }
}
