//! A socket's link to the request pipeline that accepted it, so that a
//! pipeline which completes while it still waits on the socket cannot
//! leave the socket frozen.
//!
//! After an accept, [`WebSocketLayer`](crate::WebSocketLayer) polls the
//! inner future (the inner layers and the handler) on a task of its own,
//! and keeps it until the socket is finished (the lifetime rule). A future
//! such as tower's `Timeout` can *complete* while the handler inside it is
//! still waiting on the socket: nothing polls that handler again, so the
//! socket would stop answering (no pong, no close) with its connection
//! open for good.
//!
//! The holding task marks its polls (a thread-local set around each poll
//! of the pipeline's future); a socket operation that has to wait notes,
//! per party, whether it waits inside the pipeline. When the pipeline's
//! future completes and one of its socket's operations is still left
//! waiting inside it, that operation can never run again: the socket is
//! closed with 1011 and its connection freed, which finishes it, and only
//! then does the layer drop the completed future and the guards it holds.
//!
//! A socket handed to another task is left alone: its operations are
//! polled there. The marks are cleared when an operation completes or its
//! future is dropped; for the `Stream` and `Sink`, which have no future of
//! their own, the layer gives a new owner [`HANDOFF_GRACE`] to poll the
//! socket before it decides.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use super::core::{Party, Shared};

/// How long a socket whose pipeline completed with an operation left
/// waiting may wait for another owner to poll it, before it is closed.
const HANDOFF_GRACE: Duration = Duration::from_millis(50);

thread_local! {
    /// The [`PipelineLink::id`] of the pipeline being polled on this
    /// thread, or 0.
    static POLLING: Cell<usize> = const { Cell::new(0) };
}

/// Shared by the layer's holding task and the socket accepted in its
/// request.
#[derive(Debug, Default)]
pub(crate) struct PipelineLink {
    socket: OnceLock<Weak<Shared>>,
}

impl PipelineLink {
    /// A non-zero number that names this pipeline while it lives.
    pub(crate) fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// The socket accepted in this pipeline's request.
    pub(crate) fn attach(&self, socket: &Arc<Shared>) {
        let _ = self.socket.set(Arc::downgrade(socket));
    }

    /// Polls the pipeline's future, so that the socket operations polled
    /// inside it know where they wait.
    #[inline]
    pub(crate) fn poll_in<F: Future + ?Sized>(
        self: &Arc<Self>,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        let _polling = Polling::enter(self.id());
        future.poll(cx)
    }

    /// The pipeline's future completed. If it left one of its socket's
    /// operations waiting inside it, the socket is closed with 1011 and
    /// its connection freed.
    pub(crate) async fn completed(&self) {
        if !self.left_waiting() {
            return;
        }
        // A socket moved to another owner after a `Stream` or `Sink` poll
        // waited here is polled there soon.
        tokio::time::sleep(HANDOFF_GRACE).await;
        if !self.left_waiting() {
            return;
        }
        if let Some(socket) = self.socket.get().and_then(Weak::upgrade) {
            socket.end_unpolled();
        }
    }

    fn left_waiting(&self) -> bool {
        self.socket
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|socket| socket.pipeline.waiting() && !socket.is_finished())
    }
}

/// Marks this thread as polling a pipeline until dropped.
struct Polling {
    previous: usize,
}

impl Polling {
    #[inline]
    fn enter(id: usize) -> Polling {
        Polling {
            previous: POLLING.replace(id),
        }
    }
}

impl Drop for Polling {
    #[inline]
    fn drop(&mut self) {
        POLLING.set(self.previous);
    }
}

/// A socket's side of the link: which parties' operations wait inside the
/// pipeline.
#[derive(Debug, Default)]
pub(crate) struct PipelineMarks {
    /// The pipeline's [`PipelineLink::id`]; 0 for a socket outside any
    /// (from [`WebSocket::from_raw_socket`](crate::WebSocket::from_raw_socket)).
    id: usize,
    /// A bit per [`Party`] whose operation waits inside the pipeline.
    waiting: AtomicUsize,
}

impl PipelineMarks {
    pub(crate) fn new(id: usize) -> PipelineMarks {
        PipelineMarks {
            id,
            waiting: AtomicUsize::new(0),
        }
    }

    /// An operation of `party` was polled: it waits (`pending`) or it is
    /// done.
    #[inline]
    pub(crate) fn polled(&self, party: Party, pending: bool) {
        if self.id == 0 {
            return;
        }
        if pending && POLLING.get() == self.id {
            self.waiting.fetch_or(party.bit(), Ordering::SeqCst);
        } else {
            self.released(party);
        }
    }

    /// An operation of `party` ended (completed or dropped).
    #[inline]
    pub(crate) fn released(&self, party: Party) {
        if self.waiting.load(Ordering::Relaxed) & party.bit() != 0 {
            self.waiting.fetch_and(!party.bit(), Ordering::SeqCst);
        }
    }

    fn waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) != 0
    }
}
