//! The wakers of everyone waiting on a socket's I/O, behind one proxy
//! waker: a reader's poll can never steal a writer's (or the keep-alive
//! timer's) wakeup, and a wake reaches only the parties that registered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A send's request that the socket's background task write the queued
/// output: a flag and the task's waker. Cheaper than a `Notify` (which
/// locks its list of waiters on every wake), and a request made while one
/// is pending wakes no one: a broadcaster's messages to a socket cost one
/// wake-up per batch the task writes, not one per message.
#[derive(Debug, Default)]
pub(crate) struct FlushSignal {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl FlushSignal {
    /// Asks the task to write; wakes it unless a request is pending.
    #[inline]
    pub(crate) fn notify(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Ready once a write was asked for since the last time it was.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.requested.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A request between the check and the registration found no
        // waker to wake: look again.
        if self.requested.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

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
    pub(crate) fn bit(self) -> usize {
        match self {
            Party::Reader => 0b001,
            Party::Writer => 0b010,
            Party::KeepAlive => 0b100,
        }
    }
}

impl Wakers {
    /// The count of wakes so far, for [`registered`](Self::registered).
    #[inline]
    pub(super) fn epoch(&self) -> usize {
        self.state.load(Ordering::SeqCst) & !PARTIES
    }

    /// Registers `waker` for `party`, after a poll that began at `epoch`
    /// found it must wait. Returns whether a wake came since `epoch`,
    /// which may have missed the new waker.
    ///
    /// The mark is a read-modify-write: if it comes before a `wake_all`'s,
    /// that `wake_all` sees the mark and wakes the waker registered before
    /// it; if after, it sees that `wake_all`'s count.
    #[inline]
    pub(super) fn registered(&self, party: Party, waker: &Waker, epoch: usize) -> bool {
        match party {
            Party::Reader => self.reader.register(waker),
            Party::Writer => self.writer.register(waker),
            Party::KeepAlive => self.keep_alive.register(waker),
        }
        let before = self.state.fetch_or(party.bit(), Ordering::SeqCst);
        before & !PARTIES != epoch
    }

    pub(super) fn wake_all(&self) {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use tokio::sync::watch;

    use super::*;
    use crate::WebSocketOptions;
    use crate::socket::core::{CoreConfig, Shared};
    use crate::socket::transport::Transport;

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
                flush_notify: Arc::default(),
                limits: config.limits,
                receive_buffer_size: config.receive_buffer_size,
                close_timeout: config.close_timeout,
                max_buffered: config.max_buffered_amount,
                compression: None,
                pipeline: 0,
                counters: None,
                traffic: Arc::default(),
                span: tracing::Span::none(),
            },
            None,
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
}
