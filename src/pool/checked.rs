//! A server checked out of its pool, as a value: released, closed, or (when dropped, say by a
//! panic or a task cancelled mid-request) closed with its slot and limit units given back.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::Pool;
use crate::server::Server;

/// A checked-out server. Whoever holds one owns the server's place in the pool: it ends in
/// [`release`](Checked::release), [`close`](Checked::close) or
/// [`close_busy`](Checked::close_busy), and a `Checked` dropped without any of them closes
/// the server as busy (its state is unknown), so no slot, limit unit or SHOW SERVERS row
/// outlives its holder.
pub struct Checked {
    pool: Arc<Pool>,
    server: Option<Server>,
}

impl Checked {
    pub(super) fn new(pool: Arc<Pool>, server: Server) -> Checked {
        Checked {
            pool,
            server: Some(server),
        }
    }

    /// The pool it came from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    fn take(&mut self) -> Server {
        self.server
            .take()
            .expect("a Checked holds its server until it ends")
    }

    /// Give it back to its pool (which may still close it: lifetime, reload, pause).
    pub fn release(mut self) {
        let s = self.take();
        self.pool.release(s);
    }

    /// Close it: it is idle (nothing runs on it), logging why.
    pub fn close(mut self, reason: &str) {
        let s = self.take();
        self.pool.close(s, true, reason);
    }

    /// Close it while a request may still run on it: cancelled, and its slot kept until
    /// Postgres has ended the session (`reap.rs`).
    pub fn close_busy(mut self, reason: &str) {
        let s = self.take();
        self.pool.close_busy(s, reason);
    }
}

impl Deref for Checked {
    type Target = Server;
    fn deref(&self) -> &Server {
        self.server.as_ref().expect("held until it ends")
    }
}

impl DerefMut for Checked {
    fn deref_mut(&mut self) -> &mut Server {
        self.server.as_mut().expect("held until it ends")
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        let Some(s) = self.server.take() else { return };
        let reason = match std::thread::panicking() {
            true => "its client task panicked while holding it",
            false => "dropped while checked out (its state is unknown)",
        };
        // Reaping needs a runtime to run on; without one (a runtime shutting down) the
        // socket is simply closed.
        match tokio::runtime::Handle::try_current() {
            Ok(_) => self.pool.close_busy(s, reason),
            Err(_) => self.pool.close(s, true, reason),
        }
    }
}
