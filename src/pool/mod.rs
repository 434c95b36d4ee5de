//! A pool: the servers of one (database, user), its limits and its first-in first-out waiters.
//!
//! Idle servers are reused last-in first-out (PgBouncer's default, `server_round_robin = 0`):
//! the most recently used server has warm caches, and the ones at the bottom of the stack
//! stay unused long enough for `server_idle_timeout` to close them when load drops.

// Servers are boxed on purpose, in lists too: see `State::idle`.
#![allow(clippy::vec_box)]

mod checked;
mod clock;
mod control;
mod fleet;
mod janitor;
mod limit;
pub mod listen;
mod outage;
mod reap;
mod registry;
mod slot;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::boxed::boxed;
use crate::config::PoolMode;
use crate::error::{CheckoutError, ConnectError, Error, Result};
use crate::server::{Params, Server, ServerInfo, ServerState, Target};
pub(crate) use checked::Checked;
pub use fleet::Counts as BudgetCounts;
pub(crate) use fleet::{fnv1a, key as fleet_key, Budget};
pub(crate) use janitor::run_janitor;
pub(crate) use limit::Limit;
pub use outage::passes as connect_error_passes;
pub use registry::Registry;
use slot::Slot;
pub use stats::Histograms;
pub use stats::PoolStats;

/// A pool's limits and timeouts, resolved from the config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// What SHOW POOLS and the metrics call the mode: the mode's name, or "auth_query" for a
    /// pool that only runs auth_query.
    pub(crate) mode_label: &'static str,
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub server_idle_timeout: Option<Duration>,
    pub server_lifetime: Option<Duration>,
    pub(crate) server_reset_query: String,
    pub(crate) server_reset_query_always: bool,
    /// Carry every session setting (track_session_settings): read SET-like statements.
    pub(crate) track_session_settings: bool,
    /// Without it, the settings still carried (track_extra_parameters, lower case).
    pub(crate) track_extra_parameters: Arc<[String]>,
    /// notify_queue_limit: bytes of notifications a client may leave unread.
    pub(crate) notify_queue_limit: usize,
    /// pin_on_session_state = "error" outside session mode: refuse what would pin a client.
    pub(crate) refuse_pinning: bool,
    /// Queries are read for the settings and state they touch (settings tracked, or a mode
    /// where state pins): the one flag the relay tests per message.
    pub(crate) reads_queries: bool,
    /// Clients idle this long are disconnected.
    pub client_idle_timeout: Option<Duration>,
    /// max_packet_size: the largest message a client may send.
    pub(crate) max_packet: usize,
    /// Idle clients park (client_park_delay is set): one keeps its first-read buffer until
    /// then.
    pub(crate) parks: bool,
    /// Clients idle inside a transaction this long are disconnected.
    pub idle_transaction_timeout: Option<Duration>,
    /// Longest wait between two attempts to open a server during an outage.
    pub(crate) server_login_retry: Duration,
    /// Run on a server idle at least `server_check_delay` before a client gets it.
    pub server_check_query: Option<Arc<str>>,
    pub server_check_delay: Duration,
    /// The pool's latency histograms (labelled with its mode: a reload that changes the mode
    /// starts new ones; otherwise they carry over).
    pub(crate) hist: Arc<Histograms>,
    /// Set once a reload replaced these settings: a client's [`SettingsCache`] reads the new
    /// ones then.
    pub(crate) replaced: Replaced,
}

/// Whether a pool's settings were replaced (a clone, new settings, starts unset).
#[derive(Debug, Default)]
pub(crate) struct Replaced(AtomicBool);

impl Clone for Replaced {
    fn clone(&self) -> Replaced {
        Replaced::default()
    }
}

/// A pool's settings as one client last read them. Checking they are still in force is one
/// load of a flag nobody writes but a reload ([`Replaced`]), where reading the pool's own
/// (an `ArcSwap`) costs a few dozen instructions, several times per request.
pub(crate) struct SettingsCache(Arc<PoolSettings>);

impl SettingsCache {
    pub(crate) fn new(pool: &Pool) -> SettingsCache {
        SettingsCache(pool.settings_arc())
    }

    /// The pool's settings now.
    #[inline]
    pub(crate) fn get(&mut self, pool: &Pool) -> &Arc<PoolSettings> {
        if self.0.replaced.0.load(Ordering::Acquire) {
            self.0 = pool.settings_arc();
        }
        &self.0
    }
}

