//! Cancel keys: the (pid, secret) pgmux gives each client, and where a cancel for it goes now.
//!
//! With peering (`peer_id`, `[peers]`, PgBouncer's names), a key says which peer issued it:
//! the pid's bits 16-29 are that peer's id (the pid stays positive), the low 16 bits and the
//! secret's 31 low bits are random. A cancel for another peer's key is forwarded there once,
//! with the secret's top bit set; a peer never forwards a key that has it, so a cancel is
//! never forwarded twice and never loops, whatever the configs say. A key reveals the id of
//! the peer that issued it, nothing else; forging one is as hard as guessing 31 random bits
//! of secret (Postgres' own key has 32), and the worst it does is cancel a query.
//!
//! With discovery (`peer_dns`: a name that resolves to every replica, as a Kubernetes headless
//! Service does), replicas have no ids. A key's pid bits 16-30 are then a tag of the address
//! its client reached the replica at (a 15-bit hash, never 0), the rest random as above. A
//! cancel whose key this replica did not issue is forwarded, once and marked, to the name's
//! addresses with that tag (other than the address it came in at); two replicas whose tags
//! collide both get it, and the one without the key ignores it. What a key reveals: 15 bits of
//! a hash of the replica's address, which the client reached anyway. What a forged key can do:
//! cancel a query if it guesses the 47 random bits of a live client's key (Postgres' own keys
//! have a guessable pid and 32 random bits); it is never forwarded twice, and only ever to an
//! address the fleet's own DNS name lists, so it cannot make pgmux connect anywhere else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use crate::server::{self, CancelTarget, Server};

/// Where a client's cancel should go: the server it holds right now, if any.
#[derive(Default)]
pub(crate) struct CancelSlot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// The server held (its host, address and pid) and its secret key.
    target: Option<(Arc<server::ServerInfo>, i32)>,
    /// A cancel was sent to the attached server during this attachment.
    cancelled: bool,
}

impl CancelSlot {
    /// The client now holds `s`.
    pub(crate) fn attach(&self, s: &Server) {
        let mut st = self.state.lock();
        st.target = Some((s.info.clone(), s.secret));
        st.cancelled = false;
    }

    /// The client no longer holds a server. Returns whether a cancel was sent to that server
    /// while it was held: Postgres delivers a cancel asynchronously, so such a server must be
    /// closed, not pooled, lest the cancel hit the next client's query.
    pub(crate) fn detach(&self) -> bool {
        let mut st = self.state.lock();
        st.target = None;
        std::mem::take(&mut st.cancelled)
    }

    fn take_for_cancel(&self) -> Option<CancelTarget> {
        let mut st = self.state.lock();
        let (info, secret) = st.target.as_ref()?;
        let target = CancelTarget {
            host: info.host.name.clone(),
            port: info.host.port,
            peer: info.addr,
            pid: info.pid(),
            secret: *secret,
        };
        st.cancelled = true;
        Some(target)
    }
}

/// Every logged-in client's key.
#[derive(Default)]
pub(crate) struct CancelMap {
    map: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
    /// peer_dns's last answer: when, for which name, the addresses.
    discovered: Mutex<Option<(Instant, String, Vec<IpAddr>)>>,
}

/// How long peer_dns's answer is used before the name is resolved again.
const DISCOVERY_TTL: Duration = Duration::from_secs(1);

/// The secret's top bit: set on a cancel one peer forwarded to another.
const FORWARDED: i32 = i32::MIN;

/// This process's peering: its id (0: none) and where the other peers listen; or the DNS name
/// of the fleet, its replicas' port, and the address this cancel came in at.
pub(crate) struct Peering<'a> {
    pub id: u16,
    pub peers: &'a std::collections::BTreeMap<String, crate::config::Peer>,
    pub dns: &'a str,
    pub dns_port: u16,
    pub local: Option<SocketAddr>,
}

/// The peer that issued a key: its peer_id, or its address tag (0: none in it).
fn issuer(pid: i32) -> u16 {
    ((pid >> 16) & 0x7fff) as u16
}

