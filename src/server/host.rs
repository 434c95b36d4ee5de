//! The hosts servers go to: one `Host` per (name, port) in the process, shared by every pool
//! that lists it, with its open-server count, its connect failures, its ban and its DNS answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

/// One host of database entries.
#[derive(Debug)]
pub(crate) struct Host {
    pub name: String,
    pub port: u16,
    /// Servers open to it now, from every pool.
    servers: AtomicUsize,
    /// Connects and server_check_query runs that failed, in total.
    failures: AtomicU64,
    /// Until when new servers try it only after every host that is not banned.
    banned_until: Mutex<Option<Instant>>,
    /// `name` is an IP address: nothing to look up.
    ip: Option<IpAddr>,
    /// The addresses `name` resolved to, and when (read on every release: no lock).
    dns: ArcSwapOption<(Arc<[SocketAddr]>, Instant)>,
    /// A lookup is under way (at most one at a time).
    resolving: AtomicBool,
}

impl PartialEq for Host {
    fn eq(&self, other: &Host) -> bool {
        self.name == other.name && self.port == other.port
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

impl Host {
    pub(crate) fn new(name: String, port: u16) -> Host {
        Host {
            ip: name.parse().ok(),
            name,
            port,
            servers: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            banned_until: Mutex::new(None),
            dns: ArcSwapOption::empty(),
            resolving: AtomicBool::new(false),
        }
    }

    pub(crate) fn servers(&self) -> usize {
        self.servers.load(Ordering::Relaxed)
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether it is banned now.
    pub(crate) fn banned(&self) -> bool {
        self.banned_until.lock().is_some_and(|t| t > Instant::now())
    }

    /// A connect or check failed: count it, and ban the host for `ban` (if not zero).
    pub(crate) fn failed(&self, ban: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !ban.is_zero() {
            *self.banned_until.lock() = Some(Instant::now() + ban);
        }
    }

    /// A server logged in: the ban, if any, ends.
    pub(crate) fn worked(&self) {
        let mut b = self.banned_until.lock();
        if b.is_some() {
            *b = None;
        }
    }

    /// Count a new server; the lease uncounts it when dropped.
    pub(crate) fn lease(self: &Arc<Self>) -> HostLease {
        self.servers.fetch_add(1, Ordering::Relaxed);
        HostLease(self.clone())
    }

    /// Its addresses: an IP address as it is; a name looked up unless the answer is younger
    /// than `ttl` (PgBouncer's dns_max_ttl).
    pub(crate) async fn addrs(&self, ttl: Duration) -> std::io::Result<Arc<[SocketAddr]>> {
        if let Some(ip) = self.ip {
            return Ok(Arc::new([SocketAddr::new(ip, self.port)]));
        }
        if let Some(d) = &*self.dns.load() {
            if d.1.elapsed() < ttl {
                return Ok(d.0.clone());
            }
        }
        self.lookup().await
    }

    async fn lookup(&self) -> std::io::Result<Arc<[SocketAddr]>> {
        let found: Arc<[SocketAddr]> = tokio::net::lookup_host((self.name.as_str(), self.port))
            .await?
            .collect();
        if found.is_empty() {
            return Err(std::io::Error::other(format!(
                "{} resolves to no address",
                self.name
            )));
        }
        self.dns
            .store(Some(Arc::new((found.clone(), Instant::now()))));
        Ok(found)
    }

    /// Whether a server connected to `peer` still goes where the name points. A stale answer
    /// (older than `ttl`, at least a second) is looked up again in the background, so the next
    /// release sees the new one. An IP address, or a failed lookup, keeps every server.
    pub(crate) fn still_points_at(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
        ttl: Duration,
    ) -> bool {
        let Some(peer) = peer.filter(|_| self.ip.is_none()) else {
            return true;
        };
        let (fits, stale) = match &*self.dns.load() {
            None => return true,
            Some(d) => (
                d.0.contains(&peer),
                d.1.elapsed() >= ttl.max(Duration::from_secs(1)),
            ),
        };
        if stale && !self.resolving.swap(true, Ordering::AcqRel) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let me = self.clone();
                rt.spawn(async move {
                    if let Err(e) = me.lookup().await {
                        tracing::warn!(host = %me, "DNS lookup failed: {e}");
                    }
                    me.resolving.store(false, Ordering::Release);
                });
            } else {
                self.resolving.store(false, Ordering::Release);
            }
        }
        fits
    }
}

/// A server's hold on its host: counted in `Host::servers` while it lives.
#[derive(Debug)]
pub(crate) struct HostLease(Arc<Host>);

impl std::ops::Deref for HostLease {
    type Target = Arc<Host>;

