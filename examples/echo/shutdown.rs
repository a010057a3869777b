//! Ctrl-C for the sample: stop accepting, let HTTP requests in flight
//! finish, close open sockets with 1001 (going away) and wait for all of
//! that.
//!
//! The registry here ([`Shutdown`], [`ShutdownWatch`]) stands in until the
//! library has a drain handle of its own: today a server that wants to
//! close its sockets on shutdown keeps their [`WebSocketHandle`]s itself,
//! as this module does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tower_websockets::{CloseCode, WebSocket, WebSocketHandle};

/// The reason of the Close frame sockets get on shutdown.
pub(crate) const GOING_AWAY_REASON: &str = "server is shutting down";

/// Resolves on Ctrl-C; never, if the signal handler cannot be installed.
pub(crate) async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::warn!(%error, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

/// Graceful shutdown for HTTP connections *and* the sockets they were
/// upgraded to.
///
/// Every connection task and every socket holds a [`ShutdownWatch`];
/// [`shutdown`](Self::shutdown) tells them all to stop and waits until they
/// have all been dropped. hyper-util's `GracefulShutdown` works the same
/// way, but it only watches hyper connections, and a connection's future
/// completes as soon as it is upgraded: it cannot wait for WebSockets.
pub(crate) struct Shutdown {
    tx: watch::Sender<()>,
    running: Arc<Mutex<Running>>,
}

/// A [`Shutdown`]'s signal, held for as long as there is work to finish.
#[derive(Clone)]
pub(crate) struct ShutdownWatch {
    rx: watch::Receiver<()>,
    running: Arc<Mutex<Running>>,
}

/// The sockets [`ShutdownWatch::register`] registered, to close on
/// shutdown.
#[derive(Default)]
struct Running {
    stopping: bool,
    next_id: u64,
    sockets: HashMap<u64, WebSocketHandle>,
}

impl Shutdown {
    pub(crate) fn new() -> Self {
        Shutdown {
            tx: watch::Sender::new(()),
            running: Arc::default(),
        }
    }

    pub(crate) fn watcher(&self) -> ShutdownWatch {
        ShutdownWatch {
            rx: self.tx.subscribe(),
            running: self.running.clone(),
        }
    }

    /// Signals every watcher and waits at most `grace` for all of them to be
    /// dropped; returns how many are left.
    pub(crate) async fn shutdown(self, grace: Duration) -> usize {
        let sockets: Vec<WebSocketHandle> = {
            let mut running = lock(&self.running);
            running.stopping = true;
            running.sockets.drain().map(|(_, socket)| socket).collect()
        };
        // Each socket's own loop sees the client's answering Close and
        // ends; a client that does not answer is cut off after the close
        // timeout.
        for socket in sockets {
            tokio::spawn(async move {
                let _ = socket.close(CloseCode::GOING_AWAY, GOING_AWAY_REASON).await;
            });
        }
        self.tx.send_replace(());
        let _ = tokio::time::timeout(grace, self.tx.closed()).await;
        self.tx.receiver_count()
    }
}

impl ShutdownWatch {
    /// Resolves once shutdown is requested.
    pub(crate) async fn requested(&mut self) {
        // An error means the `Shutdown` is gone, which also means stop.
        let _ = self.rx.changed().await;
    }

    /// Registers `socket` to be closed on shutdown, for as long as the
    /// returned guard lives; `None` if shutdown has begun.
    ///
    /// The socket is closed through its [`WebSocketHandle`], so the echo
    /// loop needs no shutdown signal of its own: a `select!` against
    /// [`requested`](Self::requested) would poll the watch again whenever
    /// the loop waits, once per message, and an `Abortable` would register
    /// a waker each time.
    pub(crate) fn register(&self, socket: &WebSocket) -> Option<Registered<'_>> {
        let mut running = lock(&self.running);
        if running.stopping {
            return None;
        }
        let id = running.next_id;
        running.next_id += 1;
        running.sockets.insert(id, socket.handle());
        Some(Registered {
            running: &self.running,
            id,
        })
    }
}

/// Forgets a registered socket once its loop has ended.
pub(crate) struct Registered<'a> {
    running: &'a Mutex<Running>,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.running).sockets.remove(&self.id);
    }
}

fn lock(running: &Mutex<Running>) -> MutexGuard<'_, Running> {
    // Nothing panics while holding the lock; a poisoned one is still usable.
    running.lock().unwrap_or_else(PoisonError::into_inner)
}
