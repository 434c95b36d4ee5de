//! Cancel keys: the (pid, secret) pgmux gives each client, and where a cancel for it goes now.

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
    /// Give a new client a fresh random key.
    pub(crate) fn register(self: &Arc<Self>) -> CancelKey {
        let mut rng = rand::thread_rng();
        let slot = Arc::new(CancelSlot::default());
        let mut map = self.map.lock();
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            if map.contains_key(&pid) {
                continue;
            }
            let secret = rng.gen::<i32>();
            map.insert(pid, (secret, slot.clone()));
            return CancelKey {
                map: self.clone(),
                pid,
                secret,
                slot,
            };
        }
    }

    /// Give a client the key `pid` (its session-mode server's real pid) with a fresh random
    /// secret; a key of pgmux's own if another client has that pid already (two hosts may
    /// give the same pid).
    pub(crate) fn register_as(self: &Arc<Self>, pid: i32) -> CancelKey {
        {
            let mut map = self.map.lock();
            if pid > 0 && !map.contains_key(&pid) {
                let slot = Arc::new(CancelSlot::default());
                let secret = rand::thread_rng().gen::<i32>();
                map.insert(pid, (secret, slot.clone()));
                return CancelKey {
                    map: self.clone(),
                    pid,
                    secret,
                    slot,
                };
            }
        }
        self.register()
    }

    /// Forward a CancelRequest to the server the client with this key holds now.
    /// Unknown keys, and clients holding no server, are ignored.
    pub(crate) async fn cancel(&self, pid: i32, secret: i32) {
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
