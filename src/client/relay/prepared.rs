//! Prepared statements across servers (transaction and statement mode): client statement names
//! are rewritten to pgmux-wide ones, statements are prepared on demand on whichever server the
//! client holds, and the server's answers are fixed up so the client sees exactly what a
//! direct connection would have said.
//!
//! Client side (`track_client`): a named Parse is mapped to a shared statement and sent only
//! when the server lacks it (otherwise pgmux answers ParseComplete itself, in turn); Bind and
//! Describe of a mapped statement are renamed, with a Parse sent first when the server lacks
//! it (its ParseComplete swallowed); Close of a mapped statement is answered by pgmux and never
//! reaches the shared server. Server side (`track_server`): every answer is matched against
//! the queue of messages sent (`prepared::queue`).

use bytes::{BufMut, BytesMut};

use super::{Relay, Txn};
use crate::error::sqlstate;
use crate::pool::PoolStats;
use crate::prepared::answer::{self, splice};
use crate::prepared::messages::{read_bind, read_parse, read_target, write_bind_head};
use crate::prepared::messages::{write_parse, write_target};
use crate::prepared::queue::{Action, Expect, Kind, Queue, Undo, Verdict};
use crate::prepared::{cache::StatementCache, ClientStatements};
use crate::prepared::{deallocate_target, is_drop_all_query};
use crate::prepared::{server_name, Statement};
use crate::proto::backend;
use crate::server::Server;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The prepared-statement state of one attached request.
#[derive(Default)]
pub(super) struct Tracker {
    pub(super) queue: Queue,
    /// What the server holds is no longer known for sure: close it instead of pooling it.
    pub(super) dirty: bool,
    /// While the request may be re-sent (`resend.rs`): what each rewrite replaced, to put the
    /// client's own bytes back before another server gets them.
    patches: Vec<Patch>,
    /// A Bind of this request runs a statement that may commit as it runs: no re-send.
    pub(super) commits: bool,
    undo: Vec<Undo>,
    scratch: BytesMut,
}

/// A rewrite of the client buffer: at `at`, `inserted` bytes replaced the client's `original`.
struct Patch {
    at: usize,
    inserted: usize,
    original: Box<[u8]>,
}

impl Tracker {
    /// Replace `remove` bytes at `at` in the client buffer with `insert`, remembering the
    /// client's bytes if the request may be re-sent.
    fn rewrite(&mut self, keeping: bool, cbuf: &mut BytesMut, at: usize, remove: usize) {
        if keeping {
            self.patches.push(Patch {
                at,
                inserted: self.scratch.len(),
                original: cbuf[at..at + remove].into(),
            });
        }
        splice(cbuf, at, remove, &self.scratch);
    }

    /// The request goes to another server: put back the bytes the client sent and the client's
    /// statement names as they were before it.
    pub(super) fn restore(
        &mut self,
        cbuf: &mut BytesMut,
        map: &mut ClientStatements,
        server: &mut Server,
    ) {
        while let Some(p) = self.patches.pop() {
            splice(cbuf, p.at, p.inserted, &p.original);
        }
        self.queue.take_all(&mut self.undo);
        undo_all(&mut self.undo, map, server, &mut self.dirty);
    }

    /// The request can no longer be re-sent.
    pub(super) fn forget_patches(&mut self) {
        self.patches = Vec::new();
    }
}

/// What scanning a client message decided.
pub(super) enum Track {
    /// Not enough bytes yet: wait until the client buffer holds this many.
    Wait(usize),
    /// `ready` bytes at the scan position are whole messages to send; then `rest` bytes of the
    /// current message's body follow unchanged (some maybe not received yet).
    Go { ready: usize, rest: usize },
}

/// A message sent as it is.
fn unchanged(len: usize) -> Track {
    Track::Go {
        ready: 0,
        rest: len,
    }
}

/// Make sure the server has `stmt` before a message that uses it: append a Parse to `out` if
/// not (and a Close of the statement it evicts), queueing their swallowed answers.
fn ensure_on_server(
    cache: &mut StatementCache,
    queue: &mut Queue,
    stats: &PoolStats,
    stmt: &Arc<Statement>,
    out: &mut BytesMut,
) {
    if cache.touch(&stmt.key) {
        stats.ps_hits.fetch_add(1, Relaxed);
        return;
    }
    prepare_on_server(cache, queue, stats, stmt, out, Action::Swallow, None);
}

