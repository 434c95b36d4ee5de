//! The clients of this process as the admin console and metrics see them: one record per
//! connection, with its state, its server and its request time kept in atomics; and the way
//! to stop one from outside (KILL, shutdown).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use atomic_waker::AtomicWaker;
use parking_lot::Mutex;

use crate::pool::Pool;
use crate::server::unix_us;

/// Why a client is pinned to its server (transaction and statement mode), as bits: the
/// columns of `client::relay::pin`'s state query in order, then LOAD.
pub(crate) const PIN_REASONS: [&str; 6] = [
    "session advisory lock",
    "temporary table",
    "WITH HOLD cursor",
    "SQL PREPARE",
    "LISTEN",
    "LOAD",
];

/// The reasons in `bits`, joined for a log line or SHOW.
pub(crate) fn pin_reasons(bits: u8) -> String {
    let names: Vec<&str> = (PIN_REASONS.iter().enumerate())
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, r)| *r)
        .collect();
    names.join(", ")
}

/// A client's state, with PgBouncer's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ClientState {
    /// Logging in.
    Login = 0,
    /// Logged in, no request running.
    Idle = 1,
    /// Has sent a request and waits for a server.
    Waiting = 2,
    /// Holds a server.
    Active = 3,
}

impl ClientState {
    /// The name SHOW CLIENTS uses.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// Why a client is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    None = 0,
    /// KILL from the admin console.
    Killed = 1,
    /// shutdown_timeout ran out.
    Shutdown = 2,
    /// Draining (SIGTERM) a transaction- or statement-mode client: it goes once it has been
    /// idle a moment (a pool's connection at rest), or when it checks its connection (an
    /// empty query), never in the middle of a transaction.
    Drain = 3,
    /// Draining for a while already: it goes with the answer that ends its next transaction
    /// too.
    DrainNow = 4,
}

impl Stop {
    /// A drain of either kind.
    pub fn draining(self) -> bool {
        matches!(self, Stop::Drain | Stop::DrainNow)
    }
}

/// Who a logged-in client is.
#[derive(Debug)]
pub enum Login {
    /// A client of a pool (its database and user are the pool's).
    Pool {
        pool: Arc<Pool>,
        application_name: Box<str>,
    },
    /// An admin console client (boxed: a rare kind must not widen every client's record).
    Admin(Box<AdminLogin>),
}

/// Who an admin console client is.
#[derive(Debug)]
pub struct AdminLogin {
    pub user: Box<str>,
    pub database: Box<str>,
}

impl Login {
    /// Whether this is an admin console client.
    pub fn is_admin(&self) -> bool {
        matches!(self, Login::Admin(_))
    }

    pub fn user(&self) -> &str {
        match self {
            Login::Pool { pool, .. } => &pool.user,
            Login::Admin(a) => &a.user,
        }
    }

    pub fn database(&self) -> &str {
        match self {
            Login::Pool { pool, .. } => &pool.database,
            Login::Admin(a) => &a.database,
        }
    }

    pub fn application_name(&self) -> &str {
        match self {
            Login::Pool {
                application_name, ..
            } => application_name,
            Login::Admin(_) => "",
        }
    }
}

/// One client connection.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    /// The client's address (see [`ClientInfo::addr`]); kept compact, as every field here:
    /// 10,000 idle clients pay for each byte.
    addr: Addr,
    /// pgmux's end of the connection.
    local: Option<Addr>,
    /// When it connected, seconds since the Unix epoch (u32: until 2106).
    connect_secs: u32,
    /// Set once the client has logged in.
    pub login: OnceLock<Login>,
    state: AtomicU8,
    /// The server it holds (0: none).
    link: AtomicU64,
    /// When its latest request started, µs since the Unix epoch.
    request_us: AtomicU64,
    /// Named prepared statements it has.
    pub prepared: AtomicU32,
    /// When it last went idle, in ms after its connect second (wrapping: read as an age).
    idle_ms: AtomicU32,
    /// Its TLS protocol, cipher and group (`net::tls::info`; 0: plaintext).
    pub(crate) tls: AtomicU64,
    /// What its request loop publishes for SHOW CLIENT_SETTINGS.
    published: parking_lot::Mutex<Published>,
    /// Why it is pinned to its server, as `relay::pin` bits (0: it is not).
    pinned: AtomicU8,
    stop: AtomicU8,
    /// Whether its request loop runs in a task of its own or is parked (`client::park`).
    park: AtomicU8,
    /// The client's task (or, parked, the parking task), woken by [`ClientInfo::stop`] and
    /// [`ClientInfo::ask_park`].
    waker: AtomicWaker,
}