/// The tag a key issued to a client that reached this replica at `ip` carries (peer_dns):
/// FNV-1a of the address' bytes, in 1..=32767.
pub(crate) fn address_tag(ip: IpAddr) -> u16 {
    let h = match ip.to_canonical() {
        IpAddr::V4(a) => crate::pool::fnv1a(a.octets()),
        IpAddr::V6(a) => crate::pool::fnv1a(a.octets()),
    };
    (h % 32767) as u16 + 1
}

/// What a new client's key carries: peer_id, or with peer_dns the tag of the address the
/// client reached (`local`), else nothing (0).
pub(crate) fn key_tag(g: &crate::config::General, local: Option<SocketAddr>) -> u16 {
    match (g.peer_id, g.peer_dns.is_empty(), local) {
        (0, false, Some(a)) => address_tag(a.ip()),
        (id, _, _) => id,
    }
}

/// A client's registration; removes the key when dropped.
pub(crate) struct CancelKey {
    map: Arc<CancelMap>,
    pub pid: i32,
    pub secret: i32,
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.map.map.lock().remove(&self.pid);
    }
}

impl CancelMap {
    /// Give a new client a fresh random key; with a `peer_id` or address tag, one that carries
    /// it.
    pub(crate) fn register(self: &Arc<Self>, peer_id: u16) -> CancelKey {
        let mut rng = rand::thread_rng();
        let slot = Arc::new(CancelSlot::default());
        let mut map = self.map.lock();
        loop {
            let pid = match peer_id {
                0 => rng.gen_range(1..i32::MAX),
                id => (i32::from(id) << 16) | rng.gen_range(0..1 << 16),
            };
            if map.contains_key(&pid) {
                continue;
            }
            let secret = match peer_id {
                0 => rng.gen::<i32>(),
                _ => rng.gen::<i32>() & !FORWARDED,
            };
            return self.key(&mut map, pid, secret, slot);
        }
    }

    /// Give a client the key `pid` (its session-mode server's real pid) with a fresh random
    /// secret; a key of pgmux's own if another client has that pid already (two hosts may
    /// give the same pid), or with peering, whose keys must name their peer.
    pub(crate) fn register_as(self: &Arc<Self>, pid: i32, peer_id: u16) -> CancelKey {
        if peer_id == 0 {
            let mut map = self.map.lock();
            if pid > 0 && !map.contains_key(&pid) {
                let secret = rand::thread_rng().gen::<i32>();
                return self.key(&mut map, pid, secret, Arc::new(CancelSlot::default()));
            }
        }
        self.register(peer_id)
    }

