//! State that cannot move between servers (session advisory locks, temporary tables, WITH
//! HOLD cursors, SQL PREPARE, LISTEN, LOAD) pins its client to its server, in transaction and
//! statement mode, until it is gone.
//!
//! As with settings, pgmux does not guess: after a transaction whose statements may have
//! made or dropped such state (`sql::Touch`), it asks Postgres what the session holds
//! ([`STATE_QUERY`]), and keeps the server while anything is held.

use std::time::Duration;

use super::{Relay, Txn};
use crate::pool::PoolStats;

/// The LOAD bit of `clients::PIN_REASONS` (the others are [`STATE_QUERY`]'s columns).
const LOAD: u8 = 1 << 5;

/// What the session holds that another server would not have, one boolean per reason.
const STATE_QUERY: &str = "SELECT \
    EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' \
      AND pid = pg_catalog.pg_backend_pid() AND granted), \
    EXISTS (SELECT 1 FROM pg_catalog.pg_class \
      WHERE relnamespace = pg_catalog.pg_my_temp_schema()), \
    EXISTS (SELECT 1 FROM pg_catalog.pg_cursors WHERE is_holdable), \
    EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE from_sql), \
    EXISTS (SELECT 1 FROM pg_catalog.pg_listening_channels())";

/// The LISTEN bit of `clients::PIN_REASONS`: never left set, the channels move to the
/// pool's listener.
const LISTEN: u8 = 1 << 4;

/// Whether the transaction that just ended may leave its client pinned (or unpinned), or
/// changed what it listens to.
pub(super) fn may_hold(t: &Txn) -> bool {
    t.pinned != 0
        || asks(t)
        || (t.touched.as_ref()).is_some_and(|x| x.unlisten_all || !x.unlisten.is_empty())
}

/// Whether `settle_pin` will ask the server what it holds: then the answer that ends the
/// transaction waits for it (a LISTEN must be the listener's before the client knows it is
/// done).
pub(super) fn asks(t: &Txn) -> bool {
    (t.touched.as_ref()).is_some_and(|x| x.creates || x.load || (x.drops && t.pinned != 0))
}

impl Relay {
    /// At the end of a transaction that may have made or dropped state: ask the server what
    /// it holds. Returns whether the client stays pinned to it; `Err` when the server failed.
    pub(super) async fn settle_pin(&mut self, t: &mut Txn) -> Result<bool, String> {
        let check = asks(t);
        let Some(x) = t.touched.as_mut() else {
            return Ok(t.pinned != 0);
        };
        // UNLISTEN: the server it ran on listened to nothing; the listener stops serving it.
        if x.unlisten_all || !x.unlisten.is_empty() {
            let channels = (!x.unlisten_all).then(|| std::mem::take(&mut x.unlisten));
            x.unlisten_all = false;
            x.unlisten.clear();
            if let Some(l) = self.listening() {
                l.unlisten(channels);
            }
        }
        let load = std::mem::take(&mut x.load);
        (x.creates, x.drops) = (false, false);
        if load {
            t.pinned |= LOAD;
        }
        if !check {
            return Ok(t.pinned != 0);
        }
        // What the client is still owed (its ReadyForQuery) waits until this is settled: the
        // answers come through the same buffer, and a LISTEN must be the listener's before the
        // client knows it is done.
        let held = t.server.rbuf.split_to(t.s_ready);
        t.s_ready = 0;
        let rows = hidden(t, STATE_QUERY).await?;
        let mut bits = t.pinned & LOAD;
        for (i, v) in rows.first().into_iter().flatten().enumerate() {
            if v.as_deref() == Some("t") {
                bits |= 1 << i;
            }
        }
        if bits & LISTEN != 0 {
            // The channels move to the pool's listener; the server listens to none again.
            let sql = "SELECT pg_catalog.pg_listening_channels(); UNLISTEN *";
            let channels: Vec<String> = (hidden(t, sql).await?.into_iter())
                .filter_map(|row| row.into_iter().next().flatten())
                .collect();
            let pool = &self.sess.pool;
            let l = (self.rare.get_or_insert_with(Default::default).listening)
                .get_or_insert_with(|| pool.subscribe());
            l.listen(channels).await;
            self.handle.info.never_park();
            bits &= !LISTEN;
        }
        if !held.is_empty() {
            self.client
                .send_all(&held)
                .await
                .map_err(|e| e.to_string())?;
            PoolStats::add(&self.sess.pool.stats.bytes_sent, held.len() as u64);
        }
        if bits != t.pinned {
            let span = self.handle.info.span();
            match bits {
                0 => span.in_scope(|| tracing::info!("client unpinned: its server goes back")),
                _ => span.in_scope(|| {
                    tracing::info!(
                        "client pinned to its server (server {}): {}",
                        t.server.id,
                        crate::clients::pin_reasons(bits)
                    )
                }),
            }
            self.handle.info.set_pinned(bits);
        }
        t.pinned = bits;
        Ok(bits != 0)
    }
}

/// One of pgmux's own queries on the client's server, within 10 s.
async fn hidden(t: &mut Txn, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    match tokio::time::timeout(Duration::from_secs(10), t.server.hidden_rows(sql)).await {
        Ok(r) => r.map_err(|e| format!("asking what the session holds failed: {e}")),
        Err(_) => Err("asking what the session holds timed out".into()),
    }
}

/// A client that leaves its state behind: end it with DISCARD ALL so the server goes back
/// clean. `Err`: why the server must close instead (a LOAD, or the DISCARD failed).
pub(super) async fn discard(t: &mut Txn) -> Result<(), &'static str> {
    if t.pinned & LOAD != 0 || t.touched.as_ref().is_some_and(|x| x.load) {
        return Err("its client loaded a library (LOAD)");
    }
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(10), t.server.run_hidden("DISCARD ALL")).await,
        Ok(Ok(b'I'))
    );
    if !ok {
        return Err("DISCARD ALL after a pinned client failed");
    }
    t.server.settings.clear();
    Ok(())
}