/// `ClientInfo::park`: in a task of its own.
const IN_TASK: u8 = 0;
/// In a task, asked to park when next idle.
const PARK_ASKED: u8 = 1;
/// Parked: no task, its socket watched by the parking task.
const PARKED: u8 = 2;
/// Never parked (a TLS client; the admin console).
const NEVER_PARK: u8 = 3;

/// What a client's request loop publishes for SHOW CLIENT_SETTINGS, under one lock.
#[derive(Debug, Default)]
struct Published {
    /// The tracked parameters it wants (shared with it).
    params: Option<Arc<crate::server::Params>>,
    /// The other session settings it changed (`server::settings`).
    settings: Option<Arc<crate::server::Settings>>,
}

/// A socket address in 20 bytes (a `SocketAddr` takes 32 for an IPv6 flow label and scope
/// that clients never need shown).
#[derive(Debug, Clone, Copy)]
struct Addr {
    ip: IpAddr,
    port: u16,
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl From<Addr> for SocketAddr {
    fn from(a: Addr) -> SocketAddr {
        SocketAddr::new(a.ip, a.port)
    }
}

impl ClientInfo {
    /// The client's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.into()
    }

    /// pgmux's end of the connection.
    pub fn local(&self) -> Option<SocketAddr> {
        self.local.map(SocketAddr::from)
    }

    /// When the client connected (to the second).
    pub fn connect_time(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(u64::from(self.connect_secs))
    }

    /// The span one of this client's log lines is written in, made when the line is logged:
    /// a logged-in client holds no span of its own (one held per client costs about 0.8 kB
    /// of every idle client's memory in the log subscriber).
    pub(crate) fn span(&self) -> tracing::Span {
        let (db, user) = self
            .login
            .get()
            .map_or(("", ""), |l| (l.database(), l.user()));
        tracing::info_span!(parent: None, "client", id = self.id, peer = %self.addr(), %db, %user)
    }

