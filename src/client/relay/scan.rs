//! Reading message headers on the relay path: what the client sent (requests, Syncs, COPY
//! ends) and what the server answered (ReadyForQuery, ParameterStatus), and where the write
//! head stands in the client's stream.

use std::time::Instant;

use bytes::BytesMut;

use super::prepared::Track;
use super::state::{Ready, Sent};
use super::{Relay, Txn, CAP};
use crate::pool::PoolStats;
use crate::prepared::queue::Verdict;
use crate::proto;
use crate::server::params::{parse_parameter_status, tracked_index};
use crate::sql::Touch;

/// After `n` bytes at the front of `cbuf` went to the server, how much of the message then at
/// the write head is still unsent. Written bytes were scanned, so every message they start has
/// its whole header in `cbuf`.
pub(super) fn advance_head(mut remaining: usize, cbuf: &[u8], mut n: usize) -> usize {
    let mut at = 0;
    loop {
        if n <= remaining {
            return remaining - n;
        }
        n -= remaining;
        at += remaining;
        remaining = match proto::header(&cbuf[at..], usize::MAX) {
            Ok(Some((_, len))) => len,
            _ => return 0,
        };
    }
}

/// What a Query or Parse would make that pins its client, if anything.
fn refusal(tag: u8, body: &[u8]) -> Option<&'static str> {
    let query = match tag {
        b'P' => proto::cstr(body)?.1,
        _ => body,
    };
    crate::sql::touch(query)?.refuse
}

/// Replace the Query or Parse at `at` (`len` bytes, whole in `cbuf`) with one that makes
/// Postgres fail with 0A000 saying why, so the client gets the error where the statement
/// would have run, with the transaction state Postgres gives it. A Parse keeps its name and
/// parameter types (a driver that left those to Postgres may see its own complaint about the
/// parameters first).
fn refuse_message(cbuf: &mut BytesMut, at: usize, len: usize, tag: u8, why: &str) {
    let message = format!(
        "pgmux: this statement would make {why}, which ties a client to one server; \
         pin_on_session_state = error refuses it"
    );
    let sql = format!(
        "DO $pgmux$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', \
         MESSAGE = {}, HINT = {}; END $pgmux$",
        crate::proto::backend::quote_literal(&message),
        crate::proto::backend::quote_literal(
            "Run it in a session-mode pool, or set pin_on_session_state = pin."
        ),
    );
    let body = &cbuf[at + 5..at + len];
    let mut out = BytesMut::with_capacity(sql.len() + 64);
    crate::proto::backend::message(&mut out, tag, |b| {
        if tag == b'P' {
            // name, then (past the query) the parameter types as sent.
            let name_end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
            let query_end = (body[name_end + 1..].iter().position(|&c| c == 0))
                .map_or(body.len(), |i| name_end + 1 + i + 1);
            b.extend_from_slice(&body[..=name_end]);
            b.extend_from_slice(sql.as_bytes());
            b.extend_from_slice(&[0]);
            b.extend_from_slice(&body[query_end..]);
        } else {
            b.extend_from_slice(sql.as_bytes());
            b.extend_from_slice(&[0]);
        }
    });
    let tail = cbuf.split_off(at + len);
    cbuf.truncate(at);
    cbuf.extend_from_slice(&out);
    cbuf.extend_from_slice(&tail);
}

/// What a mapped statement's text touches, counted at its Bind (`prepared.rs`), as
/// `Relay::touched` counts a Parse's.
pub(super) fn bound(
    s: &crate::pool::PoolSettings,
    touched: &mut Option<Box<Touch>>,
    stmt_touch: Option<&Touch>,
) {
    let Some(touch) = stmt_touch else { return };
    if !s.reads_queries {
        return;
    }
    let touch = carried(s, touch.clone());
    if !touch.is_empty() {
        merge(touched, touch);
    }
}

/// `touch` with only the names pgmux carries itself: not the tracked parameters (they follow
/// ParameterStatus), and without track_session_settings only track_extra_parameters.
fn carried(s: &crate::pool::PoolSettings, mut touch: Touch) -> Touch {
    touch.names.retain(|n| {
        tracked_index(n).is_none()
            && (s.track_session_settings || s.track_extra_parameters.contains(n))
    });
    touch
}

/// Add what `touch` names to what the request touched so far.
fn merge(touched: &mut Option<Box<Touch>>, touch: Touch) {
    match touched {
        None => *touched = Some(Box::new(touch)),
        Some(had) => {
            had.all |= touch.all;
            had.unknown |= touch.unknown;
            had.creates |= touch.creates;
            had.drops |= touch.drops;
            had.load |= touch.load;
            had.unlisten_all |= touch.unlisten_all;
            had.unlisten.extend(touch.unlisten);
            for n in touch.names {
                if !had.names.contains(&n) {
                    had.names.push(n);
                }
            }
        }
    }
}

