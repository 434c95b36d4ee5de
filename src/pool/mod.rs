//! A pool: the servers of one (database, user), its limits and its first-in first-out waiters.
//!
//! Idle servers are reused last-in first-out (PgBouncer's default, `server_round_robin = 0`):
//! the most recently used server has warm caches, and the ones at the bottom of the stack
//! stay unused long enough for `server_idle_timeout` to close them when load drops.

mod janitor;
mod limit;
mod registry;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::PoolMode;
use crate::error::{sqlstate, Error, Result};
use crate::server::{Params, Server, Target};
pub use janitor::run_janitor;
pub use limit::Limit;
pub use registry::Registry;

/// A pool's limits and timeouts, resolved from the config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub server_idle_timeout: Option<Duration>,
    pub server_lifetime: Option<Duration>,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
}

/// What a waiter is given. (A server moves by value: boxing it would cost an allocation
/// per hand-over.)
#[allow(clippy::large_enum_variant)]
enum Grant {
    /// An idle server.
    Server(Server),
    /// Room to open a new server (counted in `open` already).
    Slot { reserve: bool },
}

struct State {
    /// Idle servers; the last is the most recently used.
    idle: Vec<Server>,
    /// Servers that exist or are being opened, checked out or idle.
    open: usize,
    /// Servers checked out by clients.
    active: usize,
    waiters: VecDeque<(u64, oneshot::Sender<Grant>, Instant)>,
    next_waiter: u64,
}

/// Counters kept per pool (read by the admin console and metrics later).
#[derive(Debug, Default)]
pub struct PoolStats {
    pub checkouts: AtomicU64,
    pub wait_timeouts: AtomicU64,
    pub reserve_opened: AtomicU64,
    pub connect_failures: AtomicU64,
    pub servers_opened: AtomicU64,
    pub servers_closed: AtomicU64,
    pub total_wait_us: AtomicU64,
    /// Named Parse messages from clients (PgBouncer's client parse count).
    pub ps_client_parses: AtomicU64,
    /// Parse messages sent to servers: a statement a server lacked (a miss).
    pub ps_server_parses: AtomicU64,
    /// Uses of a client's statement (Parse, Bind, Describe) that found it on the server.
    pub ps_hits: AtomicU64,
    /// Statements closed on a server to make room (max_prepared_statements).
    pub ps_evictions: AtomicU64,
    /// Bind messages for a named statement pgmux maps.
    pub ps_binds: AtomicU64,
}

/// The servers of one (database, user).
pub struct Pool {
    pub database: String,
    pub user: String,
    pub settings: PoolSettings,
    pub target: Arc<Target>,
    pub stats: PoolStats,
    state: Mutex<State>,
    pub(crate) db_limit: Arc<Limit>,
    pub(crate) user_limit: Arc<Limit>,
    server_ids: Arc<AtomicU64>,
    welcome: Mutex<Option<Arc<Params>>>,
    /// Prepared statements of this pool's clients, one copy of each.
    pub statements: Mutex<crate::prepared::Interner>,
}

/// A snapshot of a pool's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    pub idle: usize,
    pub active: usize,
    pub open: usize,
    pub waiting: usize,
    pub max_wait: Duration,
}

