//! Steering a pool from the admin console and reloads: pause and resume, reconnect, close
//! its servers, and new settings or a new target.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Pool, PoolSettings};
use crate::server::Target;

impl Pool {
    /// Whether PAUSE (or KILL) holds this pool.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Stop handing out servers; close idle ones now and the others as they are released.
    /// Returns at once: see [`Pool::wait_closed`].
    pub(crate) fn pause(self: &Arc<Self>) {
        self.paused.store(true, Ordering::Release);
        self.close_idle("the database is paused", |_| true);
    }

    /// Hand out servers again after PAUSE or KILL.
    pub(crate) fn resume(self: &Arc<Self>) {
        self.paused.store(false, Ordering::Release);
        self.resumed.notify_waiters();
        let mut st = self.state.lock();
        self.grant_slots(&mut st);
    }

    /// RECONNECT: close every server once it is released (idle ones now); new ones connect
    /// as needed.
    pub fn reconnect(self: &Arc<Self>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.close_idle("RECONNECT or a reload changed where servers go", |p| {
            p.0.close_needed(&p.1.info)
        });
    }

    /// Close the idle servers `pick` chooses.
    fn close_idle(
        self: &Arc<Self>,
        reason: &str,
        pick: impl Fn((&Pool, &crate::server::Server)) -> bool,
    ) {
        let victims: Vec<_> = {
            let mut st = self.state.lock();
            let (go, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut st.idle)
                .into_iter()
                .partition(|s| pick((self, s)));
            st.idle = keep;
            go
        };
        for s in victims {
            self.close_idle_server(s, reason);
        }
    }

    /// Servers open (connected or logging in).
    pub(crate) fn open_servers(&self) -> usize {
        self.state.lock().open
    }

    /// Wait until the pool has no server left (after PAUSE or KILL), or until `cond` says
    /// to stop waiting.
    pub(crate) async fn wait_until(&self, cond: impl Fn(&Pool) -> bool) {
        while !cond(self) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a server still waits to be closed by RECONNECT or a reload (WAIT_CLOSE).
    pub(crate) fn has_close_needed(&self) -> bool {
        self.servers
            .lock()
            .values()
            .any(|info| self.close_needed(info))
    }

    /// Apply new settings and target (a reload or SET). A new target closes the servers of
    /// the old one as they are released.
    pub(crate) fn reconfigure(self: &Arc<Self>, mut settings: PoolSettings, target: Target) {
        let old = self.settings();
        if old.mode_label == settings.mode_label {
            settings.hist = old.hist.clone();
        }
        drop(old);
        let moved = {
            let t = self.target.load();
            t.hosts != target.hosts
                || t.session_attrs != target.session_attrs
                || t.dbname != target.dbname
                || t.user != target.user
                || match (&t.secret, &target.secret) {
                    (Some(a), Some(b)) => !a.same_as(b),
                    (a, b) => a.is_some() != b.is_some(),
                }
        };
        let old = self.settings.swap(Arc::new(settings));
        // After the store: a client that sees the flag reads the new settings.
        old.replaced.0.store(true, Ordering::Release);
        self.target.store(Arc::new(target));
        if moved {
            self.reconnect();
            // The new server's parameters are not the old one's: the next login asks it.
            *self.welcome.lock() = None;
        }
        // A larger pool serves its waiters now.
        let mut st = self.state.lock();
        self.grant_slots(&mut st);
    }
}