/// What a waiter is given; dropped untaken (the waiter left), it gives itself back. (A
/// server moves by value: boxing it would cost an allocation per hand-over.)
#[allow(clippy::large_enum_variant)]
enum Grant {
    /// A server that was idle or just released.
    Server(Checked),
    /// Room to open a new server.
    Slot { slot: Slot, reserve: bool },
    /// query_wait_timeout passed (the waiters' clock, `clock.rs`).
    Expired,
}

/// What a waiter reads of the settings when it joins the queue.
#[derive(Clone, Copy)]
struct Sizes {
    pool_size: usize,
    reserve_size: usize,
    reserve_timeout: Option<Duration>,
}

struct State {
    /// Idle servers; the last is the most recently used. Boxed: a server (400 bytes) moves
    /// between this list, waiters and clients on every transaction, as a pointer.
    idle: Vec<Box<Server>>,
    /// Servers that exist or are being opened, checked out or idle.
    open: usize,
    /// Servers checked out by clients.
    active: usize,
    /// Waiters, oldest first. A waiter that stops waiting drops its receiver; its entry is
    /// skipped by whoever hands out next and pruned where the queue is looked at.
    waiters: VecDeque<clock::Waiter>,
    next_waiter: u64,
    /// Ends the waits past query_wait_timeout.
    clock: clock::Clock,
    /// No server can be opened now: clients wait, a retrier tries (`outage.rs`).
    outage: Option<outage::Outage>,
}

impl State {
    /// Drop the entries of waiters that left.
    fn prune(&mut self) {
        self.waiters.retain(|w| !w.tx.is_closed());
    }
}

/// What a pool's servers count against besides its own size.
pub(crate) struct Caps {
    /// max_db_connections of its database.
    pub db_limit: Arc<Limit>,
    /// max_user_connections of the user its servers log in as.
    pub user_limit: Arc<Limit>,
    /// `[fleet]`: the fleet's budget.
    pub budget: Option<Arc<Budget>>,
}