/// Append a Parse of `stmt` under its server name, recording it in the server's cache (and a
/// Close of the statement evicted to make room).
fn prepare_on_server(
    cache: &mut StatementCache,
    queue: &mut Queue,
    stats: &PoolStats,
    stmt: &Arc<Statement>,
    out: &mut BytesMut,
    action: Action,
    client: Option<Box<[u8]>>,
) {
    stats.ps_server_parses.fetch_add(1, Relaxed);
    if let Some(old) = cache.insert(stmt.key) {
        stats.ps_evictions.fetch_add(1, Relaxed);
        write_target(out, b'C', b'S', server_name(&old).as_bytes());
        queue.push(Expect {
            kind: Kind::Close,
            action: Action::Swallow,
            // A Close that fails leaves a statement pgmux no longer counts.
            undo: Undo::ServerDirty,
        });
    }
    write_parse(
        out,
        stmt.server_name.as_bytes(),
        &stmt.query,
        &stmt.param_types,
    );
    queue.push(Expect {
        kind: Kind::Parse,
        action,
        undo: Undo::Parse {
            stmt: stmt.clone(),
            client,
            sent: true,
        },
    });
}

/// The ErrorResponse Postgres sends for a Parse of a name already in use.
fn duplicate_statement_error(name: &[u8]) -> Box<[u8]> {
    let mut e = BytesMut::new();
    let msg = format!(
        "prepared statement \"{}\" already exists",
        String::from_utf8_lossy(name)
    );
    backend::error_response(&mut e, "ERROR", "42P05", &msg);
    e.to_vec().into_boxed_slice()
}

/// Named statements one client may hold at once; a Parse of one more fails with 54000, as
/// the duplicate-name error does (drivers cache a few hundred; a client past this is leaking
/// names, and each one costs pgmux memory).
pub(crate) const MAX_CLIENT_STATEMENTS: usize = 10_000;

/// The ErrorResponse for a Parse past [`MAX_CLIENT_STATEMENTS`].
fn too_many_statements_error() -> Box<[u8]> {
    let mut e = BytesMut::new();
    let msg = format!(
        "too many prepared statements ({MAX_CLIENT_STATEMENTS}) for one client: \
         DEALLOCATE some first"
    );
    backend::error_response(&mut e, "ERROR", sqlstate::PROGRAM_LIMIT_EXCEEDED, &msg);
    e.to_vec().into_boxed_slice()
}

/// Bytes of a message read to find the names it carries: longer names are not pgmux's
/// (Postgres keeps 63 bytes of a name), and reading no further keeps a client from making
/// pgmux buffer a huge message.
const MAX_NAMES: usize = 4096;

/// Postgres' error for a command in a failed transaction.
const ABORTED: &str =
    "current transaction is aborted, commands ignored until end of transaction block";

/// A statement name no server has: Describe of it fails without side effects.
const NO_SUCH_STATEMENT: &[u8] = b"pgmux_no_such_statement";

impl Relay {
    /// A client message at `t.c_ready` with this header: rewrite it for the server if it names
    /// a statement pgmux maps, and queue the answers it will get.
    pub(super) fn track_client(
        &mut self,
        t: &mut Txn,
        cbuf: &mut BytesMut,
        tag: u8,
        len: usize,
    ) -> Track {
        let track = self.track_client_message(t, cbuf, tag, len);
        // Messages queued while the server skips to Sync after an error never run.
        let tr = t.prep.as_mut().expect("tracking");
        tr.queue.take_dropped(&mut tr.undo);
        if !tr.undo.is_empty() {
            let map = self.statements.get_or_insert_with(Default::default);
            undo_all(&mut tr.undo, map, &mut t.server, &mut tr.dirty);
        }
        track
    }

