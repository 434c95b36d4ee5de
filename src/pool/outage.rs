//! Holding clients through a database outage: while no server can be opened, clients wait in
//! the queue and one retrier per pool tries again with a growing backoff.
//!
//! A connect that fails for a reason that passes (refused, reset, a timeout, Postgres starting
//! up or shutting down, too many connections) puts the pool in an outage: the client that
//! tried goes back to the front of the queue, nobody else opens a server, and a retrier task
//! tries every `backoff` (from `FIRST_BACKOFF`, doubling up to `server_login_retry`). Its first
//! server goes to the oldest waiter and ends the outage; the others get room to open theirs
//! at once. Waiters give up only at their own `query_wait_timeout`, told the last connect
//! error. A failure that is the configuration's (a wrong password, a missing role or
//! database) is not an outage: the client that met it gets it at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pool;
use crate::error::{CheckoutError, ConnectError, Error};
use crate::server::Server;

/// The retrier's first wait.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// A pool that cannot open servers now.
pub(super) struct Outage {
    since: Instant,
    /// What the last attempt said, for the clients who give up waiting.
    pub(super) last_error: Arc<str>,
    backoff: Duration,
}

/// Whether a failed connect is an outage (it may work if tried again) rather than a
/// configuration error (it will fail the same way).
pub fn passes(e: &Error) -> bool {
    e.passes()
}

impl Pool {
    /// A connect failed with `e`. Returns whether it is an outage: the pool then holds its
    /// clients and retries (a retrier starts if none runs), and idle servers that died with
    /// the database are dropped now, so nobody is handed one.
    pub(super) fn connect_failed(self: &Arc<Self>, e: &ConnectError) -> bool {
        if !e.passes() {
            return false;
        }
        let start = {
            let mut st = self.state.lock();
            let last_error: Arc<str> = e.to_string().into();
            match &mut st.outage {
                Some(o) => {
                    o.last_error = last_error;
                    false
                }
                None => {
                    st.outage = Some(Outage {
                        since: Instant::now(),
                        last_error,
                        backoff: FIRST_BACKOFF,
                    });
                    true
                }
            }
        };
        if start {
            tracing::warn!(db = %self.database, user = %self.user,
                "cannot open servers ({e}): clients wait, retrying");
            self.stats
                .outages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let pool = self.clone();
            tokio::spawn(async move { pool.retry_connects().await });
        }
        self.drop_dead_idle();
        true
    }

    /// Whether the pool is in an outage now.
    pub fn in_outage(&self) -> bool {
        self.state.lock().outage.is_some()
    }

    /// Close idle servers whose connection is gone (a restart closes them all at once).
    pub(crate) fn drop_dead_idle(self: &Arc<Self>) {
        let dead: Vec<Box<Server>> = {
            let mut st = self.state.lock();
            let (mut dead, mut keep) = (Vec::new(), Vec::with_capacity(st.idle.len()));
            for mut s in std::mem::take(&mut st.idle) {
                if s.looks_alive() {
                    keep.push(s);
                } else {
                    dead.push(s);
                }
            }
            st.idle = keep;
            dead
        };
        for s in dead {
            self.close_idle_server(s, "closed by the server while idle");
        }
    }

    /// The retrier: one per outage. Tries to open a server every backoff while clients wait;
    /// its first server goes to the oldest waiter and ends the outage.
    async fn retry_connects(self: Arc<Self>) {
        loop {
            let wait = match &self.state.lock().outage {
                Some(o) => o.backoff,
                None => return,
            };
            tokio::time::sleep(wait).await;
            if self.is_paused() {
                continue; // RESUME grants what is owed
            }
            let slot = {
                let pool_size = self.settings().pool_size;
                let mut st = self.state.lock();
                st.prune();
                // Nobody waits (they gave up, or servers came back through releases), or
                // the pool is full of servers in use: no server is needed now. A client
                // that needs one later tries for itself.
                match (!st.waiters.is_empty())
                    .then(|| self.take_room(&mut st, pool_size))
                    .flatten()
                {
                    Some(slot) => slot,
                    None => {
                        st.outage = None;
                        self.grant_slots(&mut st);
                        return;
                    }
                }
            };
            match slot.open(false).await {
                Ok(s) => {
                    let since = {
                        let mut st = self.state.lock();
                        st.outage.take().map(|o| o.since)
                    };
                    tracing::info!(db = %self.database, user = %self.user,
                        "servers open again after {:?}", since.map(|s| s.elapsed()).unwrap_or_default());
                    s.release();
                    let mut st = self.state.lock();
                    self.grant_slots(&mut st);
                    return;
                }
                Err(e) => {
                    let mut st = self.state.lock();
                    let cap = self.settings().server_login_retry;
                    match (&mut st.outage, e.passes()) {
                        (Some(o), true) => {
                            o.last_error = e.to_string().into();
                            o.backoff = (o.backoff * 2).min(cap.max(FIRST_BACKOFF));
                        }
                        // Now a configuration error: waiters try for themselves and get it.
                        (o, _) => {
                            *o = None;
                            self.grant_slots(&mut st);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The error for a client that waited past query_wait_timeout during an outage.
    pub(super) fn outage_timeout(&self) -> Option<CheckoutError> {
        let st = self.state.lock();
        let o = st.outage.as_ref()?;
        Some(CheckoutError::Outage {
            database: self.database.clone(),
            down: o.since.elapsed().as_secs_f64(),
            last: o.last_error.clone(),
        })
    }
}