    /// Record (pid, secret) for `slot` in `map` (this map, locked) and hand out the key.
    fn key(
        self: &Arc<Self>,
        map: &mut HashMap<i32, (i32, Arc<CancelSlot>)>,
        pid: i32,
        secret: i32,
        slot: Arc<CancelSlot>,
    ) -> CancelKey {
        map.insert(pid, (secret, slot.clone()));
        CancelKey {
            map: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Forward a CancelRequest to the server the client with this key holds now, or, with
    /// peering, to the peer that issued the key (once). Unknown keys, and clients holding no
    /// server, are ignored.
    pub(crate) async fn cancel(&self, pid: i32, mut secret: i32, peering: &Peering<'_>) {
        if peering.id == 0 && !peering.dns.is_empty() {
            return self.cancel_discovered(pid, secret, peering).await;
        }
        if peering.id != 0 {
            let forwarded = secret & FORWARDED != 0;
            secret &= !FORWARDED;
            let owner = issuer(pid);
            if owner != 0 && owner != peering.id {
                if forwarded {
                    tracing::warn!(
                        pid,
                        owner,
                        me = peering.id,
                        "a forwarded cancel request names another peer: not forwarded again \
                         (do the peers' [peers] sections agree?)"
                    );
                    return;
                }
                return forward(pid, secret | FORWARDED, owner, peering).await;
            }
        }
        let target = self.local(pid, secret).flatten();
        send_local(pid, target).await;
    }

    /// A key of this process: `None` if it issued no such key, else where the cancel goes
    /// (`None` inside: the client holds no server).
    fn local(&self, pid: i32, secret: i32) -> Option<Option<CancelTarget>> {
        let map = self.map.lock();
        match map.get(&pid) {
            Some((s, slot))
                if crate::auth::constant_time_eq(&s.to_be_bytes(), &secret.to_be_bytes()) =>
            {
                Some(slot.take_for_cancel())
            }
            _ => None,
        }
    }

    /// [`CancelMap::local`] for a cancel that may have been forwarded (its secret's top bit
    /// set). A key issued without a tag (a client on a Unix socket) keeps a random top bit, so
    /// the secret is tried as it came first, then without the mark.
    fn own_key(&self, pid: i32, secret: i32) -> Option<Option<CancelTarget>> {
        let forwarded = secret & FORWARDED != 0;
        self.local(pid, secret)
            .or_else(|| self.local(pid, secret & !FORWARDED).filter(|_| forwarded))
    }

    /// [`CancelMap::cancel`] with peer_dns: this replica's own key, or forwarded once to the
    /// replicas of the name whose address has the key's tag.
    async fn cancel_discovered(&self, pid: i32, secret: i32, peering: &Peering<'_>) {
        let forwarded = secret & FORWARDED != 0;
        if let Some(target) = self.own_key(pid, secret) {
            return send_local(pid, target).await;
        }
        let secret = secret & !FORWARDED;
        if forwarded {
            tracing::info!(
                pid,
                "a forwarded cancel request for an unknown key: ignored"
            );
            return;
        }
        let tag = issuer(pid);
        let me = peering.local.map(|a| a.ip().to_canonical());
        let port = match peering.dns_port {
            0 => peering.local.map_or(6432, |a| a.port()),
            p => p,
        };
        let addrs = self.discover(peering.dns, port).await;
        let to: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|a| Some(*a) != me && address_tag(*a) == tag)
            .collect();
        if to.is_empty() {
            tracing::info!(
                pid,
                tag,
                name = peering.dns,
                "cancel request for an unknown key, and no replica of peer_dns has its tag: ignored"
            );
        }
        for addr in to {
            let target = CancelTarget {
                host: addr.to_string(),
                port,
                peer: Some(SocketAddr::new(addr, port)),
                pid,
                secret: secret | FORWARDED,
            };
            tracing::info!(pid, tag, replica = %SocketAddr::new(addr, port),
                "forwarding cancel request to the replica that issued its key");
            if let Err(e) = server::send_cancel(&target).await {
                tracing::warn!(replica = %addr, "forwarding a cancel request failed: {e}");
            }
        }
    }

    /// The addresses `name` resolves to (at most DISCOVERY_TTL old). With PGMUX_HOSTS_FILE
    /// set, a hosts-format file that names `name` answers instead of DNS (tests, and setups
    /// without a resolver).
    async fn discover(&self, name: &str, port: u16) -> Vec<IpAddr> {
        if let Some((at, n, addrs)) = &*self.discovered.lock() {
            if n == name && at.elapsed() < DISCOVERY_TTL {
                return addrs.clone();
            }
        }
        let mut addrs = match std::env::var_os("PGMUX_HOSTS_FILE") {
            Some(f) => hosts_file(&std::fs::read_to_string(f).unwrap_or_default(), name),
            None => Vec::new(),
        };
        if addrs.is_empty() {
            match tokio::net::lookup_host((name, port)).await {
                Ok(found) => addrs = found.map(|a| a.ip().to_canonical()).collect(),
                Err(e) => tracing::warn!(name, "peer_dns: cannot resolve: {e}"),
            }
        }
        addrs.sort();
        addrs.dedup();
        *self.discovered.lock() = Some((Instant::now(), name.to_string(), addrs.clone()));
        addrs
    }
}

/// The addresses a hosts-format text (`address name...` per line, `#` comments) gives `name`.
fn hosts_file(text: &str, name: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split('#').next()?.split_whitespace();
            let addr: IpAddr = words.next()?.parse().ok()?;
            words
                .any(|w| w.eq_ignore_ascii_case(name))
                .then(|| addr.to_canonical())
        })
        .collect()
}

