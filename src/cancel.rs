//! Cancel keys: the (pid, secret) pgmux gives each client, and where a cancel for it goes now.
//!
//! With peering (`peer_id`, `[peers]`, PgBouncer's names), a key says which peer issued it:
//! the pid's bits 16-29 are that peer's id (the pid stays positive), the low 16 bits and the
//! secret's 31 low bits are random. A cancel for another peer's key is forwarded there once,
//! with the secret's top bit set; a peer never forwards a key that has it, so a cancel is
//! never forwarded twice and never loops, whatever the configs say. A key reveals the id of
//! the peer that issued it, nothing else; forging one is as hard as guessing 31 random bits
//! of secret (Postgres' own key has 32), and the worst it does is cancel a query.

use std::collections::HashMap;
use std::sync::Arc;

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
}

/// The secret's top bit: set on a cancel one peer forwarded to another.
const FORWARDED: i32 = i32::MIN;

/// This process's peering: its id (0: none) and where the other peers listen.
pub(crate) struct Peering<'a> {
    pub id: u16,
    pub peers: &'a std::collections::BTreeMap<String, crate::config::Peer>,
}

/// The peer that issued a key (0: no peer id in it).
fn issuer(pid: i32) -> u16 {
    ((pid >> 16) & 0x3fff) as u16
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
    /// Give a new client a fresh random key; with `peer_id`, one that carries it.
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
        let target = {
            let map = self.map.lock();
            match map.get(&pid) {
                Some((s, slot))
                    if crate::auth::constant_time_eq(&s.to_be_bytes(), &secret.to_be_bytes()) =>
                {
                    slot.take_for_cancel()
                }
                _ => None,
            }
        };
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
    }
}
