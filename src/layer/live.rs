//! The count of a layer's live sockets, by the lifetime rule: a WebSocket
//! request holds a [`Slot`] from the moment the layer sees it until its
//! socket is finished, or until the handler answers without accepting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared by a layer and every service made from it.
#[derive(Debug, Default)]
pub(crate) struct Live {
    count: AtomicUsize,
}

impl Live {
    /// How many slots are held.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A slot, unless `max` are already held.
    pub(crate) fn try_take(self: &Arc<Self>, max: Option<usize>) -> Option<Slot> {
        let max = max.unwrap_or(usize::MAX);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(self.clone()))
    }
}

/// One socket's place in the count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Live>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let live = Arc::new(Live::default());
        let a = live.try_take(Some(2)).unwrap();
        let _b = live.try_take(Some(2)).unwrap();
        assert!(live.try_take(Some(2)).is_none());
        assert_eq!(live.count(), 2);
        drop(a);
        assert_eq!(live.count(), 1);
        let _c = live.try_take(Some(2)).unwrap();
        assert!(live.try_take(None).is_some());
    }
}
