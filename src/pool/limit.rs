//! A counter with a cap shared by several pools (max_db_connections, max_user_connections).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Pool;

/// Servers open against one cap; `max == 0` means no cap.
#[derive(Default)]
pub(crate) struct Limit {
    max: AtomicUsize,
    used: AtomicUsize,
    /// The pools counted against this cap (to find an idle server to close when it is full).
    members: Mutex<Vec<Weak<Pool>>>,
}

impl Limit {
    /// A cap of `max` servers (0 = none).
    pub(crate) fn new(max: usize) -> Limit {
        Limit {
            max: AtomicUsize::new(max),
            used: AtomicUsize::new(0),
            members: Mutex::new(Vec::new()),
        }
    }

    /// Count `pool` among the pools under this cap.
    pub(crate) fn add_member(&self, pool: &Arc<Pool>) {
        let mut members = self.members.lock();
        members.retain(|w| w.strong_count() > 0); // pools removed since
        members.push(Arc::downgrade(pool));
    }

    /// The pools under this cap.
    pub(crate) fn members(&self) -> Vec<Arc<Pool>> {
        self.members
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Take one unit if under the cap.
    pub(crate) fn try_acquire(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            self.used.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < max).then_some(u + 1)
            })
            .is_ok()
    }

    /// Give one unit back.
    pub(crate) fn release(&self) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1));
    }

    /// Whether the cap is reached.
    pub(crate) fn is_full(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        max != 0 && self.used.load(Ordering::Relaxed) >= max
    }

    /// Change the cap (a reload); servers over a lowered cap close as they are released.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// The cap (0: none).
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Units taken now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a cap is set at all.
    pub(crate) fn is_capped(&self) -> bool {
        self.max.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let l = Limit::new(2);
        assert!(l.try_acquire() && l.try_acquire());
        assert!(!l.try_acquire());
        assert!(l.is_full());
        l.release();
        assert!(l.try_acquire());
        let u = Limit::new(0);
        for _ in 0..100 {
            assert!(u.try_acquire());
        }
        assert!(!u.is_full());
    }
}