/// Send a cancel for one of this process's keys to the server its client holds.
async fn send_local(pid: i32, target: Option<CancelTarget>) {
    match target {
        Some(t) => {
            tracing::info!(pid, server_pid = t.pid, "forwarding cancel request");
            if let Err(e) = server::send_cancel(&t).await {
                tracing::warn!("cancel request failed: {e}");
            }
        }
        None => tracing::info!(
            pid,
            "cancel request for an unknown key or idle client ignored"
        ),
    }
}

/// Send a cancel for a key `owner` issued to that peer.
async fn forward(pid: i32, secret: i32, owner: u16, peering: &Peering<'_>) {
    let Some(peer) = peering.peers.get(&owner.to_string()) else {
        tracing::warn!(
            pid,
            owner,
            "cancel request for a peer not in [peers]: ignored"
        );
        return;
    };
    let target = CancelTarget {
        host: peer.host.clone(),
        port: peer.port,
        peer: None,
        pid,
        secret,
    };
    tracing::info!(pid, owner, peer = %format!("{}:{}", peer.host, peer.port),
        "forwarding cancel request to its peer");
    if let Err(e) = server::send_cancel(&target).await {
        tracing::warn!(owner, "forwarding a cancel request to its peer failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_keys_carry_their_peer_and_stay_positive() {
        let map = Arc::new(CancelMap::default());
        for id in [1u16, 2, 16383] {
            for _ in 0..200 {
                let k = map.register(id);
                assert!(k.pid > 0, "{}", k.pid);
                assert_eq!(issuer(k.pid), id);
                assert_eq!(k.secret & FORWARDED, 0);
            }
        }
        let k = map.register(0);
        assert!(k.pid > 0);
        // Address tags use bit 30 too, and the pid stays positive.
        let k = map.register(32767);
        assert!(k.pid > 0);
        assert_eq!(issuer(k.pid), 32767);
    }

    #[test]
    fn keys_without_a_tag_are_found_whatever_their_top_bit() {
        let map = Arc::new(CancelMap::default());
        let keys: Vec<_> = (0..64).map(|_| map.register(0)).collect();
        let marked = keys.iter().find(|k| k.secret & FORWARDED != 0).unwrap();
        let clear = keys.iter().find(|k| k.secret & FORWARDED == 0).unwrap();
        // As issued, and a clear one as forwarded (marked by another replica).
        assert!(map.own_key(marked.pid, marked.secret).is_some());
        assert!(map.own_key(clear.pid, clear.secret).is_some());
        assert!(map.own_key(clear.pid, clear.secret | FORWARDED).is_some());
        // A wrong secret is nobody's.
        assert!(map
            .own_key(marked.pid, marked.secret & !FORWARDED)
            .is_none());
        assert!(map.own_key(clear.pid, clear.secret ^ 1).is_none());
    }

    #[test]
    fn address_tags_are_stable_and_never_zero() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(address_tag(a), address_tag(a));
        assert_ne!(address_tag(a), address_tag("10.1.2.4".parse().unwrap()));
        // An IPv4 client reaching a dual-stack listener has the same tag.
        assert_eq!(
            address_tag(a),
            address_tag("::ffff:10.1.2.3".parse().unwrap())
        );
        for i in 0..=255u8 {
            let t = address_tag(IpAddr::from([192, 168, 0, i]));
            assert!((1..=32767).contains(&t));
        }
    }

    #[test]
    fn hosts_files_name_every_address() {
        let text = "# fleet\n127.0.0.1 localhost\n127.0.0.2 pgmux-fleet other\n\
                    127.0.0.3 pgmux-fleet # third\nbad line\n::1 PGMUX-FLEET\n";
        let got = hosts_file(text, "pgmux-fleet");
        let want: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        assert!(hosts_file(text, "nothing").is_empty());
    }
}