/// The servers of one (database, user).
pub struct Pool {
    pub database: String,
    pub user: String,
    settings: ArcSwap<PoolSettings>,
    target: ArcSwap<Target>,
    pub stats: PoolStats,
    state: Mutex<State>,
    /// Connected servers, as the admin console and metrics see them.
    servers: Mutex<HashMap<u64, Arc<ServerInfo>>>,
    /// Servers logging in now.
    logins: AtomicUsize,
    /// Servers older than this generation are closed when released (RECONNECT, reload).
    generation: AtomicU64,
    /// The SCRAM ClientKey a client of the server user last proved (SCRAM pass-through: lets
    /// pgmux log in to servers when it holds only that user's verifier).
    client_key: Mutex<Option<[u8; 32]>>,
    /// PAUSE or KILL: no server is handed out until RESUME.
    paused: AtomicBool,
    resumed: Notify,
    pub(crate) db_limit: Arc<Limit>,
    pub(crate) user_limit: Arc<Limit>,
    /// `[fleet]`: the budget shared with the other replicas (`fleet.rs`), when configured.
    pub(crate) budget: Option<Arc<Budget>>,
    server_ids: Arc<AtomicU64>,
    welcome: Mutex<Option<Arc<Params>>>,
    /// The parameters the latest client logged in with: clients that want the same share
    /// them (most clients of a pool do), until one changes a setting.
    client_params: Mutex<Option<Arc<Params>>>,
    /// Prepared statements of this pool's clients, one copy of each.
    pub(crate) statements: Mutex<crate::prepared::Interner>,
    /// LISTEN/NOTIFY for its clients (`listen.rs`), started at the first LISTEN.
    listener: Mutex<Option<listen::Listener>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("database", &self.database)
            .field("user", &self.user)
            .finish()
    }
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
    pub(crate) fn new(
        database: String,
        user: String,
        settings: PoolSettings,
        target: Arc<Target>,
        caps: Caps,
        server_ids: Arc<AtomicU64>,
    ) -> Pool {
        let Caps {
            db_limit,
            user_limit,
            budget,
        } = caps;
        Pool {
            database,
            user,
            settings: ArcSwap::from_pointee(settings),
            target: ArcSwap::new(target),
            stats: PoolStats::default(),
            servers: Mutex::new(HashMap::new()),
            logins: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            client_key: Mutex::new(None),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                active: 0,
                waiters: VecDeque::new(),
                next_waiter: 0,
                clock: Default::default(),
                outage: None,
            }),
            db_limit,
            user_limit,
            budget,
            server_ids,
            welcome: Mutex::new(None),
            client_params: Mutex::new(None),
            statements: Mutex::new(Default::default()),
            listener: Mutex::new(None),
        }
    }

    /// The pool's limits and timeouts now (a reload may change them).
    pub fn settings(&self) -> arc_swap::Guard<Arc<PoolSettings>> {
        self.settings.load()
    }

    /// The settings now, as an `Arc` to keep (one per transaction).
    pub(crate) fn settings_arc(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// Where new servers log in.
    pub fn target(&self) -> Arc<Target> {
        self.target.load_full()
    }

    /// A secret auth_query gave for this pool's user: servers opened from now on log in
    /// with it (the servers open stay). Ignored when servers log in as a forced user.
    pub(crate) fn take_fetched_secret(&self, secret: &crate::auth::Secret) {
        let t = self.target.load();
        if t.user != self.user || t.secret.as_ref().is_some_and(|s| s.same_as(secret)) {
            return;
        }
        drop(t);
        // rcu: a reload storing a new target meanwhile is not undone.
        self.target.rcu(|t| {
            let mut new = Target::clone(t);
            new.secret = Some(secret.clone());
            new
        });
    }

    /// Keep the SCRAM ClientKey a client proved for `user`, if `user` is the one servers log
    /// in as.
    pub(crate) fn remember_client_key(&self, user: &str, key: [u8; 32]) {
        if self.target.load().user == user {
            *self.client_key.lock() = Some(key);
        }
    }

    /// The latency histograms.
    pub(crate) fn histograms(&self) -> Arc<Histograms> {
        self.settings().hist.clone()
    }

    /// The servers connected now.
    pub fn server_infos(&self) -> Vec<Arc<ServerInfo>> {
        self.servers.lock().values().cloned().collect()
    }

    /// `[fleet]`: this replica's figures for the pool's budget.
    pub fn fleet_counts(&self) -> Option<BudgetCounts> {
        self.budget.as_ref().map(|b| b.counts())
    }

    /// Servers logging in now.
    pub fn logins(&self) -> usize {
        self.logins.load(Ordering::Relaxed)
    }

    /// Whether a server of this generation must close when released.
    pub fn close_needed(&self, info: &ServerInfo) -> bool {
        info.generation < self.generation.load(Ordering::Relaxed)
    }

    /// The parameters the first server reported, shown to clients at login.
    pub fn welcome(&self) -> Option<Arc<Params>> {
        self.welcome.lock().clone()
    }

    /// The welcome parameters, taken from `s` (a server of the current target) if none are
    /// known yet.
    pub(crate) fn welcome_from(&self, s: &Server) -> Arc<Params> {
        self.welcome
            .lock()
            .get_or_insert_with(|| Arc::new(s.params.clone()))
            .clone()
    }

    /// `p`, shared with the clients that logged in wanting the same parameters before.
    pub(crate) fn share_client_params(&self, p: Params) -> Arc<Params> {
        let mut last = self.client_params.lock();
        match &*last {
            Some(l) if **l == p => l.clone(),
            _ => last.insert(Arc::new(p)).clone(),
        }
    }

    /// Current counts.
    pub fn counts(&self) -> PoolCounts {
        let mut st = self.state.lock();
        st.prune();
        PoolCounts {
            idle: st.idle.len(),
            active: st.active,
            open: st.open,
            waiting: st.waiters.len(),
            max_wait: st
                .waiters
                .front()
                .map(|w| w.since.elapsed())
                .unwrap_or_default(),
        }
    }

    /// Take room for a new server if this pool (up to `cap`) and the shared caps allow it.
    fn take_room(self: &Arc<Self>, st: &mut State, cap: usize) -> Option<Slot> {
        if st.open >= cap {
            return None;
        }
        if !self.db_limit.try_acquire() {
            return None;
        }
        if !self.user_limit.try_acquire() {
            self.db_limit.release();
            return None;
        }
        if self.budget.as_ref().is_some_and(|b| !b.try_acquire()) {
            self.db_limit.release();
            self.user_limit.release();
            return None;
        }
        st.open += 1;
        st.active += 1;
        Some(Slot::taken(self.clone()))
    }

    /// Check out a server: an idle one, a new one under pool_size, or wait first-in first-out.
    ///
    /// An idle server that needs no check is handed out without awaiting anything; every
    /// other way (opening, waiting, checking) runs on the heap, so this future, part of every
    /// request's, stays small.
    /// `started`: when the request began (the caller's clock read, shared).
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        started: Instant,
    ) -> Result<Checked, CheckoutError> {
        let settings = self.settings_arc();
        if let Some(s) = self.idle_now(started, &settings) {
            return Ok(s);
        }
        boxed(self.checkout_from(started, &settings)).await
    }

    /// An idle server to hand out at once, if one is there: not paused, alive, no
    /// server_check_query due (one that is due stays in the list for the full checkout,
    /// which checks it). A dead one is closed, and the full checkout decides. `now`: the
    /// caller's clock read (this path awaits nothing, so the client waited for no server);
    /// `settings`: the pool's, as the caller read them.
    pub(crate) fn idle_now(
        self: &Arc<Self>,
        now: Instant,
        settings: &PoolSettings,
    ) -> Option<Checked> {
        let mut s = {
            let mut st = self.state.lock();
            if self.paused.load(Ordering::Acquire) {
                return None;
            }
            let top = st.idle.last()?;
            if settings.server_check_query.is_some()
                && now.saturating_duration_since(top.idle_since) >= settings.server_check_delay
            {
                return None;
            }
            let s = st.idle.pop()?;
            st.active += 1;
            Checked::new(s, Slot::taken(self.clone()))
        };
        if !s.looks_alive() {
            s.close("closed by the server while idle");
            return None;
        }
        s.info.set_state(ServerState::Active);
        self.note_wait(Duration::ZERO, &settings.hist);
        Some(s)
    }

    /// A server without waiting for one: an idle one, or a new one when there is room and
    /// nobody waits (session mode's login; `None` sends the client to the queue at its first
    /// request instead, as PgBouncer does).
    pub(crate) async fn checkout_now(self: &Arc<Self>, started: Instant) -> Option<Checked> {
        if let Some(s) = self.idle_now(started, &self.settings()) {
            return Some(s);
        }
        let slot = {
            let mut st = self.state.lock();
            if self.paused.load(Ordering::Acquire) || !st.waiters.is_empty() || st.outage.is_some()
            {
                return None;
            }
            self.take_room(&mut st, self.settings().pool_size)?
        };
        match boxed(slot.open(false)).await {
            Ok(mut s) => {
                if !s.looks_alive() {
                    s.close("closed by the server right after login");
                    return None;
                }
                self.note_checkout(started, &self.settings().hist);
                Some(s)
            }
            Err(e) => {
                self.connect_failed(&e);
                None
            }
        }
    }

    /// The checkout's full loop (see [`Pool::checkout`]), for a caller that tried
    /// [`Pool::idle_now`] already. `settings`: the pool's when the request began (a reload
    /// while it waits applies to the next request; the pool's own reads, granting servers
    /// and room, apply it at once).
    pub(crate) async fn checkout_from(
        self: &Arc<Self>,
        started: Instant,
        settings: &PoolSettings,
    ) -> Result<Checked, CheckoutError> {
        // Its connect failed in an outage: it waits again, at the front of the queue.
        let mut held = false;
        loop {
            if self.paused.load(Ordering::Acquire) {
                boxed(self.wait_resumed(started)).await?;
            }
            let sizes = Sizes {
                pool_size: settings.pool_size,
                reserve_size: settings.reserve_pool_size,
                reserve_timeout: settings.reserve_pool_timeout,
            };
            let query_wait_timeout = settings.query_wait_timeout;
            let pool_size = sizes.pool_size;
            let grant = {
                let mut st = self.state.lock();
                if self.paused.load(Ordering::Acquire) {
                    continue;
                }
                if let Some(s) = st.idle.pop() {
                    st.active += 1;
                    Ok(Grant::Server(Checked::new(s, Slot::taken(self.clone()))))
                } else if let Some(slot) = (!held && st.waiters.is_empty() && st.outage.is_none())
                    .then(|| self.take_room(&mut st, pool_size))
                    .flatten()
                {
                    Ok(Grant::Slot {
                        slot,
                        reserve: false,
                    })
                } else {
                    let id = st.next_waiter;
                    st.next_waiter += 1;
                    let (tx, rx) = oneshot::channel();
                    let deadline = query_wait_timeout.map(|t| started + t);
                    if let Some(d) = deadline {
                        self.arm_clock(&mut st, d);
                    }
                    let w = clock::Waiter {
                        id,
                        tx,
                        since: started,
                        deadline,
                    };
                    if held {
                        st.waiters.push_front(w);
                    } else {
                        st.waiters.push_back(w);
                    }
                    Err((id, rx))
                }
            };
            let grant = match grant {
                Ok(g) => g,
                Err((id, rx)) => self.wait(id, rx, started, sizes).await?,
            };
            match grant {
                Grant::Server(mut s) => {
                    if !s.looks_alive() {
                        s.close("closed by the server while idle");
                        continue;
                    }
                    let query = {
                        let due = (settings.server_check_query.as_ref())
                            .filter(|_| s.idle_since.elapsed() >= settings.server_check_delay);
                        match due {
                            Some(q) => q.clone(),
                            None => {
                                s.info.set_state(ServerState::Active);
                                self.note_checkout(started, &settings.hist);
                                return Ok(s);
                            }
                        }
                    };
                    let Some(s) = boxed(self.check_idle(s, &query)).await else {
                        continue;
                    };
                    s.info.set_state(ServerState::Active);
                    self.note_checkout(started, &self.settings().hist);
                    return Ok(s);
                }
                Grant::Slot { slot, reserve } => match boxed(slot.open(reserve)).await {
                    Ok(mut s) => {
                        if s.looks_alive() {
                            self.note_checkout(started, &self.settings().hist);
                            return Ok(s);
                        }
                        // Terminated right after its login (its FATAL came with ReadyForQuery).
                        s.close("closed by the server right after login");
                    }
                    // Postgres is down or restarting: wait for the retrier's server.
                    Err(e) if self.connect_failed(&e) => held = true,
                    Err(e) => return Err(e.into()),
                },
                Grant::Expired => {
                    self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(self.outage_timeout().unwrap_or(CheckoutError::WaitTimeout));
                }
            }
        }
    }

    /// Run server_check_query on an idle server before a client gets it. A failure closes
    /// it and bans its host (None); the client leaving meanwhile drops it (closed, as busy).
    async fn check_idle(&self, mut s: Checked, query: &str) -> Option<Checked> {
        s.info.set_state(ServerState::Tested);
        let t = s.target.connect_timeout.unwrap_or(Duration::from_secs(15));
        let r = tokio::time::timeout(t, s.check(query))
            .await
            .unwrap_or(Err(Error::Timeout("server_check_query")));
        match r {
            Ok(()) => Some(s),
            Err(e) => {
                s.host.failed(s.target.ban_time);
                self.stats.check_failures.fetch_add(1, Ordering::Relaxed);
                let why = format!("server_check_query failed on {}: {e}", *s.host);
                s.close(&why);
                None
            }
        }
    }

    fn note_checkout(&self, started: Instant, hist: &Histograms) {
        self.note_wait(started.elapsed(), hist);
    }

    /// Count a checkout that waited `waited`.
    fn note_wait(&self, waited: Duration, hist: &Histograms) {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .total_wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        hist.wait.observe(waited.as_secs_f64());
    }

    /// Wait while the pool is paused (within query_wait_timeout).
    async fn wait_resumed(&self, started: Instant) -> Result<(), CheckoutError> {
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.paused.load(Ordering::Acquire) {
                return Ok(());
            }
            match self.settings().query_wait_timeout {
                Some(t) => {
                    if tokio::time::timeout_at((started + t).into(), resumed)
                        .await
                        .is_err()
                    {
                        self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(CheckoutError::PausedTimeout);
                    }
                }
                None => resumed.await,
            }
        }
    }

    /// Wait in the queue as waiter `id`. Leaving (an error, or this future dropped) drops
    /// `rx`: the entry is skipped from then on, and a grant already sent to it gives itself
    /// back when dropped with it. query_wait_timeout comes as [`Grant::Expired`] from the
    /// pool's clock (`clock.rs`); most waits arm no timer of their own.
    async fn wait(
        self: &Arc<Self>,
        id: u64,
        rx: oneshot::Receiver<Grant>,
        started: Instant,
        sizes: Sizes,
    ) -> Result<Grant, CheckoutError> {
        let capped =
            self.db_limit.is_capped() || self.user_limit.is_capped() || self.budget.is_some();
        if sizes.reserve_size == 0 && !capped {
            return rx.await.map_err(|_| CheckoutError::Closed);
        }
        // Timers of its own: boxed, so the common wait's future (part of every waiting
        // checkout's, moved to the heap) holds none of them.
        boxed(self.wait_timed(id, rx, started, sizes, capped)).await
    }

    /// [`Pool::wait`] with a reserve pool (its timer) or a cap shared with other pools (its
    /// poll for room).
    async fn wait_timed(
        self: &Arc<Self>,
        id: u64,
        mut rx: oneshot::Receiver<Grant>,
        started: Instant,
        sizes: Sizes,
        capped: bool,
    ) -> Result<Grant, CheckoutError> {
        let Sizes {
            pool_size,
            reserve_size,
            reserve_timeout,
        } = sizes;
        let far = started + Duration::from_secs(86400 * 365);
        let mut reserve_at =
            (reserve_size > 0).then(|| started + reserve_timeout.unwrap_or_default());
        // Only a capped pool polls (its room can come from another pool): an interval is an
        // allocation and a timer per wait.
        let mut poll = capped.then(|| {
            let mut i = tokio::time::interval(Duration::from_millis(100));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            tokio::select! {
                g = &mut rx => return g.map_err(|_| CheckoutError::Closed),
                _ = tokio::time::sleep_until(reserve_at.unwrap_or(far).into()), if reserve_at.is_some() => {
                    if let Some(g) = self.take_slot_for(id, pool_size + reserve_size, true) {
                        self.stats.reserve_opened.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(db = %self.database, user = %self.user,
                            "opening a reserve pool server: a client waited {:?}", started.elapsed());
                        return Ok(g);
                    }
                    reserve_at = Some(Instant::now() + Duration::from_millis(100));
                }
                Some(_) = async { Some(poll.as_mut()?.tick().await) }, if capped => {
                    if let Some(g) = self.take_slot_for(id, pool_size, false) {
                        return Ok(g);
                    }
                    // A shared cap is full: close an idle server of another pool under it
                    // (as PgBouncer does), so the room goes where clients wait.
                    self.evict_idle_elsewhere();
                }
            }
        }
    }

    /// Give waiter `id` a slot to open a server (if it is first in line and there is room).
    fn take_slot_for(self: &Arc<Self>, id: u64, cap: usize, reserve: bool) -> Option<Grant> {
        if self.paused.load(Ordering::Acquire) {
            return None;
        }
        let mut st = self.state.lock();
        if st.outage.is_some() {
            return None; // the retrier opens the next server
        }
        st.prune();
        // Reserve servers go to the oldest waiter; the cap poll only to the first too.
        if st.waiters.front().map(|w| w.id) != Some(id) {
            return None;
        }
        let slot = self.take_room(&mut st, cap)?;
        st.waiters.pop_front();
        Some(Grant::Slot { slot, reserve })
    }

    /// When a cap shared with other pools blocks this pool (max_db_connections,
    /// max_user_connections, a fleet budget over several users), close one idle server of
    /// another pool under that cap (its oldest idle one).
    fn evict_idle_elsewhere(self: &Arc<Self>) {
        if self.state.lock().open >= self.settings().pool_size {
            return; // this pool is at its own size: no cap is to blame
        }
        let full = |l: &Arc<Limit>| l.is_full().then(|| l.members());
        let budget = self.budget.as_ref().filter(|b| b.exhausted());
        let sharing = [full(&self.db_limit), full(&self.user_limit)]
            .into_iter()
            .chain([budget.map(|b| b.pools())]);
        for members in sharing.flatten() {
            for other in members {
                if Arc::ptr_eq(&other, self) {
                    continue;
                }
                let victim = {
                    let mut st = other.state.lock();
                    (!st.idle.is_empty()).then(|| st.idle.remove(0))
                };
                if let Some(s) = victim {
                    other.close_idle_server(s, "room needed by another pool under a shared cap");
                    return;
                }
            }
        }
    }

    /// A subscription to this pool's listener (started now if it was not).
    pub(crate) fn subscribe(self: &Arc<Self>) -> listen::Listening {
        let mut l = self.listener.lock();
        let listener = l.get_or_insert_with(|| {
            let pool = Arc::downgrade(self);
            let open: listen::Opener = Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move { pool.upgrade()?.open_outside("listener").await })
            });
            listen::Listener::start(open, format!("{}/{}", self.database, self.user))
        });
        listener.subscribe(self.settings().notify_queue_limit)
    }

    /// Open a server outside the pool's size, not listed among its servers (the listener's,
    /// the fleet budget's), named `what` in a failure's log line.
    async fn open_outside(&self, what: &str) -> Option<Server> {
        let id = self.server_ids.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Relaxed);
        let key = *self.client_key.lock();
        match Server::connect(id, self.target(), generation, key).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(db = %self.database, user = %self.user,
                    "{what} connect failed: {e}");
                None
            }
        }
    }

    /// Connect a server (for a [`Slot`]: see [`Slot::open`]) and list it.
    async fn open_server(&self, reserve: bool) -> Result<Box<Server>, ConnectError> {
        let id = self.server_ids.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Relaxed);
        let key = *self.client_key.lock();
        match Server::connect(id, self.target(), generation, key).await {
            Ok(mut s) => {
                s.reserve = reserve;
                self.servers.lock().insert(s.id, s.info.clone());
                self.stats.servers_opened.fetch_add(1, Ordering::Relaxed);
                // Its own root: a server outlives the client whose checkout opened it.
                s.span = tracing::info_span!(parent: None, "server", id, db = %self.database,
                    user = %self.user, pid = s.pid, host = %*s.host);
                s.span
                    .in_scope(|| tracing::info!(reserve, "server connect"));
                // The first server of the current target says what new clients are told (one
                // opened for a target a reload replaced says nothing).
                let mut w = self.welcome.lock();
                if w.is_none() && generation == self.generation.load(Ordering::Acquire) {
                    *w = Some(Arc::new(s.params.clone()));
                }
                Ok(Box::new(s))
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(server = id, db = %self.database, user = %self.user,
                    "server connect failed: {e}");
                Err(e)
            }
        }
    }

    /// Return a server a client is done with (see [`Checked::release`]). Past
    /// server_lifetime it is closed instead.
    fn release(
        self: Arc<Self>,
        mut s: Box<Server>,
        mut slot: Slot,
        now: Instant,
        life: Option<Duration>,
    ) {
        if let Some(reason) = self.close_at_release(&s, now, life) {
            return Pool::close_checked(s, slot, reason);
        }
        s.idle_since = now;
        s.info.link_to(0, 0);
        s.info.set_state(ServerState::Idle);
        s.info
            .prepared
            .store(s.prepared.len() as u32, Ordering::Relaxed);
        let mut st = self.state.lock();
        while let Some(w) = st.waiters.pop_front() {
            // A waiter that left refuses it: it comes back whole.
            match w.tx.send(Grant::Server(Checked::new(s, slot))) {
                Ok(()) => return,
                Err(Grant::Server(back)) => (s, slot) = back.into_parts(),
                Err(_) => unreachable!("sent a server"),
            }
        }
        slot.into_idle(&mut st);
        st.idle.push(s);
    }

    /// Why a server being released must close instead of going back, if it must (`life`:
    /// server_lifetime).
    fn close_at_release(
        &self,
        s: &Server,
        now: Instant,
        life: Option<Duration>,
    ) -> Option<&'static str> {
        if life.is_some_and(|life| now.duration_since(s.created) >= life) {
            Some("server_lifetime reached")
        } else if self.close_needed(&s.info) {
            Some("RECONNECT or a reload changed where servers go")
        } else if self.paused.load(Ordering::Acquire) {
            Some("the database is paused")
        } else if !s.still_fits() {
            Some("its host no longer fits target_session_attrs")
        } else if !s.host.still_points_at(s.info.addr, s.target.dns_ttl) {
            Some("its host name points elsewhere now (dns_max_ttl)")
        } else if self.budget.as_ref().is_some_and(|b| b.is_over()) {
            Some(fleet::SHED)
        } else {
            None
        }
    }

    /// Close a checked-out server that is idle (nothing runs on it), logging why; dropping
    /// its slot passes the room on.
    fn close_checked(s: Box<Server>, slot: Slot, reason: &str) {
        let pool = slot.pool().clone();
        pool.forget(&s, reason);
        pool.terminate_then(s, move || drop(slot));
    }

    /// Close a server already taken out of the idle list, logging why.
    fn close_idle_server(self: &Arc<Self>, s: Box<Server>, reason: &str) {
        self.forget(&s, reason);
        let pool = self.clone();
        self.terminate_then(s, move || pool.server_gone(false));
    }

    /// Send Terminate, then run `gone` (which frees the server's room). Under a fleet budget
    /// `gone` waits until Postgres has closed the session (at most 5 s): its slot must not
    /// open another server, here or on another replica, while its backend still runs.
    fn terminate_then(&self, s: Box<Server>, gone: impl FnOnce() + Send + 'static) {
        let closing = match &self.budget {
            Some(b) if tokio::runtime::Handle::try_current().is_ok() => b.closing(),
            _ => {
                terminate(s);
                return gone();
            }
        };
        tokio::spawn(async move {
            reap::until_closed(s).await;
            gone();
            drop(closing);
        });
    }

    /// A server is being closed: log why, count it, and take it off the server list.
    fn forget(&self, s: &Server, reason: &str) {
        s.span.in_scope(|| tracing::info!("server close: {reason}"));
        self.stats.servers_closed.fetch_add(1, Ordering::Relaxed);
        self.stats
            .server_lifetime_us
            .fetch_add(s.created.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.servers.lock().remove(&s.id);
    }

    /// A server is gone (closed or failed to open): pass its room to the oldest waiter.
    /// `active`: it was counted as checked out (its [`Slot`] is what calls this then).
    fn server_gone(self: &Arc<Self>, active: bool) {
        self.db_limit.release();
        self.user_limit.release();
        if let Some(b) = &self.budget {
            b.release();
        }
        let mut st = self.state.lock();
        st.open -= 1;
        if active {
            st.active -= 1;
        }
        self.grant_slots(&mut st);
    }

    /// Give waiters room to open servers while the pool size and caps allow.
    fn grant_slots(self: &Arc<Self>, st: &mut State) {
        if self.paused.load(Ordering::Acquire) || st.outage.is_some() {
            return;
        }
        let pool_size = self.settings().pool_size;
        while !st.waiters.is_empty() {
            let Some(slot) = self.take_room(st, pool_size) else {
                return;
            };
            let w = st.waiters.pop_front().expect("non-empty");
            if let Err(back) = w.tx.send(Grant::Slot {
                slot,
                reserve: false,
            }) {
                // That waiter left: undo (under the lock, so not by a drop) and go on.
                match back {
                    Grant::Slot { slot, .. } => slot.undo(st),
                    _ => unreachable!("sent a slot"),
                }
            }
        }
    }

    /// Room waiters can be given now (the fleet budget got slots for them).
    fn grant_now(self: &Arc<Self>) {
        let mut st = self.state.lock();
        st.prune();
        self.grant_slots(&mut st);
    }

    /// Servers this pool would open now if its fleet budget allowed: one per waiter (up to
    /// its size with the reserve), and those missing for min_pool_size.
    fn fleet_demand(&self) -> usize {
        let s = self.settings();
        let mut st = self.state.lock();
        st.prune();
        let room = (s.pool_size + s.reserve_pool_size).saturating_sub(st.open);
        st.waiters.len().min(room) + s.min_pool_size.saturating_sub(st.open)
    }

    /// Close up to `n` idle servers (the least recently used first), logging `reason`;
    /// returns how many.
    fn shed_idle(self: &Arc<Self>, n: usize, reason: &str) -> usize {
        let victims: Vec<_> = {
            let mut st = self.state.lock();
            let k = n.min(st.idle.len());
            st.idle.drain(..k).collect()
        };
        let k = victims.len();
        for s in victims {
            self.close_idle_server(s, reason);
        }
        k
    }

    /// Every idle server, removed from the idle list (a pool being removed).
    pub(crate) fn take_all_idle(&self) -> Vec<Box<Server>> {
        std::mem::take(&mut self.state.lock().idle)
    }

    /// Idle servers the janitor should close now, removed from the idle list.
    fn take_expired(&self, now: Instant) -> Vec<(Box<Server>, &'static str)> {
        let mut st = self.state.lock();
        let mut out = Vec::new();
        let settings = self.settings();
        let min = settings.min_pool_size;
        let max = settings.pool_size + settings.reserve_pool_size;
        let paused = self.paused.load(Ordering::Acquire);
        let mut i = 0;
        while i < st.idle.len() {
            let s = &st.idle[i];
            let life = settings
                .server_lifetime
                .is_some_and(|l| now.duration_since(s.created) >= l);
            let idle = settings
                .server_idle_timeout
                .is_some_and(|t| now.duration_since(s.idle_since) >= t)
                && st.open - out.len() > min;
            // A reload that shrank the pool: close idle servers past its new size.
            let over = st.open - out.len() > max;
            let stale = self.close_needed(&s.info);
            if life || idle || over || stale || paused {
                let s = st.idle.remove(i);
                out.push((
                    s,
                    if life {
                        "server_lifetime reached"
                    } else if idle {
                        "server_idle_timeout reached"
                    } else if over {
                        "the pool is larger than its (reloaded) size"
                    } else if stale {
                        "RECONNECT or a reload changed where servers go"
                    } else {
                        "the database is paused"
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
            let slot = {
                let min = self.settings().min_pool_size;
                let mut st = self.state.lock();
                st.prune();
                if st.open >= min
                    || !st.waiters.is_empty()
                    || st.outage.is_some()
                    || self.paused.load(Ordering::Acquire)
                {
                    return;
                }
                match self.take_room(&mut st, min) {
                    Some(slot) => slot,
                    None => return,
                }
            };
            match slot.open(false).await {
                Ok(s) => s.release(),
                Err(_) => return,
            }
        }
    }
}

/// Send Terminate and close. (Terminate is 5 bytes: a non-blocking write always fits an
/// idle socket.)
fn terminate(s: Box<Server>) {
    let _ = s.stream.try_write(&[b'X', 0, 0, 0, 4]);
}
