//! Room for one checked-out server in its pool, as a value: counted in the pool's `open` and
//! `active` and holding one unit of each shared cap, given back when it is dropped.
//!
//! Every path that takes a server out of a pool holds a `Slot`: a waiter's grant of room to
//! open a server, the opening itself, a [`Checked`] server, a server being reaped. Whatever
//! ends that path (an error, a timeout, a client leaving, a panic, a grant sent to a waiter
//! who left) drops the `Slot`, and the room goes to the next waiter. Only two moves end a
//! `Slot` without freeing its room, both under the pool's lock: its server going idle
//! ([`Slot::into_idle`]) and a grant nobody took ([`Slot::undo`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Checked, Pool, State};
use crate::error::ConnectError;
use crate::server::Server;

/// One checked-out place in a pool (see the module docs).
pub(super) struct Slot {
    pool: Arc<Pool>,
    /// Whether its room is still held: false once it moved into the idle list or was undone.
    held: bool,
    /// A server is logging in for it (counted in the pool's `logins`).
    logging_in: bool,
}

impl Slot {
    /// The room was taken under the lock (`open`, the caps and `active` counted already).
    pub(super) fn taken(pool: Arc<Pool>) -> Slot {
        Slot {
            pool,
            held: true,
            logging_in: false,
        }
    }

    pub(super) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Its server goes into the idle list (under the lock): it stays open, no longer active.
    pub(super) fn into_idle(mut self, st: &mut State) {
        st.active -= 1;
        self.held = false;
    }

    /// A grant that found no waiter to take it (under the lock): the room is given back
    /// without being granted again, which the caller is doing.
    pub(super) fn undo(mut self, st: &mut State) {
        st.active -= 1;
        st.open -= 1;
        self.pool.db_limit.release();
        self.pool.user_limit.release();
        if let Some(b) = &self.pool.budget {
            b.release();
        }
        self.held = false;
    }

    /// Open a server in this room. If the opening fails or is dropped part-way (a login
    /// timeout, its client leaving), the room is given back.
    pub(super) async fn open(mut self, reserve: bool) -> Result<Checked, ConnectError> {
        let pool = self.pool.clone();
        pool.logins.fetch_add(1, Ordering::Relaxed);
        self.logging_in = true;
        let opened = pool.open_server(reserve).await;
        self.logging_in = false;
        pool.logins.fetch_sub(1, Ordering::Relaxed);
        opened.map(|s: Box<Server>| Checked::new(s, self))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.logging_in {
            self.pool.logins.fetch_sub(1, Ordering::Relaxed);
        }
        if self.held {
            self.pool.server_gone(true);
        }
    }
}
