//! The fleet's server budget: replicas that share a `[fleet]` name hold at most `max_servers`
//! servers together, counted by Postgres itself with advisory locks, with no coordinator.
//!
//! Each budget (per (database, user), or per database with `scope = "database"`) has, in each
//! replica, one budget connection that holds one session advisory lock per server the replica
//! may have: `(key, slot)` for a slot in `0..max_servers`. A replica opens a server only when it
//! holds a slot no server of its own uses, and gives a slot back only once that server's backend
//! has exited (pgmux waits for its socket to close), so the fleet's backends never outnumber the
//! locks. A replica that dies loses its budget connection, and Postgres frees its locks with it
//! (the budget connection asks for TCP keepalives of a few seconds, for a replica that vanishes
//! without a FIN).
//!
//! The hot path does not touch it: a checkout that reuses a server takes nothing. Only opening
//! and closing servers count here, and the budget connection's queries run on the budget's own
//! task, woken when a pool finds no slot and every second.
//!
//! Fairness: each budget connection also holds a shared "member" lock (so the replicas can be
//! counted) and, while its clients wait for servers it cannot get and it holds less than its
//! share (`max_servers / replicas`, rounded up), a shared "waiting" lock. A replica that sees
//! another one waiting stops growing past its share and sheds what it holds above it: idle
//! servers at once, busy ones as their clients release them. When nobody waits, any replica may
//! use free slots, and slots a replica no longer uses go back at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Pool;
use crate::error::{Error, Result};
use crate::server::Server;

/// The second key of the shared lock every replica's budget connection holds.
const MEMBER: u32 = 2_000_000_000;
/// The second key of the shared lock a replica holds while it waits below its share.
const WAITING: u32 = 2_000_000_001;
/// How often the fleet's counts are read when nothing is short.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How often a replica whose clients wait for slots tries again.
const SHORT_EVERY: Duration = Duration::from_millis(200);
/// Longest pause between two attempts to open the budget connection.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Why a server closes to make room for another replica.
pub(super) const SHED: &str = "fleet budget: another replica waits for its share";

/// A budget's advisory-lock key (its first int4, positive): FNV-1a of the fleet's name, the
/// database's name on Postgres and, with scope "pool", the user servers log in as. Every
/// replica computes the same key, whatever its build.
pub(crate) fn key(fleet: &str, dbname: &str, user: Option<&str>) -> u32 {
    let parts = [Some(fleet), Some(dbname), user];
    let bytes = parts
        .into_iter()
        .flatten()
        .flat_map(|p| p.bytes().chain([0]));
    fnv1a(bytes) & 0x7fff_ffff
}

/// FNV-1a (32 bits) of `bytes`: fixed, so every replica, whatever its build, agrees (fleet
/// keys here, cancel keys' address tags in `cancel.rs`).
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// One budget, shared by the pools it covers in this replica.
pub(crate) struct Budget {
    /// The fleet's name.
    pub(crate) fleet: String,
    key: u32,
    max: usize,
    counts: Mutex<Counts>,
    /// More servers in use than slots held (or than the share while another waits): servers
    /// close when released instead of going idle.
    over: AtomicBool,
    wake: Arc<Notify>,
    pools: Mutex<Vec<Weak<Pool>>>,
}

/// A budget's figures in this replica, and the fleet's as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Slots this replica's budget connection holds.
    pub held: usize,
    /// Servers open or opening under the budget here (each in a held slot).
    pub used: usize,
    /// Of those, servers closing (Terminate sent, backend not yet gone).
    pub closing: usize,
    /// The most this replica may use while another replica waits (its share); else no cap.
    pub cap: usize,
    /// Slots the whole fleet holds, as last read.
    pub fleet_held: usize,
    /// Replicas with a budget connection, as last read.
    pub replicas: usize,
    /// Whether the budget connection is up.
    pub connected: bool,
}