    fn track_client_message(
        &mut self,
        t: &mut Txn,
        cbuf: &mut BytesMut,
        tag: u8,
        len: usize,
    ) -> Track {
        let at = t.c_ready;
        let keeping = t.keeping;
        let avail = cbuf.len() - at;
        let tr = t.prep.as_mut().expect("tracking");
        let stats = &self.sess.pool.stats;
        let forward = |tr: &mut Tracker, kind| {
            tr.queue.push(Expect::forward(kind));
            unchanged(len)
        };
        match tag {
            b'P' => {
                // The unnamed statement passes through without waiting for the whole message.
                if len < 6 {
                    return forward(tr, Kind::Parse);
                }
                if avail < 6 {
                    return Track::Wait(at + 6);
                }
                if cbuf[at + 5] == 0 {
                    return forward(tr, Kind::Parse);
                }
                if avail < len {
                    return Track::Wait(at + len);
                }
                let Some(p) = read_parse(&cbuf[at + 5..at + len]) else {
                    // Malformed: Postgres says so.
                    return forward(tr, Kind::Parse);
                };
                stats.ps_client_parses.fetch_add(1, Relaxed);
                let map = self.statements.get_or_insert_with(Default::default);
                tr.scratch.clear();
                let refused = match map.contains_key(p.name) {
                    true => Some(duplicate_statement_error(p.name)),
                    false if map.len() >= MAX_CLIENT_STATEMENTS => {
                        Some(too_many_statements_error())
                    }
                    false => None,
                };
                if let Some(err) = refused {
                    // Postgres refuses the name and skips to Sync. pgmux makes the server fail
                    // the same way (a Describe of a statement no one has), so that its
                    // transaction state follows, and answers with Postgres' own error.
                    write_target(&mut tr.scratch, b'D', b'S', NO_SUCH_STATEMENT);
                    tr.queue.push(Expect {
                        kind: Kind::DescribeStatement,
                        action: Action::ReplaceError(err),
                        undo: Undo::None,
                    });
                } else {
                    let name: Box<[u8]> = p.name.into();
                    let stmt = self
                        .sess
                        .pool
                        .statements
                        .lock()
                        .get(p.query, &p.param_types);
                    map.insert(name.clone(), stmt.clone());
                    if t.server.prepared.touch(&stmt.key) {
                        stats.ps_hits.fetch_add(1, Relaxed);
                        // The server accepted it once: the next client's Parse of it alone
                        // needs no server (`alone.rs`), also when this is the first Parse of
                        // it since its last client left (the pool forgot it, the server not).
                        stmt.set_parsed(true);
                        tr.queue.push(Expect {
                            kind: Kind::Parse,
                            action: Action::Fake,
                            undo: Undo::Parse {
                                stmt: stmt.clone(),
                                client: Some(name),
                                sent: false,
                            },
                        });
                    } else {
                        prepare_on_server(
                            &mut t.server.prepared,
                            &mut tr.queue,
                            stats,
                            &stmt,
                            &mut tr.scratch,
                            Action::Forward,
                            Some(name),
                        );
                    }
                }
                tr.rewrite(keeping, cbuf, at, len);
                Track::Go {
                    ready: tr.scratch.len(),
                    rest: 0,
                }
            }
            b'B' => {
                let end = (at + len).min(cbuf.len());
                let Some((portal, name, _)) = read_bind(&cbuf[at + 5..end]) else {
                    if end < at + len && end - at < MAX_NAMES {
                        return Track::Wait(cbuf.len() + 1);
                    }
                    // Malformed, or names longer than any pgmux maps: Postgres decides.
                    return forward(tr, Kind::Bind);
                };
                let stmt = match self.statements.as_ref().and_then(|m| m.get(name)) {
                    Some(s) if !name.is_empty() => s.clone(),
                    // Unnamed, or unknown (Postgres answers with its own error).
                    _ => return forward(tr, Kind::Bind),
                };
                stats.ps_binds.fetch_add(1, Relaxed);
                super::scan::bound(&t.settings, &mut t.touched, stmt.touch.as_deref());
                if keeping && super::resend::commits_as_it_runs(&stmt.query) {
                    tr.commits = true;
                }
                let head = 5 + portal.len() + 1 + name.len() + 1;
                let rest = len - head;
                // Copied out: the buffer it lives in is about to change.
                let portal = portal.to_vec();
                tr.scratch.clear();
                ensure_on_server(
                    &mut t.server.prepared,
                    &mut tr.queue,
                    stats,
                    &stmt,
                    &mut tr.scratch,
                );
                write_bind_head(&mut tr.scratch, &portal, stmt.server_name.as_bytes(), rest);
                tr.queue.push(Expect::forward(Kind::Bind));
                tr.rewrite(keeping, cbuf, at, head);
                Track::Go {
                    ready: tr.scratch.len(),
                    rest,
                }
            }
            b'D' | b'C' => {
                let (kind_s, kind_p) = if tag == b'D' {
                    (Kind::DescribeStatement, Kind::DescribePortal)
                } else {
                    (Kind::Close, Kind::Close)
                };
                if len > MAX_NAMES {
                    // Not a name pgmux maps: Postgres decides (its answer is that of a
                    // statement or portal alike).
                    let kind = if cbuf.get(at + 5) == Some(&b'P') {
                        kind_p
                    } else {
                        kind_s
                    };
                    return forward(tr, kind);
                }
                if avail < len {
                    return Track::Wait(at + len);
                }
                let target = read_target(&cbuf[at + 5..at + len]);
                let Some((b'S', name)) = target else {
                    return forward(tr, kind_p);
                };
                let map = match self.statements.as_mut() {
                    Some(m) if !name.is_empty() && m.contains_key(name) => m,
                    _ => return forward(tr, kind_s),
                };
                tr.scratch.clear();
                if tag == b'C' {
                    // The client's name goes; the shared statement stays on the server.
                    let (name, stmt) = map.remove_entry(name).expect("checked");
                    tr.queue.push(Expect {
                        kind: Kind::Close,
                        action: Action::Fake,
                        undo: Undo::ClientRestore(name, stmt),
                    });
                } else {
                    let stmt = map.get(name).expect("checked").clone();
                    ensure_on_server(
                        &mut t.server.prepared,
                        &mut tr.queue,
                        stats,
                        &stmt,
                        &mut tr.scratch,
                    );
                    write_target(&mut tr.scratch, b'D', b'S', stmt.server_name.as_bytes());
                    tr.queue.push(Expect::forward(Kind::DescribeStatement));
                }
                tr.rewrite(keeping, cbuf, at, len);
                Track::Go {
                    ready: tr.scratch.len(),
                    rest: 0,
                }
            }
            b'Q' => {
                // DISCARD ALL / DEALLOCATE ALL drop the client's statements too, DEALLOCATE
                // name one of them. Only short queries can be one of those.
                if len > 5 + 200 {
                    return forward(tr, Kind::Query);
                }
                if avail < len {
                    return Track::Wait(at + len);
                }
                let body = &cbuf[at + 5..at + len];
                let Some(map) = self.statements.as_mut() else {
                    return forward(tr, Kind::Query);
                };
                // `DEALLOCATE name` of a protocol-level statement pgmux maps (PHP's PDO sends
                // it): the client's name goes, pgmux answers, the shared statement stays.
                if let Some(name) = deallocate_target(body) {
                    let Some((name, stmt)) = map.remove_entry(&name[..]) else {
                        return forward(tr, Kind::Query);
                    };
                    tr.queue.push(Expect {
                        kind: Kind::Query,
                        action: Action::Fake,
                        undo: Undo::ClientRestore(name, stmt),
                    });
                    tr.scratch.clear();
                    tr.rewrite(keeping, cbuf, at, len);
                    return Track::Go { ready: 0, rest: 0 };
                }
                let undo = if is_drop_all_query(body) {
                    Undo::ClientRestoreAll(Box::new(std::mem::take(map)))
                } else {
                    Undo::None
                };
                tr.queue.push(Expect {
                    kind: Kind::Query,
                    action: Action::Forward,
                    undo,
                });
                unchanged(len)
            }
            // FunctionCall answers like a Query: FunctionCallResponse, then ReadyForQuery.
            b'F' => forward(tr, Kind::Query),
            b'E' => forward(tr, Kind::Execute),
            b'S' => forward(tr, Kind::Sync),
            b'c' | b'f' => {
                tr.queue.forget_syncs_in_copy(t.state.syncs_since_exec());
                unchanged(len)
            }
            _ => unchanged(len),
        }
    }

