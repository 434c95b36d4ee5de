//! A server checked out of its pool, as a value: released, closed, or (when dropped, say by a
//! panic or a task cancelled mid-request) closed with its slot and limit units given back.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slot::Slot;
use super::Pool;
use crate::server::Server;

/// A checked-out server. Whoever holds one owns the server and its [`Slot`]: it ends in
/// [`release`](Checked::release), [`close`](Checked::close) or
/// [`close_busy`](Checked::close_busy), and a `Checked` dropped without any of them closes
/// the server as busy (its state is unknown), so no slot, limit unit or SHOW SERVERS row
/// outlives its holder.
pub(crate) struct Checked {
    inner: Option<(Box<Server>, Slot)>,
}

impl Checked {
    pub(super) fn new(server: Box<Server>, slot: Slot) -> Checked {
        Checked {
            inner: Some((server, slot)),
        }
    }

    /// The server and its slot, for the pool to pass on.
    pub(super) fn into_parts(mut self) -> (Box<Server>, Slot) {
        self.inner
            .take()
            .expect("a Checked holds its server until it ends")
    }

    /// The pool it came from.
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        self.inner.as_ref().expect("held until it ends").1.pool()
    }

    /// Give it back to its pool (which may still close it: lifetime, reload, pause).
    pub(crate) fn release(self) {
        let life = self.pool().settings().server_lifetime;
        self.release_at(Instant::now(), life);
    }

    /// [`Checked::release`], idle since `now` (a clock read the caller already made), with
    /// the pool's server_lifetime as the caller read it.
    pub(crate) fn release_at(self, now: Instant, server_lifetime: Option<Duration>) {
        let (s, slot) = self.into_parts();
        slot.pool().clone().release(s, slot, now, server_lifetime);
    }

    /// Close it: it is idle (nothing runs on it), logging why.
    pub(crate) fn close(self, reason: &str) {
        let (s, slot) = self.into_parts();
        Pool::close_checked(s, slot, reason);
    }

    /// Close it while a request may still run on it: cancelled, and its slot kept until
    /// Postgres has ended the session (`reap.rs`).
    pub(crate) fn close_busy(self, reason: &str) {
        let (s, slot) = self.into_parts();
        Pool::close_busy(s, slot, reason);
    }
}

impl Deref for Checked {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.inner.as_ref().expect("held until it ends").0
    }
}

impl DerefMut for Checked {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.inner.as_mut().expect("held until it ends").0
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        let Some((s, slot)) = self.inner.take() else {
            return;
        };
        let reason = match std::thread::panicking() {
            true => "its client task panicked while holding it",
            false => "dropped while checked out (its state is unknown)",
        };
        // Reaping needs a runtime to run on; without one (a runtime shutting down) the
        // socket is simply closed.
        match tokio::runtime::Handle::try_current() {
            Ok(_) => Pool::close_busy(s, slot, reason),
            Err(_) => Pool::close_checked(s, slot, reason),
        }
    }
}
