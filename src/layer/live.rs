//! A layer's live sockets, by the lifetime rule: a WebSocket request holds
//! a [`Slot`] from the moment the layer sees it until its socket is
//! finished, or until the handler answers without accepting. The registry
//! behind the slots caps them, reaches every open socket for a drain, and
//! keeps the counters of [`WebSocketStats`].

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use http::HeaderValue;
use slab::Slab;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::drain::{DrainOptions, DrainReport};
use crate::protocol::CloseCode;
use crate::socket::Shared;
use crate::stats::{self, Counters, Traffic, TrafficStats, WebSocketStats};

/// Shared by a layer, every service made from it, its drain handles and
/// the sockets it accepted.
#[derive(Debug, Default)]
pub(crate) struct Live {
    registry: Mutex<Registry>,
    /// Woken when the last slot is given back during a drain.
    idle: Notify,
    pub(crate) counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Registry {
    slots: Slab<Entry>,
    /// Tells a slot from a later one that reuses its key.
    next_id: u64,
    stage: Stage,
    /// The traffic of the sockets whose slot was given back.
    finished: TrafficStats,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    /// The socket, once accepted, and its traffic counters.
    socket: Option<(Weak<Shared>, Arc<Traffic>)>,
}

/// Where a drain stands.
#[derive(Debug, Default)]
enum Stage {
    #[default]
    Running,
    /// Upgrades are refused; open sockets were sent our Close, and sockets
    /// accepted from now on are closed at once.
    Closing {
        reason: Arc<str>,
        retry_after: Option<HeaderValue>,
    },
    /// The deadline passed: sockets accepted from now on are aborted.
    Aborted { retry_after: Option<HeaderValue> },
}

impl Stage {
    fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            Stage::Running => None,
            Stage::Closing { retry_after, .. } | Stage::Aborted { retry_after } => {
                retry_after.clone()
            }
        }
    }
}

