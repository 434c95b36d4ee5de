//! The waiters' clock: one timer per pool, not one per waiter, ends the waits that pass
//! query_wait_timeout.
//!
//! A waiter's deadline is fixed when it joins the queue. The clock is a task that sleeps
//! until the earliest deadline it knows of, then fails every waiter past its deadline (a
//! [`Grant::Expired`] through its channel) and sleeps until the next one. Under steady load,
//! where the queue never empties, it wakes about once per query_wait_timeout, however many
//! clients wait; a waiter itself arms no timer (a timer's insertion into and removal from
//! tokio's wheel was about a twentieth of a waiting transaction's user time). The task ends
//! when no waiter with a deadline is left, and the next one to join starts it again.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Grant, Pool, State};

/// One client waiting for a server.
pub(super) struct Waiter {
    pub id: u64,
    pub tx: oneshot::Sender<Grant>,
    /// When its request began (SHOW POOLS' maxwait).
    pub since: Instant,
    /// When it fails with query_wait_timeout (`None`: it waits as long as it takes).
    pub deadline: Option<Instant>,
}

/// The clock's part of a pool's state.
#[derive(Default)]
pub(super) struct Clock {
    /// The deadline the clock task sleeps until, while one runs.
    at: Option<Instant>,
    /// Tells a sleeping clock that an earlier deadline came (a reload shortened the timeout).
    sooner: Arc<tokio::sync::Notify>,
}

impl Pool {
    /// Make sure the clock will wake by `deadline` (a waiter with it just joined; under the
    /// lock). Starts the clock task when none runs.
    pub(super) fn arm_clock(self: &Arc<Self>, st: &mut State, deadline: Instant) {
        match st.clock.at {
            Some(at) if at <= deadline => {}
            Some(_) => {
                st.clock.at = Some(deadline);
                st.clock.sooner.notify_one();
            }
            None => {
                st.clock.at = Some(deadline);
                let sooner = st.clock.sooner.clone();
                tokio::spawn(run(Arc::downgrade(self), sooner, deadline));
            }
        }
    }
}

impl State {
    /// Take the waiters past their deadline at `now` out of the queue (and those that left);
    /// returns their channels and the next deadline, if a waiter has one.
    fn take_expired_waiters(
        &mut self,
        now: Instant,
    ) -> (Vec<oneshot::Sender<Grant>>, Option<Instant>) {
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            if w.tx.is_closed() {
                continue;
            }
            match w.deadline {
                Some(d) if d <= now => expired.push(w.tx),
                Some(d) => {
                    next = Some(next.map_or(d, |n| n.min(d)));
                    self.waiters.push_back(w);
                }
                None => self.waiters.push_back(w),
            }
        }
        (expired, next)
    }
}

/// The clock task of one pool (see the module docs), first to wake at `at`. It ends where
/// it finds no deadline left, under the lock: the next waiter to join starts another.
async fn run(pool: Weak<Pool>, sooner: Arc<tokio::sync::Notify>, mut at: Instant) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = sooner.notified() => {
                match pool.upgrade().and_then(|p| p.state.lock().clock.at) {
                    Some(earlier) => at = earlier,
                    None => return,
                }
                continue;
            }
        }
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let (expired, next) = {
            let mut st = pool.state.lock();
            let (expired, next) = st.take_expired_waiters(Instant::now());
            st.clock.at = next;
            (expired, next)
        };
        for tx in expired {
            let _ = tx.send(Grant::Expired);
        }
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
}