impl Relay {
    /// Note the settings a Query, a Parse, or the Bind of a statement whose Parse named some,
    /// may change (tracked parameters follow ParameterStatus instead).
    fn touched(&mut self, t: &mut Txn, tag: u8, body: &[u8]) {
        let s = &t.settings;
        let touch = match tag {
            b'P' => {
                let Some((name, query)) = proto::cstr(body) else {
                    return;
                };
                let touch = crate::sql::touch(query).map(|touch| carried(s, touch));
                // A statement bound later (another request, maybe) touches them again. (Most
                // Parses touch nothing, and most clients keep no list.)
                let touches = touch.as_ref().is_some_and(|t| !t.is_empty());
                if let Some(rare) = self.rare.as_mut() {
                    rare.touching.retain(|(n, _)| **n != *name);
                }
                if let Some(touch) = touch.as_ref().filter(|_| touches) {
                    self.rare().touching.push((name.into(), touch.clone()));
                }
                touch
            }
            b'B' => {
                let Some((_portal, rest)) = proto::cstr(body) else {
                    return;
                };
                let Some((name, _)) = proto::cstr(rest) else {
                    return;
                };
                let list = self.touching();
                // (A statement pgmux maps says what it touches at its Bind: `prepared.rs`.)
                (list.iter().find(|(n, _)| **n == *name)).map(|(_, touch)| touch.clone())
            }
            _ => crate::sql::touch(body).map(|touch| carried(s, touch)),
        };
        if let Some(touch) = touch.filter(|touch| !touch.is_empty()) {
            merge(&mut t.touched, touch);
        }
    }

    /// Count a query (a ReadyForQuery) and, when it ends one, a transaction.
    fn count_query(&self, t: &mut Txn) {
        let pool = &self.sess.pool;
        let now = Instant::now();
        t.answer_at = now;
        let q = now.saturating_duration_since(t.query_start);
        let hist = &t.settings.hist;
        PoolStats::add(&pool.stats.queries, 1);
        PoolStats::add(&pool.stats.query_us, q.as_micros() as u64);
        hist.query.observe(q.as_secs_f64());
        if t.state.transaction_ended() {
            // Most transactions are one query: the same duration.
            let x = match t.xact_start == t.query_start {
                true => q,
                false => now.saturating_duration_since(t.xact_start),
            };
            PoolStats::add(&pool.stats.xacts, 1);
            PoolStats::add(&pool.stats.xact_us, x.as_micros() as u64);
            hist.xact.observe(x.as_secs_f64());
        }
    }

    /// Read client message headers in `cbuf` past `c_ready`.
    pub(super) fn scan_client(&mut self, t: &mut Txn, cbuf: &mut BytesMut) -> Result<(), String> {
        t.c_want = 0;
        let mut stop_keeping = false;
        while t.c_ready < cbuf.len() {
            if t.c_skip > 0 {
                let n = t.c_skip.min(cbuf.len() - t.c_ready);
                t.c_ready += n;
                t.c_skip -= n;
                continue;
            }
            let Some((tag, len)) = proto::header(&cbuf[t.c_ready..], t.settings.max_packet)? else {
                break;
            };
            // A query that may change session settings is read whole (up to CAP bytes).
            let tracks = t.settings.reads_queries;
            let reads = match tag {
                b'Q' | b'P' => tracks,
                b'B' => tracks && !self.touching().is_empty(),
                _ => false,
            };
            if reads {
                let end = t.c_ready + len;
                if end > cbuf.len() && len <= CAP {
                    t.c_want = end;
                    break;
                }
                let body = &cbuf[t.c_ready + 5..end.min(cbuf.len())];
                // pin_on_session_state = "error": what would pin the client fails instead.
                let refuse = t.settings.refuse_pinning && end <= cbuf.len();
                if let Some(why) = refuse.then(|| refusal(tag, body)).flatten() {
                    refuse_message(cbuf, t.c_ready, len, tag, why);
                    continue;
                }
                self.touched(t, tag, body);
            }
            if t.keeping && !t.keeps_after(cbuf, tag, len) {
                stop_keeping = true;
            }
            if t.state.idle() && !std::mem::take(&mut t.started_now) {
                // A new query starts (and a transaction, if none is open).
                let now = Instant::now();
                t.query_start = now;
                if t.state.status() == b'I' {
                    t.xact_start = now;
                }
            }
            // With prepared statements mapped, a message may be rewritten first: `ready`
            // bytes of whole messages, then `rest` bytes of its body as the client sent them.
            let (ready, rest) = if tag != b'X' && self.maps(t, tag) {
                match self.track_client(t, cbuf, tag, len) {
                    Track::Wait(want) => {
                        t.c_want = want;
                        break;
                    }
                    Track::Go { ready, rest } => (ready, rest),
                }
            } else {
                (0, len)
            };
            if t.state.client(tag) == Sent::Terminate {
                // Terminate is never forwarded to a pooled server.
                cbuf.truncate(t.c_ready);
                break;
            }
            t.c_ready += ready;
            let n = rest.min(cbuf.len() - t.c_ready);
            t.c_ready += n;
            t.c_skip = rest - n;
        }
        let before = t.s_ready;
        self.emit_fakes(t);
        if stop_keeping || t.s_ready != before {
            // The client has an answer from pgmux: the request can no longer be re-sent.
            t.stop_keeping(cbuf);
        }
        Ok(())
    }