/// Why [`Live::try_take`] gave no slot.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// At the cap.
    Capacity,
    /// Draining, with the `Retry-After` to answer with.
    Draining(Option<HeaderValue>),
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock; a poisoned one is usable.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many slots are held.
    pub(crate) fn count(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether a drain has started.
    pub(crate) fn is_draining(&self) -> bool {
        !matches!(self.lock().stage, Stage::Running)
    }

    /// A slot, unless `max` are already held or the layer is draining.
    pub(crate) fn try_take(self: &Arc<Self>, max: Option<usize>) -> Result<Slot, Refusal> {
        let mut registry = self.lock();
        if !matches!(registry.stage, Stage::Running) {
            return Err(Refusal::Draining(registry.stage.retry_after()));
        }
        if max.is_some_and(|max| registry.slots.len() >= max) {
            return Err(Refusal::Capacity);
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let key = registry.slots.insert(Entry { id, socket: None });
        Ok(Slot(Registration {
            live: self.clone(),
            key,
            id,
        }))
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> WebSocketStats {
        let registry = self.lock();
        let live = registry
            .slots
            .iter()
            .filter_map(|(_, entry)| entry.socket.as_ref());
        let traffic = stats::sum(registry.finished, live.map(|(_, traffic)| &**traffic));
        self.counters.snapshot(registry.slots.len(), traffic)
    }

    /// Gives a slot back.
    fn release(&self, key: usize, id: u64) {
        let mut registry = self.lock();
        if registry.slots.get(key).is_none_or(|entry| entry.id != id) {
            return;
        }
        let entry = registry.slots.remove(key);
        match &entry.socket {
            Some((_, traffic)) => stats::retire(&mut registry.finished, traffic),
            None => self.counters.not_accepted(),
        }
        let idle = registry.slots.is_empty() && !matches!(registry.stage, Stage::Running);
        drop(registry);
        if idle {
            self.idle.notify_waiters();
        }
    }

    /// Starts draining (unless a drain has started already) and waits
    /// until every slot is given back or `options.deadline` passes; then
    /// aborts the sockets still open.
    pub(crate) async fn drain(&self, options: &DrainOptions) -> DrainReport {
        let started = Instant::now();
        let (sockets, to_close, reason) = {
            let mut registry = self.lock();
            let sockets = registry.slots.len();
            match registry.stage {
                Stage::Running => {
                    let reason: Arc<str> = Arc::from(&*options.reason);
                    registry.stage = Stage::Closing {
                        reason: reason.clone(),
                        retry_after: options.retry_after_header(),
                    };
                    (sockets, open_sockets(&registry), Some(reason))
                }
                _ => (sockets, Vec::new(), None),
            }
        };
        if let Some(reason) = reason {
            tracing::debug!(
                sockets,
                deadline = ?options.deadline,
                "websocket drain started"
            );
            for socket in to_close {
                close_going_away(&socket, &reason);
            }
        }

        let deadline = started + options.deadline;
        loop {
            let mut idle = pin!(self.idle.notified());
            idle.as_mut().enable();
            if self.count() == 0 {
                let report = DrainReport {
                    sockets,
                    closed: sockets,
                    aborted: 0,
                    unfinished: 0,
                    elapsed: started.elapsed(),
                };
                tracing::debug!(?report, "websocket drain complete");
                return report;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }

        let (remaining, to_abort) = {
            let mut registry = self.lock();
            let retry_after = registry.stage.retry_after();
            registry.stage = Stage::Aborted { retry_after };
            (registry.slots.len(), open_sockets(&registry))
        };
        let mut aborted = 0;
        for socket in to_abort {
            if let Some(socket) = socket.upgrade()
                && !socket.is_finished()
            {
                socket.abort();
                aborted += 1;
            }
        }
        let report = DrainReport {
            sockets,
            closed: sockets.saturating_sub(remaining),
            aborted,
            unfinished: remaining.saturating_sub(aborted),
            elapsed: started.elapsed(),
        };
        tracing::debug!(?report, "websocket drain deadline passed; the rest aborted");
        report
    }
}

/// The accepted sockets of the slots held.
fn open_sockets(registry: &Registry) -> Vec<Weak<Shared>> {
    registry
        .slots
        .iter()
        .filter_map(|(_, entry)| entry.socket.as_ref().map(|(socket, _)| socket.clone()))
        .collect()
}

fn close_going_away(socket: &Weak<Shared>, reason: &str) {
    if let Some(socket) = socket.upgrade() {
        // An error means it is finished already.
        let _ = socket.close_from_handle(Some(CloseCode::GOING_AWAY), reason);
    }
}

/// One request's place in the count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Registration);

impl Slot {
    /// What the socket accepted in this request registers with.
    pub(crate) fn registration(&self) -> Registration {
        Registration {
            live: self.0.live.clone(),
            key: self.0.key,
            id: self.0.id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.release(self.0.key, self.0.id);
    }
}

/// Names a held slot, for the socket accepted in its request.
#[derive(Debug)]
pub(crate) struct Registration {
    live: Arc<Live>,
    key: usize,
    id: u64,
}

impl Registration {
    /// The layer's counters, for the socket to count how it ends.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.live.counters.clone()
    }

    /// The request's socket was accepted: a drain can reach it now. If a
    /// drain started meanwhile, the socket is closed (or, past the drain's
    /// deadline, aborted) at once.
    pub(crate) fn attach(&self, socket: &Arc<Shared>, traffic: Arc<Traffic>) {
        let mut registry = self.live.lock();
        let Some(entry) = registry.slots.get_mut(self.key).filter(|e| e.id == self.id) else {
            return;
        };
        entry.socket = Some((Arc::downgrade(socket), traffic));
        self.live.counters.accepted();
        let reason = match &registry.stage {
            Stage::Running => return,
            Stage::Closing { reason, .. } => Some(reason.clone()),
            Stage::Aborted { .. } => None,
        };
        drop(registry);
        match reason {
            Some(reason) => close_going_away(&Arc::downgrade(socket), &reason),
            None => socket.abort(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let live = Arc::new(Live::default());
        let a = live.try_take(Some(2)).unwrap();
        let _b = live.try_take(Some(2)).unwrap();
        assert!(matches!(live.try_take(Some(2)), Err(Refusal::Capacity)));
        assert_eq!(live.count(), 2);
        drop(a);
        assert_eq!(live.count(), 1);
        let _c = live.try_take(Some(2)).unwrap();
        assert!(live.try_take(None).is_ok());
        // None of the four was accepted.
        drop((_b, _c));
        assert_eq!(live.stats().not_accepted, 4);
        assert_eq!(live.stats().live, 0);
    }

    #[test]
    fn a_reused_key_is_not_released_by_an_old_registration() {
        let live = Arc::new(Live::default());
        let a = live.try_take(None).unwrap();
        let old = a.registration();
        drop(a);
        let b = live.try_take(None).unwrap();
        assert_eq!(b.registration().key, old.key);
        live.release(old.key, old.id);
        assert_eq!(live.count(), 1);
    }

    #[tokio::test]
    async fn a_drain_refuses_new_slots_and_waits_for_the_held_ones() {
        let live = Arc::new(Live::default());
        let slot = live.try_take(None).unwrap();
        let drain = {
            let live = live.clone();
            tokio::spawn(async move { live.drain(&DrainOptions::new()).await })
        };
        while !live.is_draining() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(live.try_take(None), Err(Refusal::Draining(None))));
        drop(slot);
        let report = drain.await.unwrap();
        assert_eq!((report.sockets, report.closed, report.aborted), (1, 1, 0));
        assert!(report.is_clean());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_reports_what_was_left_at_its_deadline() {
        let live = Arc::new(Live::default());
        let _held = live.try_take(None).unwrap();
        let options = DrainOptions::new().deadline(Duration::from_secs(3));
        let report = live.drain(&options).await;
        assert_eq!(report.sockets, 1);
        assert_eq!(
            (report.closed, report.aborted, report.unfinished),
            (0, 0, 1)
        );
        assert!(report.elapsed >= Duration::from_secs(3));
        assert!(!report.is_clean());
    }
}