impl Budget {
    /// A budget of `max` servers for the fleet `fleet`, under advisory-lock key `key`; its task
    /// is spawned on the current runtime.
    pub(crate) fn start(fleet: &str, key: u32, max: usize) -> Arc<Budget> {
        let b = Arc::new(Budget {
            fleet: fleet.to_string(),
            key,
            max,
            counts: Mutex::new(Counts {
                held: 0,
                used: 0,
                closing: 0,
                cap: usize::MAX,
                fleet_held: 0,
                replicas: 0,
                connected: false,
            }),
            over: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            pools: Mutex::new(Vec::new()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(run(Arc::downgrade(&b), b.wake.clone()));
        }
        b
    }

    /// The fleet's limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Count `pool` among the pools this budget covers.
    pub(crate) fn add_pool(&self, pool: &Arc<Pool>) {
        let mut pools = self.pools.lock();
        pools.retain(|w| w.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// This replica's figures now.
    pub(crate) fn counts(&self) -> Counts {
        *self.counts.lock()
    }

    /// Take a held slot for a new server; when there is none, the budget's task is asked to
    /// get more (the pool's waiters are granted room when it has).
    pub(crate) fn try_acquire(&self) -> bool {
        let mut c = self.counts.lock();
        if c.used < c.held.min(c.cap) {
            c.used += 1;
            return true;
        }
        drop(c);
        self.wake.notify_one();
        false
    }

    /// A server under the budget is gone (its backend has exited): its slot is free here,
    /// and goes back to the fleet unless a pool wants it.
    pub(crate) fn release(&self) {
        let mut c = self.counts.lock();
        c.used = c.used.saturating_sub(1);
        self.note_over(&c);
        drop(c);
        self.wake.notify_one();
    }

    /// Whether servers released now must close (this replica is over its slots or share).
    pub(crate) fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// A server under the budget is closing: it no longer counts towards shedding until the
    /// returned value is dropped (after its slot was released).
    pub(crate) fn closing(self: &Arc<Self>) -> Closing {
        let mut c = self.counts.lock();
        c.closing += 1;
        self.note_over(&c);
        Closing(self.clone())
    }

    /// Servers staying (not closing) beyond what this replica may use now.
    fn above(c: &Counts) -> usize {
        (c.used.saturating_sub(c.closing)).saturating_sub(c.held.min(c.cap))
    }

    fn note_over(&self, c: &Counts) {
        self.over.store(Budget::above(c) > 0, Ordering::Relaxed);
    }

    /// Every slot here is in use and the fleet had none free at its last count: a pool
    /// under this budget that waits can only get a server another one gives up.
    pub(crate) fn exhausted(&self) -> bool {
        let c = self.counts.lock();
        // A server closing already frees a slot soon.
        c.used.saturating_sub(c.closing) >= c.held.min(c.cap) && c.fleet_held >= self.max
    }

    /// The pools under this budget.
    pub(crate) fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.lock().iter().filter_map(Weak::upgrade).collect()
    }

    /// Slots the pools want beyond the servers they have: their waiters, and min_pool_size.
    fn demand(&self) -> usize {
        self.pools().iter().map(|p| p.fleet_demand()).sum()
    }

    /// The budget connection is gone, and its locks with it.
    fn lost(&self) {
        let mut c = self.counts.lock();
        c.held = 0;
        c.connected = false;
        self.note_over(&c);
        let over = Budget::above(&c);
        drop(c);
        self.shed(over);
    }

    /// Close up to `n` idle servers of the pools under this budget.
    fn shed(&self, mut n: usize) {
        for p in self.pools() {
            if n == 0 {
                return;
            }
            n -= p.shed_idle(n, SHED);
        }
    }

    /// Open the budget connection (as the servers of one of its pools) and take back the
    /// slots of the servers open here.
    async fn connect(&self) -> Result<Holder> {
        let Some(pool) = self.pools().into_iter().next() else {
            return Err(Error::Protocol("no pool uses this budget yet".into()));
        };
        let server = pool
            .open_outside("fleet budget")
            .await
            .ok_or_else(|| Error::Protocol("cannot open the fleet budget connection".into()))?;
        drop(pool);
        let mut h = Holder {
            server,
            key: self.key,
            max: self.max,
            slots: Vec::new(),
            waiting: false,
        };
        h.server
            .run_hidden(&format!(
                "SET application_name = 'pgmux fleet budget'; SET tcp_keepalives_idle = 5; \
                 SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 3; \
                 SELECT pg_advisory_lock_shared({}, {MEMBER})",
                self.key
            ))
            .await?;
        let used = self.counts.lock().used;
        let got = h.take(used).await?;
        let mut c = self.counts.lock();
        c.held = got;
        c.connected = true;
        self.note_over(&c);
        if got < c.used {
            tracing::warn!(fleet = %self.fleet, key = self.key,
                "fleet budget: {} servers open here, {got} slots taken back: closing the rest", c.used);
        } else {
            tracing::info!(fleet = %self.fleet, key = self.key, "fleet budget connection open");
        }
        Ok(h)
    }

    /// One round of the budget's task: take slots the pools want, give back those nobody
    /// uses, and (every second, or while short) read the fleet's counts and keep to the share.
    /// Returns how long to rest before the next round.
    async fn round(&self, t: &mut Task) -> Result<Duration> {
        if t.holder.is_none() {
            if self.pools.lock().is_empty() {
                return Ok(STATUS_EVERY); // woken by its first pool's first checkout
            }
            t.holder = Some(self.connect().await?);
            t.status_at = Instant::now();
        }
        let h = t.holder.as_mut().expect("connected above");
        let want = self.demand();
        let Counts {
            held, used, cap, ..
        } = self.counts();
        let need = (used + want).min(cap).min(self.max);
        let now = Instant::now();
        let mut short = false;
        if need > held && now < t.take_at {
            // Short a moment ago: tried again every SHORT_EVERY, however often woken.
            return Ok(t.take_at - now);
        } else if need > held {
            let got = h.take(need - held).await?;
            short = got < need - held;
            if short {
                t.take_at = now + SHORT_EVERY;
            }
            let mut c = self.counts.lock();
            c.held += got;
            self.note_over(&c);
            drop(c);
            if got > 0 {
                for p in self.pools() {
                    p.grant_now();
                }
            }
        } else if need < held {
            // Slots no server uses and nobody wants: uncounted first, so no pool takes one
            // while it goes back.
            let extra = {
                let mut c = self.counts.lock();
                // `used` may be above `held` (slots not all taken back after a reconnect).
                let extra = c.held.saturating_sub(c.used.max(need));
                c.held -= extra;
                extra
            };
            h.give_back(extra).await?;
        }
        // The fleet's counts matter to a replica that holds or wants slots: an idle one does
        // not ask (a fleet of many pools and replicas would scan pg_locks for nothing).
        let busy = held > 0 || used > 0 || want > 0;
        if short || (busy && now >= t.status_at) {
            t.status_at = now + STATUS_EVERY;
            let (replicas, others_waiting, fleet_held) = h.status().await?;
            let share = self.max.div_ceil(replicas.max(1));
            let wait = short && self.counts().held < share;
            h.set_waiting(wait).await?;
            let mut c = self.counts.lock();
            c.cap = if others_waiting > 0 {
                share
            } else {
                usize::MAX
            };
            c.replicas = replicas;
            c.fleet_held = fleet_held;
            self.note_over(&c);
            let above = Budget::above(&c);
            drop(c);
            if above > 0 {
                self.shed(above);
            }
        }
        Ok(if short { SHORT_EVERY } else { STATUS_EVERY })
    }
}

/// A server closing under a budget (see [`Budget::closing`]); dropped once its backend is
/// gone and its slot released.
pub(crate) struct Closing(Arc<Budget>);

impl Drop for Closing {
    fn drop(&mut self) {
        let mut c = self.0.counts.lock();
        c.closing = c.closing.saturating_sub(1);
        self.0.note_over(&c);
    }
}

/// The budget's task: rounds until the budget is dropped; a lost connection is opened again
/// with a backoff (meanwhile no server opens and released ones close).
async fn run(budget: Weak<Budget>, wake: Arc<Notify>) {
    let mut t = Task {
        holder: None,
        status_at: Instant::now(),
        take_at: Instant::now(),
    };
    let mut retry = Duration::from_millis(100);
    loop {
        let rest = {
            let Some(b) = budget.upgrade() else {
                return;
            };
            match b.round(&mut t).await {
                Ok(rest) => {
                    retry = Duration::from_millis(100);
                    Some(rest)
                }
                Err(e) => {
                    if t.holder.take().is_some() || retry == Duration::from_millis(100) {
                        tracing::warn!(fleet = %b.fleet, key = b.key,
                            "fleet budget connection: {e}; no server opens until it is back");
                    }
                    b.lost();
                    None
                }
            }
        };
        match rest {
            Some(rest) => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(rest) => {}
                }
            }
            None => {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// What the budget's task keeps between rounds.
struct Task {
    /// The budget connection, once open.
    holder: Option<Holder>,
    /// When the fleet's counts are read next.
    status_at: Instant,
    /// No slots are asked for before this (the last try came up short).
    take_at: Instant,
}

/// The budget connection and the slots it holds.
struct Holder {
    server: Server,
    key: u32,
    max: usize,
    slots: Vec<u32>,
    /// Whether it holds the shared "waiting" lock.
    waiting: bool,
}

impl Holder {
    /// Lock up to `n` free slots (from a random point, so replicas rarely try the same ones).
    async fn take(&mut self, n: usize) -> Result<usize> {
        if n == 0 {
            return Ok(0);
        }
        let max = self.max;
        let from = rand::random::<u32>() as usize % max;
        let held = list(&self.slots);
        // CASE keeps the order: a slot held here already is never locked twice.
        let sql = format!(
            "SELECT s % {max} FROM generate_series({from}, {last}) AS s \
             WHERE CASE WHEN s % {max} = ANY('{{{held}}}'::int[]) THEN false \
             ELSE pg_try_advisory_lock({key}, s % {max}) END LIMIT {n}",
            last = from + max - 1,
            key = self.key,
        );
        let rows = self.server.hidden_rows(&sql).await?;
        let before = self.slots.len();
        for row in rows {
            if let Some(Some(v)) = row.first() {
                let s = v
                    .parse()
                    .map_err(|_| Error::Protocol(format!("fleet budget: bad slot {v:?}")))?;
                self.slots.push(s);
            }
        }
        Ok(self.slots.len() - before)
    }

    /// Unlock `n` slots.
    async fn give_back(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let back = self.slots.split_off(self.slots.len() - n);
        let sql = format!(
            "SELECT pg_advisory_unlock({}, s) FROM unnest('{{{}}}'::int[]) AS s",
            self.key,
            list(&back)
        );
        self.server.hidden_rows(&sql).await.map(|_| ())
    }

    /// The fleet now: replicas, replicas other than this one waiting, slots held.
    async fn status(&mut self) -> Result<(usize, usize, usize)> {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE objid = '{MEMBER}'::oid), \
             count(*) FILTER (WHERE objid = '{WAITING}'::oid AND pid <> pg_backend_pid()), \
             count(*) FILTER (WHERE objid < '{MEMBER}'::oid) \
             FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
             AND classid = '{}'::oid \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            self.key
        );
        let rows = self.server.hidden_rows(&sql).await?;
        let n = |i: usize| -> usize {
            rows.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((n(0), n(1), n(2)))
    }

    /// Hold or drop the shared "waiting" lock.
    async fn set_waiting(&mut self, wait: bool) -> Result<()> {
        if wait == self.waiting {
            return Ok(());
        }
        let f = match wait {
            true => "pg_advisory_lock_shared",
            false => "pg_advisory_unlock_shared",
        };
        self.server
            .hidden_rows(&format!("SELECT {f}({}, {WAITING})", self.key))
            .await?;
        self.waiting = wait;
        Ok(())
    }
}

/// Slots as an array literal's body.
fn list(slots: &[u32]) -> String {
    let mut out = String::new();
    for (i, s) in slots.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&s.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_positive() {
        let a = key("orders", "app", Some("alice"));
        assert_eq!(a, key("orders", "app", Some("alice")));
        assert_ne!(a, key("orders", "app", Some("bob")));
        assert_ne!(a, key("orders", "app", None));
        // "ab" + "c" is not "a" + "bc".
        assert_ne!(key("ab", "c", None), key("a", "bc", None));
        assert!(a <= i32::MAX as u32);
        // FNV-1a is fixed: replicas built apart agree.
        assert_eq!(key("", "", None), 0x1176_97cd);
    }

    #[test]
    fn slot_lists() {
        assert_eq!(list(&[]), "");
        assert_eq!(list(&[3, 0, 12]), "3,0,12");
    }
}