    /// Whether this client message goes through the prepared-statement mapping, which starts
    /// here if it must. A simple query of a client with no statements is sent and answered as
    /// it is: most transactions of most clients never map anything, and skip the queue; the
    /// mapping starts at the first message that may need it, owing the answers to the
    /// queries sent before it (`pending`: only queries were).
    pub(super) fn maps(&self, t: &mut Txn, tag: u8) -> bool {
        if t.prep.is_some() {
            return true;
        }
        if tag == b'Q' && self.statements.as_ref().map_or(true, |m| m.is_empty()) {
            return false;
        }
        if t.server.target.max_prepared_statements == 0 {
            return false;
        }
        let mut tr = Tracker {
            queue: Queue::in_room(std::mem::take(&mut t.server.owed_room)),
            ..Default::default()
        };
        for _ in 0..t.state.pending() {
            tr.queue.push(Expect::forward(Kind::Query));
        }
        t.prep = Some(tr);
        true
    }

    /// A server message at `t.s_ready` with this header. `Ok(None)`: wait for the whole
    /// message. `Ok(Some(Verdict))`: what to do with it (already done for Drop and Replace,
    /// whose bytes are gone from or replaced in the buffer).
    pub(super) fn track_server(
        &mut self,
        t: &mut Txn,
        tag: u8,
        len: usize,
    ) -> Result<Option<Verdict>, String> {
        let avail = t.server.rbuf.len() - t.s_ready;
        // Messages pgmux may drop, replace or read are needed whole (they are small).
        answer::check_len(tag, len)?;
        let whole = answer::needs_whole(tag) && len <= super::CAP;
        if whole && avail < len {
            return Ok(None);
        }
        let tr = t.prep.as_mut().expect("tracking");
        let verdict = tr.queue.on_backend(tag, &mut tr.undo)?;
        if !tr.undo.is_empty() {
            let map = self.statements.get_or_insert_with(Default::default);
            undo_all(&mut tr.undo, map, &mut t.server, &mut tr.dirty);
        }
        if tag == b'C' && whole {
            let server = &mut *t.server;
            (server.prepared).command_completed(&server.rbuf[t.s_ready + 5..t.s_ready + len]);
        }
        t.s_ready += answer::apply(&mut t.server.rbuf, t.s_ready, len, &verdict)?;
        Ok(Some(verdict))
    }
}