    fn deref(&self) -> &Arc<Host> {
        &self.0
    }
}

impl Drop for HostLease {
    fn drop(&mut self) {
        self.0.servers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every host of the process, by (name, port): pools and reloads share them, so a host's ban
/// and counts are the same for every pool that goes to it.
#[derive(Debug, Default)]
pub(crate) struct HostTable {
    hosts: Mutex<HashMap<(String, u16), Arc<Host>>>,
}

impl HostTable {
    /// The host `name:port`, added on first use.
    pub(crate) fn get(&self, name: &str, port: u16) -> Arc<Host> {
        self.hosts
            .lock()
            .entry((name.to_string(), port))
            .or_insert_with(|| Arc::new(Host::new(name.to_string(), port)))
            .clone()
    }

    /// Every host, sorted by name and port.
    pub(crate) fn all(&self) -> Vec<Arc<Host>> {
        let mut v: Vec<_> = self.hosts.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        v
    }
}

/// How a new server picks among a database entry's hosts (`load_balance_hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Balance {
    /// In the order listed (libpq's default; PgBouncer's `disable`).
    InOrder,
    /// Starting one further along for each new server.
    RoundRobin,
    /// The host with the fewest open servers first.
    LeastConnections,
}

/// The order in which a new server tries `hosts`: by `balance` (`turn` counts new servers for
/// round-robin), then banned hosts after all others, so a banned host is used only when no
/// other one will do.
pub(crate) fn order(hosts: &[Arc<Host>], balance: Balance, turn: usize) -> Vec<Arc<Host>> {
    let mut v: Vec<Arc<Host>> = hosts.to_vec();
    if v.len() < 2 {
        return v;
    }
    match balance {
        Balance::InOrder => {}
        Balance::RoundRobin => {
            let n = v.len();
            v.rotate_left(turn % n);
        }
        Balance::LeastConnections => v.sort_by_key(|h| h.servers()),
    }
    // A stable sort keeps the order above within each group.
    v.sort_by_key(|h| h.banned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[Arc<Host>]) -> Vec<&str> {
        v.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn order_balances_and_puts_banned_hosts_last() {
        let t = HostTable::default();
        let hosts: Vec<_> = ["a", "b", "c"].iter().map(|n| t.get(n, 5432)).collect();
        assert!(Arc::ptr_eq(&hosts[0], &t.get("a", 5432)));
        assert_eq!(names(&order(&hosts, Balance::InOrder, 7)), ["a", "b", "c"]);
        assert_eq!(
            names(&order(&hosts, Balance::RoundRobin, 0)),
            ["a", "b", "c"]
        );
        assert_eq!(
            names(&order(&hosts, Balance::RoundRobin, 4)),
            ["b", "c", "a"]
        );
        let _l = [hosts[0].lease(), hosts[0].lease(), hosts[2].lease()];
        assert_eq!(hosts[0].servers(), 2);
        assert_eq!(
            names(&order(&hosts, Balance::LeastConnections, 0)),
            ["b", "c", "a"]
        );
        hosts[1].failed(Duration::from_secs(60));
        assert!(hosts[1].banned());
        assert_eq!(hosts[1].failures(), 1);
        assert_eq!(names(&order(&hosts, Balance::InOrder, 0)), ["a", "c", "b"]);
        assert_eq!(
            names(&order(&hosts, Balance::LeastConnections, 0)),
            ["c", "a", "b"]
        );
        hosts[1].worked();
        assert!(!hosts[1].banned());
        drop(_l);
        assert_eq!(hosts[0].servers(), 0);
        // A ban of zero only counts.
        hosts[2].failed(Duration::ZERO);
        assert!(!hosts[2].banned());
    }
}