    pub(crate) fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            0 => ClientState::Login,
            1 => ClientState::Idle,
            2 => ClientState::Waiting,
            _ => ClientState::Active,
        }
    }

    /// A request arrived: the client waits for a server.
    pub fn waiting(&self) {
        self.request_us.store(unix_us(), Ordering::Relaxed);
        // Asked to park while idle, it is busy again: asked again when next idle long enough.
        if self.park.load(Ordering::Relaxed) == PARK_ASKED {
            self.park.store(IN_TASK, Ordering::Relaxed);
        }
        self.state
            .store(ClientState::Waiting as u8, Ordering::Relaxed);
    }

    /// The client got server `id`.
    pub fn active(&self, server: u64) {
        self.link.store(server, Ordering::Relaxed);
        self.state
            .store(ClientState::Active as u8, Ordering::Relaxed);
    }

    /// The client holds no server and runs nothing.
    pub fn idle(&self) {
        self.link.store(0, Ordering::Relaxed);
        self.idle_ms
            .store(self.ms_since_connect(unix_us()), Ordering::Relaxed);
        self.state.store(ClientState::Idle as u8, Ordering::Relaxed);
    }

    pub fn link(&self) -> u64 {
        self.link.load(Ordering::Relaxed)
    }

    /// `now_us` (µs since the Unix epoch) as ms after the client's connect second, wrapping
    /// every 49 days (a u32, where a client's every byte counts).
    fn ms_since_connect(&self, now_us: u64) -> u32 {
        (now_us / 1000).wrapping_sub(u64::from(self.connect_secs) * 1000) as u32
    }

    /// How long the client has been idle at `now_us`, if it is (ms).
    fn idle_for_ms(&self, now_us: u64) -> Option<u32> {
        (self.state() == ClientState::Idle).then(|| {
            let idle = self.idle_ms.load(Ordering::Relaxed);
            self.ms_since_connect(now_us).wrapping_sub(idle)
        })
    }

    pub(crate) fn request_us(&self) -> u64 {
        self.request_us.load(Ordering::Relaxed)
    }

    /// The pool it uses, once logged in (none for the admin console).
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        match self.login.get()? {
            Login::Pool { pool, .. } => Some(pool),
            Login::Admin(_) => None,
        }
    }

    /// Ask the client's task to close the connection.
    pub fn stop(&self, why: Stop) {
        self.stop.store(why as u8, Ordering::Release);
        self.waker.wake();
    }

    /// Ask the client to leave when idle ([`Stop::Drain`]), or (`now`) also at its next
    /// transaction boundary ([`Stop::DrainNow`]), unless it was asked to stop otherwise.
    pub(crate) fn drain(&self, now: bool) {
        let to = if now { Stop::DrainNow } else { Stop::Drain } as u8;
        let asked = self
            .stop
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |s| {
                (s == Stop::None as u8 || (now && s == Stop::Drain as u8)).then_some(to)
            });
        if asked.is_ok() {
            self.waker.wake();
        }
    }

    /// [`ClientInfo::drain`] for a client of a transaction- or statement-mode pool (a
    /// session-mode client stays until it leaves, as in PgBouncer).
    pub(crate) fn drain_pooled(&self, now: bool) {
        if self
            .pool()
            .is_some_and(|p| p.settings().mode != crate::config::PoolMode::Session)
        {
            self.drain(now);
        }
    }

    /// Why the client must stop, if it must.
    pub fn stopped(&self) -> Stop {
        match self.stop.load(Ordering::Acquire) {
            0 => Stop::None,
            1 => Stop::Killed,
            3 => Stop::Drain,
            4 => Stop::DrainNow,
            _ => Stop::Shutdown,
        }
    }

    /// For the client's own task, inside its poll: wake this task on [`ClientInfo::stop`], and
    /// say whether it was asked already. (One task per client registers, so the last
    /// registration is the one that counts; registering is an atomic swap, no lock.)
    pub(crate) fn poll_stop(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Stop> {
        self.waker.register(cx.waker());
        match self.stopped() {
            Stop::None => std::task::Poll::Pending,
            why => std::task::Poll::Ready(why),
        }
    }

    /// Ask a logged-in client of a pool, idle in its own task for `delay_ms` or more at `now_us`
    /// (since its latest answer, however long its request took), to park: its task is woken and
    /// sees [`ClientInfo::park_asked`]. Whether it was asked.
    pub(crate) fn ask_park(&self, now_us: u64, delay_ms: u32) -> bool {
        let ask = self.idle_for_ms(now_us).is_some_and(|ms| ms >= delay_ms)
            && self.park.load(Ordering::Relaxed) == IN_TASK
            && matches!(self.login.get(), Some(Login::Pool { .. }))
            && self
                .park
                .compare_exchange(IN_TASK, PARK_ASKED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        if ask {
            self.waker.wake();
        }
        ask
    }

    /// The client's idle task was asked to park.
    pub(crate) fn park_asked(&self) -> bool {
        self.park.load(Ordering::Acquire) == PARK_ASKED
    }

    /// The client parked (`true`), or went back into a task of its own (`false`).
    pub(crate) fn set_parked(&self, parked: bool) {
        let v = if parked { PARKED } else { IN_TASK };
        self.park.store(v, Ordering::Release);
    }

    /// Whether it may still be asked to park (not a client that never does).
    pub(crate) fn may_park(&self) -> bool {
        self.park.load(Ordering::Relaxed) != NEVER_PARK
    }

    /// The client cannot park: never ask it again.
    pub(crate) fn never_park(&self) {
        self.park.store(NEVER_PARK, Ordering::Release);
    }

    /// Whether the client is parked now.
    /// Publish the tracked parameters the client wants now (at login, and when a SET or a
    /// sync changes them).
    pub(crate) fn set_params(&self, params: &Arc<crate::server::Params>) {
        self.published.lock().params = Some(params.clone());
    }

    /// The tracked parameters it wants (none before it has logged in to a pool).
    pub(crate) fn params(&self) -> Option<Arc<crate::server::Params>> {
        self.published.lock().params.clone()
    }

    /// Publish why it is pinned to its server (0: it is not).
    pub(crate) fn set_pinned(&self, bits: u8) {
        self.pinned.store(bits, Ordering::Relaxed);
    }

    /// Why it is pinned to its server ([`PIN_REASONS`] bits; 0: it is not).
    pub(crate) fn pinned(&self) -> u8 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Publish the other session settings it has now (`None`: none).
    pub(crate) fn set_settings(&self, settings: Option<&crate::server::Settings>) {
        let new = settings
            .filter(|s| !s.is_empty())
            .map(|s| Arc::new(s.clone()));
        self.published.lock().settings = new;
    }

    /// The other session settings it has.
    pub(crate) fn settings(&self) -> Option<Arc<crate::server::Settings>> {
        self.published.lock().settings.clone()
    }

    pub fn parked(&self) -> bool {
        self.park.load(Ordering::Acquire) == PARKED
    }

    /// Wake `waker` instead of the client's task on [`ClientInfo::stop`] (a parked client).
    pub(crate) fn register_waker(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Completes when [`ClientInfo::stop`] is called (at once if it was called already).
    pub(crate) async fn stop_requested(&self) -> Stop {
        std::future::poll_fn(|cx| self.poll_stop(cx)).await
    }
}

/// Every client of this process.
#[derive(Default)]
pub struct ClientList {
    map: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    count: AtomicUsize,
    next_id: AtomicU64,
}

impl ClientList {
    /// Record a new connection; it is removed when the returned handle drops.
    pub(crate) fn add(
        self: &Arc<Self>,
        addr: SocketAddr,
        local: Option<SocketAddr>,
    ) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            addr: addr.into(),
            local: local.map(Addr::from),
            connect_secs: (unix_us() / 1_000_000) as u32,
            login: OnceLock::new(),
            state: AtomicU8::new(ClientState::Login as u8),
            link: AtomicU64::new(0),
            request_us: AtomicU64::new(0),
            prepared: AtomicU32::new(0),
            idle_ms: AtomicU32::new(0),
            tls: AtomicU64::new(0),
            published: parking_lot::Mutex::default(),
            pinned: AtomicU8::new(0),
            stop: AtomicU8::new(0),
            park: AtomicU8::new(IN_TASK),
            waker: AtomicWaker::new(),
        });
        self.count.fetch_add(1, Ordering::Relaxed);
        self.map.lock().insert(id, info.clone());
        ClientHandle {
            list: self.clone(),
            info,
        }
    }

    /// Clients connected now (logging in or logged in).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A snapshot of every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<_> = self.map.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Call `f` on every client, under the list's lock (`f` must be quick and take no lock of
    /// the list).
    pub(crate) fn each(&self, mut f: impl FnMut(&ClientInfo)) {
        for c in self.map.lock().values() {
            f(c);
        }
    }

    /// One client by id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.map.lock().get(&id).cloned()
    }
}

/// A client's place in the [`ClientList`], for as long as its connection lives.
pub(crate) struct ClientHandle {
    list: Arc<ClientList>,
    pub info: Arc<ClientInfo>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.list.map.lock().remove(&self.info.id);
        self.list.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts of clients per state, for one pool or all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientCounts {
    pub login: usize,
    pub idle: usize,
    pub waiting: usize,
    pub active: usize,
    /// The longest current wait, µs.
    pub(crate) max_wait_us: u64,
    /// Clients pinned to their server, by reason ([`PIN_REASONS`]).
    pub(crate) pinned: [usize; PIN_REASONS.len()],
}

impl ClientCounts {
    /// Add one client.
    pub(crate) fn add(&mut self, c: &ClientInfo, now_us: u64) {
        let pinned = c.pinned();
        for (i, n) in self.pinned.iter_mut().enumerate() {
            *n += usize::from(pinned & (1 << i) != 0);
        }
        match c.state() {
            ClientState::Login => self.login += 1,
            ClientState::Idle => self.idle += 1,
            ClientState::Active => self.active += 1,
            ClientState::Waiting => {
                self.waiting += 1;
                self.max_wait_us = self.max_wait_us.max(now_us.saturating_sub(c.request_us()));
            }
        }
    }
}