/// Apply the undo actions of messages that failed or were skipped, newest first.
fn undo_all(
    undo: &mut Vec<Undo>,
    map: &mut ClientStatements,
    server: &mut Server,
    dirty: &mut bool,
) {
    while let Some(u) = undo.pop() {
        match u {
            Undo::None => {}
            Undo::Parse { stmt, client, sent } => {
                let key = stmt.key;
                if sent {
                    server.prepared.remove(&key);
                }
                if let Some(name) = client {
                    if map.get(&name).is_some_and(|s| s.key == key) {
                        map.remove(&name);
                    }
                }
            }
            Undo::ClientRestore(name, stmt) => {
                map.entry(name).or_insert(stmt);
            }
            Undo::ClientRestoreAll(old) => {
                for (name, stmt) in *old {
                    map.entry(name).or_insert(stmt);
                }
            }
            Undo::ServerDirty => *dirty = true,
        }
    }
}

impl Relay {
    /// Put pgmux's own answers whose turn has come into the stream to the client, at the point
    /// the client expects them: ParseComplete, CloseComplete, or for a DEALLOCATE of a mapped
    /// statement CommandComplete and ReadyForQuery. Returns whether such a ReadyForQuery ended
    /// the transaction.
    #[inline]
    pub(super) fn emit_fakes(&mut self, t: &mut Txn) -> bool {
        if t.s_skip > 0 {
            return false;
        }
        // Nearly always none: a made-up answer is owed only after a Parse or Close pgmux
        // took, or a DEALLOCATE of a mapped statement.
        match t.prep.as_ref() {
            Some(tr) if tr.queue.fake_is_due() => self.emit_due_fakes(t),
            _ => false,
        }
    }

    /// [`Relay::emit_fakes`] once one is due.
    fn emit_due_fakes(&mut self, t: &mut Txn) -> bool {
        let tr = t.prep.as_mut().expect("checked");
        let mut m = BytesMut::new();
        let mut ready = 0;
        while let Some(e) = tr.queue.pop_fake() {
            match e.kind {
                Kind::Close => backend::message(&mut m, b'3', |_| {}),
                // In a failed transaction Postgres refuses the DEALLOCATE: so does pgmux, and
                // the client keeps its statement.
                Kind::Query if t.state.status() == b'E' => {
                    backend::error_response(&mut m, "ERROR", "25P02", ABORTED);
                    backend::ready_for_query(&mut m, b'E');
                    ready += 1;
                    tr.undo.push(e.undo);
                    let map = self.statements.get_or_insert_with(Default::default);
                    undo_all(&mut tr.undo, map, &mut t.server, &mut tr.dirty);
                }
                Kind::Query => {
                    backend::message(&mut m, b'C', |b| b.put_slice(b"DEALLOCATE\0"));
                    backend::ready_for_query(&mut m, t.state.status());
                    ready += 1;
                }
                _ => backend::message(&mut m, b'1', |_| {}),
            }
        }
        if m.is_empty() {
            return false;
        }
        splice(&mut t.server.rbuf, t.s_ready, 0, &m);
        t.s_ready += m.len();
        let mut over = false;
        for _ in 0..ready {
            over = self.answered(t, None);
        }
        over
    }
}