    /// A ReadyForQuery was relayed: the server's with its status, or pgmux's own (`None`:
    /// the status last reported). Returns whether the transaction is over and the server may
    /// go back to the pool.
    pub(super) fn answered(&self, t: &mut Txn, status: Option<u8>) -> bool {
        let ready = match status {
            Some(s) => t.state.server_ready(s),
            None => t.state.answered(),
        };
        self.count_query(t);
        ready == Ready::Boundary
    }

    /// Read server message headers past `s_ready`, acting on the few that matter.
    pub(super) fn scan_server(&mut self, t: &mut Txn) -> Result<(), String> {
        let max = t.server.target.max_packet_size;
        while t.s_ready < t.server.rbuf.len() {
            if t.s_skip > 0 {
                let n = t.s_skip.min(t.server.rbuf.len() - t.s_ready);
                t.s_ready += n;
                t.s_skip -= n;
                continue;
            }
            if self.emit_fakes(t) {
                return Ok(());
            }
            let avail = t.server.rbuf.len() - t.s_ready;
            let Some((tag, len)) = proto::header(&t.server.rbuf[t.s_ready..], max)? else {
                break;
            };
            if t.prep.is_some() {
                match self.track_server(t, tag, len)? {
                    None => break,
                    Some(Verdict::Forward) => {}
                    // Dropped or replaced: the next message is at `s_ready`.
                    Some(_) => continue,
                }
            } else if tag == b'C' && !t.server.prepared.is_empty() && len <= CAP {
                // A simple query's DISCARD ALL or DEALLOCATE ALL, unmapped: the server's
                // statements are gone all the same.
                if avail < len {
                    break;
                }
                let server = &mut *t.server;
                (server.prepared).command_completed(&server.rbuf[t.s_ready + 5..t.s_ready + len]);
            }
            match tag {
                b'Z' | b'S' => {
                    if len > CAP {
                        return Err(format!("oversized '{}' message", tag as char));
                    }
                    if avail < len {
                        break; // wait for the whole message
                    }
                    let server = &mut *t.server;
                    let body = &server.rbuf[t.s_ready + 5..t.s_ready + len];
                    if tag == b'S' {
                        if let Some((k, v)) = parse_parameter_status(body) {
                            // The client's parameters are shared until one changes.
                            if tracked_index(k).is_some() && self.sess.params.get(k) != Some(v) {
                                std::sync::Arc::make_mut(&mut self.sess.params).set(k, v);
                                self.handle.info.set_params(&self.sess.params);
                            }
                            if k == "default_transaction_read_only" {
                                server.read_only_set = true;
                            }
                            server.params.set(k, v);
                        }
                    } else {
                        let status = *body.first().ok_or("empty ReadyForQuery")?;
                        t.s_ready += len;
                        if self.answered(t, Some(status)) {
                            return Ok(());
                        }
                        continue;
                    }
                }
                b'G' => t.state.copy_in_started(),
                b'W' => return Err("CopyBoth (replication) is not supported".into()),
                _ => {}
            }
            let n = len.min(avail);
            t.s_ready += n;
            t.s_skip = len - n;
        }
        self.emit_fakes(t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::advance_head;

    #[test]
    fn write_head_tracking() {
        // Query (total 10 bytes) then CopyData (total 8 bytes).
        let mut buf = vec![b'Q', 0, 0, 0, 9, b'a', b'b', b'c', b'd', 0];
        buf.extend_from_slice(&[b'd', 0, 0, 0, 7, 1, 2, 3]);
        assert_eq!(advance_head(0, &buf, 3), 7);
        assert_eq!(advance_head(0, &buf, 10), 0);
        assert_eq!(advance_head(0, &buf, 12), 6);
        assert_eq!(advance_head(0, &buf, 18), 0);
        // Already 4 bytes into a message: 2 more leave 2.
        assert_eq!(advance_head(4, &buf, 2), 2);
        assert_eq!(advance_head(4, &buf, 4), 0);
    }
}