impl Pool {
    /// A new, empty pool.
    pub fn new(
        database: String,
        user: String,
        settings: PoolSettings,
        target: Arc<Target>,
        db_limit: Arc<Limit>,
        user_limit: Arc<Limit>,
        server_ids: Arc<AtomicU64>,
    ) -> Pool {
        Pool {
            database,
            user,
            settings,
            target,
            stats: PoolStats::default(),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                active: 0,
                waiters: VecDeque::new(),
                next_waiter: 0,
            }),
            db_limit,
            user_limit,
            server_ids,
            welcome: Mutex::new(None),
            statements: Mutex::new(Default::default()),
        }
    }

    /// The parameters the first server reported, shown to clients at login.
    pub fn welcome(&self) -> Option<Arc<Params>> {
        self.welcome.lock().clone()
    }

    /// Current counts.
    pub fn counts(&self) -> PoolCounts {
        let st = self.state.lock();
        PoolCounts {
            idle: st.idle.len(),
            active: st.active,
            open: st.open,
            waiting: st.waiters.len(),
            max_wait: st
                .waiters
                .front()
                .map(|w| w.2.elapsed())
                .unwrap_or_default(),
        }
    }

    /// Take a slot for a new server if this pool and the shared caps allow it.
    fn try_slot(&self, st: &mut State, cap: usize) -> bool {
        if st.open >= cap {
            return false;
        }
        if !self.db_limit.try_acquire() {
            return false;
        }
        if !self.user_limit.try_acquire() {
            self.db_limit.release();
            return false;
        }
        st.open += 1;
        true
    }

    /// Check out a server: an idle one, a new one under pool_size, or wait first-in first-out.
    pub async fn checkout(self: &Arc<Self>) -> Result<Server> {
        let started = Instant::now();
        loop {
            let grant = {
                let mut st = self.state.lock();
                if let Some(s) = st.idle.pop() {
                    st.active += 1;
                    Ok(Grant::Server(s))
                } else if st.waiters.is_empty() && self.try_slot(&mut st, self.settings.pool_size) {
                    st.active += 1;
                    Ok(Grant::Slot { reserve: false })
                } else {
                    let id = st.next_waiter;
                    st.next_waiter += 1;
                    let (tx, rx) = oneshot::channel();
                    st.waiters.push_back((id, tx, started));
                    Err((id, rx))
                }
            };
            let grant = match grant {
                Ok(g) => g,
                Err((id, rx)) => self.wait(id, rx, started).await?,
            };
            match grant {
                Grant::Server(mut s) => {
                    if s.looks_alive() {
                        self.note_checkout(started);
                        return Ok(s);
                    }
                    self.close(s, true, "closed by the server while idle");
                }
                Grant::Slot { reserve } => {
                    let s = self.open_server(reserve).await;
                    if s.is_ok() {
                        self.note_checkout(started);
                    }
                    return s;
                }
            }
        }
    }

    fn note_checkout(&self, started: Instant) {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .total_wait_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    async fn wait(
        self: &Arc<Self>,
        id: u64,
        rx: oneshot::Receiver<Grant>,
        started: Instant,
    ) -> Result<Grant> {
        let mut guard = WaitGuard {
            pool: self,
            id,
            rx: Some(rx),
        };
        let s = &self.settings;
        let far = started + Duration::from_secs(86400 * 365);
        let deadline = s.query_wait_timeout.map_or(far, |t| started + t);
        let mut reserve_at = match (s.reserve_pool_size, s.reserve_pool_timeout) {
            (0, _) => None,
            (_, t) => Some(started + t.unwrap_or_default()),
        };
        let capped = self.db_limit.is_capped() || self.user_limit.is_capped();
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let rx = guard.rx.as_mut().expect("receiver present while waiting");
            tokio::select! {
                g = rx => {
                    guard.rx = None;
                    return g.map_err(|_| Error::client(sqlstate::ADMIN_SHUTDOWN, "pool closed"));
                }
                _ = tokio::time::sleep_until(reserve_at.unwrap_or(far).into()), if reserve_at.is_some() => {
                    if let Some(g) = self.take_slot_for(id, s.pool_size + s.reserve_pool_size, true) {
                        self.stats.reserve_opened.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(db = %self.database, user = %self.user,
                            "opening a reserve pool server: a client waited {:?}", started.elapsed());
                        return Ok(g);
                    }
                    reserve_at = Some(Instant::now() + Duration::from_millis(100));
                }
                _ = poll.tick(), if capped => {
                    if let Some(g) = self.take_slot_for(id, s.pool_size, false) {
                        return Ok(g);
                    }
                    // A shared cap is full: close an idle server of another pool under it
                    // (as PgBouncer does), so the room goes where clients wait.
                    self.evict_idle_elsewhere();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::client(sqlstate::QUERY_CANCELED,
                        "query_wait_timeout: no server became free in time"));
                }
            }
        }
    }

    /// Give waiter `id` a slot to open a server (if it is first in line and there is room).
    fn take_slot_for(&self, id: u64, cap: usize, reserve: bool) -> Option<Grant> {
        let mut st = self.state.lock();
        let pos = st.waiters.iter().position(|w| w.0 == id)?;
        // Reserve servers go to the oldest waiter; the cap poll only to the first too.
        if pos != 0 || !self.try_slot(&mut st, cap) {
            return None;
        }
        st.waiters.remove(pos);
        st.active += 1;
        Some(Grant::Slot { reserve })
    }

    /// When a cap shared with other pools blocks this pool, close one idle server of another
    /// pool under that cap (its oldest idle one).
    fn evict_idle_elsewhere(self: &Arc<Self>) {
        if self.state.lock().open >= self.settings.pool_size {
            return; // this pool is at its own size: no cap is to blame
        }
        for limit in [&self.db_limit, &self.user_limit] {
            if !limit.is_full() {
                continue;
            }
            for other in limit.members() {
                if Arc::ptr_eq(&other, self) {
                    continue;
                }
                let victim = {
                    let mut st = other.state.lock();
                    (!st.idle.is_empty()).then(|| st.idle.remove(0))
                };
                if let Some(s) = victim {
                    other.close(s, false, "room needed by another pool under a shared cap");
                    return;
                }
            }
        }
    }

    async fn open_server(self: &Arc<Self>, reserve: bool) -> Result<Server> {
        let id = self.server_ids.fetch_add(1, Ordering::Relaxed);
        match Server::connect(id, self.target.clone()).await {
            Ok(mut s) => {
                s.reserve = reserve;
                self.stats.servers_opened.fetch_add(1, Ordering::Relaxed);
                tracing::info!(server = id, db = %self.database, user = %self.user,
                    pid = s.pid, reserve, "server connect");
                let mut w = self.welcome.lock();
                if w.is_none() {
                    *w = Some(Arc::new(s.params.clone()));
                }
                Ok(s)
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(server = id, db = %self.database, user = %self.user,
                    "server connect failed: {e}");
                self.slot_freed(true);
                Err(e)
            }
        }
    }

    /// Return a server a client is done with. Past server_lifetime it is closed instead.
    pub fn release(&self, mut s: Server) {
        let now = Instant::now();
        if let Some(life) = self.settings.server_lifetime {
            if now.duration_since(s.created) >= life {
                return self.close(s, true, "server_lifetime reached");
            }
        }
        s.idle_since = now;
        let mut st = self.state.lock();
        while let Some((_, tx, _)) = st.waiters.pop_front() {
            match tx.send(Grant::Server(s)) {
                Ok(()) => return,
                Err(Grant::Server(back)) => s = back,
                Err(Grant::Slot { .. }) => unreachable!("sent a server"),
            }
        }
        st.active -= 1;
        st.idle.push(s);
    }

    /// Close a server (checked out if `active`, else already out of the idle list), logging why.
    pub fn close(&self, s: Server, active: bool, reason: &str) {
        tracing::info!(server = s.id, db = %self.database, user = %self.user, pid = s.pid,
            "server close: {reason}");
        self.stats.servers_closed.fetch_add(1, Ordering::Relaxed);
        // Terminate is 5 bytes: a non-blocking write always fits an idle socket.
        let _ = s.stream.try_write(&[b'X', 0, 0, 0, 4]);
        drop(s);
        self.slot_freed(active);
    }

    /// A server is gone (closed or failed to open): pass its room to the oldest waiter.
    /// `active`: it was counted as checked out.
    fn slot_freed(&self, active: bool) {
        self.db_limit.release();
        self.user_limit.release();
        let mut st = self.state.lock();
        st.open -= 1;
        if active {
            st.active -= 1;
        }
        while !st.waiters.is_empty() {
            if !self.try_slot(&mut st, self.settings.pool_size) {
                return;
            }
            let (_, tx, _) = st.waiters.pop_front().expect("non-empty");
            st.active += 1;
            if tx.send(Grant::Slot { reserve: false }).is_ok() {
                return;
            }
            st.active -= 1;
            // That waiter left: undo and try the next.
            st.open -= 1;
            self.db_limit.release();
            self.user_limit.release();
        }
    }

    /// Idle servers the janitor should close now, removed from the idle list.
    fn take_expired(&self, now: Instant) -> Vec<(Server, &'static str)> {
        let mut st = self.state.lock();
        let mut out = Vec::new();
        let min = self.settings.min_pool_size;
        let mut i = 0;
        while i < st.idle.len() {
            let s = &st.idle[i];
            let life = self
                .settings
                .server_lifetime
                .is_some_and(|l| now.duration_since(s.created) >= l);
            let idle = self
                .settings
                .server_idle_timeout
                .is_some_and(|t| now.duration_since(s.idle_since) >= t)
                && st.open - out.len() > min;
            if life || idle {
                let s = st.idle.remove(i);
                out.push((
                    s,
                    if life {
                        "server_lifetime reached"
                    } else {
                        "server_idle_timeout reached"
                    },
                ));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Open servers up to min_pool_size (called by the janitor).
    async fn fill_min(self: &Arc<Self>) {
        loop {
            {
                let mut st = self.state.lock();
                if st.open >= self.settings.min_pool_size || !st.waiters.is_empty() {
                    return;
                }
                if !self.try_slot(&mut st, self.settings.min_pool_size) {
                    return;
                }
                st.active += 1;
            }
            match self.open_server(false).await {
                Ok(s) => self.release(s),
                Err(_) => return,
            }
        }
    }
}

/// Removes a waiter from the queue when it stops waiting, handing back anything it was sent.
struct WaitGuard<'a> {
    pool: &'a Pool,
    id: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        {
            let mut st = self.pool.state.lock();
            if let Some(pos) = st.waiters.iter().position(|w| w.0 == self.id) {
                st.waiters.remove(pos);
                return;
            }
        }
        // Already granted while we were leaving: pass it on.
        rx.close();
        match rx.try_recv() {
            Ok(Grant::Server(s)) => self.pool.release(s),
            Ok(Grant::Slot { .. }) => self.pool.slot_freed(true),
            Err(_) => {}
        }
    }
}
