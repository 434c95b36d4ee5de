//! Requests pgmux answers without a server: named Parses, then Sync, of statements a server of
//! the pool has already accepted.
//!
//! libpq's `PQprepare` is synchronous: `pgbench -M prepared` calls it for every statement of its
//! script on a client's first transaction, blocking the thread that also drives other clients
//! which hold servers inside their transactions. If that Parse had to wait for a server, a
//! pool smaller than the number of clients would deadlock: the servers wait for clients whose
//! thread waits for a server. Answering such a Parse in place needs no server at all; the
//! statement is prepared on whichever server the client's first Bind or Describe of it runs on,
//! as for any mapped statement.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::Relay;
use crate::config::PoolMode;
use crate::prepared::messages::read_parse;
use crate::prepared::Statement;
use crate::proto::{self, backend};

/// Most Parses in one such request (pgbench's scripts have a few).
const MAX_PARSES: usize = 64;

impl Relay {
    /// When the request at the front of `cbuf` is whole in it and is only named Parses of
    /// statements the pool knows to be good, under names the client does not use yet, then a
    /// Sync: take it from `cbuf`, record the client's names, and return the answer Postgres
    /// would give (ParseComplete for each, ReadyForQuery idle). `None`: it needs a server.
    pub(super) fn prepare_alone(&mut self, cbuf: &mut BytesMut) -> Option<BytesMut> {
        // Most requests start otherwise: known from two bytes, before any setting is read.
        if cbuf.first() != Some(&b'P') || cbuf.get(5).map_or(true, |&b| b == 0) {
            return None;
        }
        let pool = &self.sess.pool;
        let settings = self.settings.get(pool);
        if settings.mode == PoolMode::Session || pool.target().max_prepared_statements == 0 {
            return None;
        }
        let max_packet = settings.max_packet;
        let mut at = 0;
        let mut found: Vec<(Box<[u8]>, Arc<Statement>)> = Vec::new();
        loop {
            let (tag, len) = proto::header(&cbuf[at..], max_packet).ok()??;
            if cbuf.len() - at < len {
                return None;
            }
            match tag {
                b'P' if found.len() < MAX_PARSES => {
                    // The unnamed statement (most extended-protocol requests) is never
                    // answered alone: known before its query is read.
                    if cbuf.get(at + 5).map_or(true, |&b| b == 0) {
                        return None;
                    }
                    let p = read_parse(&cbuf[at + 5..at + len])?;
                    let taken = |n: &[u8]| {
                        self.statements.as_ref().is_some_and(|m| m.contains_key(n))
                            || found.iter().any(|(f, _)| &**f == n)
                    };
                    if p.name.is_empty() || taken(p.name) {
                        return None;
                    }
                    let stmt = pool.statements.lock().get(p.query, &p.param_types);
                    if !stmt.known_good() {
                        return None;
                    }
                    found.push((p.name.into(), stmt));
                }
                b'S' if !found.is_empty() => {
                    at += len;
                    break;
                }
                _ => return None,
            }
            at += len;
        }
        cbuf.advance(at);
        let n = found.len() as u64;
        pool.stats.ps_client_parses.fetch_add(n, Relaxed);
        pool.stats.ps_hits.fetch_add(n, Relaxed);
        let mut out = BytesMut::with_capacity(5 * found.len() + 6);
        let map = self.statements.get_or_insert_with(Default::default);
        for (name, stmt) in found {
            map.insert(name, stmt);
            backend::message(&mut out, b'1', |_| {});
        }
        backend::ready_for_query(&mut out, b'I');
        self.handle.info.prepared.store(map.len() as u32, Relaxed);
        Some(out)
    }
}
