//! Re-sending a request that never ran: when a server's first answer to the first request of
//! a transaction is FATAL 57P01 (pg_terminate_backend, or Postgres' fast shutdown), nothing of
//! that request took effect, and it goes to another server as if nothing had happened.
//!
//! Why nothing ran (Postgres' `postgres.c`, `xact.c`, `syncrep.c`): a backend acts on a
//! terminate request only at `CHECK_FOR_INTERRUPTS` points, while it waits for input or while
//! a statement runs, and sends the FATAL through the same output buffer as everything else,
//! after whatever is queued there. A commit holds interrupts off while it runs
//! (`CommitTransaction`), and the first answer of the request that led to it is queued before
//! the next interrupt point: a statement's CommandComplete right after its implicit commit (no
//! interrupt check lies between `finish_xact_command` and `EndCommand`), the answers to Parse,
//! Bind and Execute before the commit at Sync, a FunctionCallResponse before its commit. The
//! one wait inside a commit, for a synchronous standby, answers a terminate request with a
//! WARNING (a NoticeResponse) and sends nothing more; a write that blocks while the backend is
//! being terminated also shuts its output off. So a FATAL 57P01 that is the very first message
//! proves that no statement of the request committed, and since the server was idle (no
//! transaction open) when the request was sent, nothing of it survives.
//!
//! Never re-sent: a request after any byte of an answer came back, any request but the first of
//! a transaction (the transaction it belongs to died with its server), a first answer that is
//! anything else (EOF with nothing, 57P02 crash shutdown, a NoticeResponse: any of these may
//! follow a commit), a request that the prepared-statement mapping rewrote (its bytes name
//! statements of the dead server), and a request larger than `KEEP_MAX` (its bytes are not
//! kept). The bytes are kept where they already are, at the front of the client buffer, until
//! the first answer arrives: no copy.

use bytes::{Buf, BytesMut};

use super::{Relay, Txn};
use crate::error::sqlstate;
use crate::pool::PoolStats;
use crate::proto::backend;

/// Most bytes of a request kept for a re-send; larger requests are not re-sent.
pub(super) const KEEP_MAX: usize = 16 * 1024;

/// Most servers one request is tried on (a database shutting down terminates every server;
/// a server may also die between its checkout and the parameter sync, before anything of the
/// request was sent).
pub(super) const MAX_RESENDS: u32 = 10;

/// What a server's first answer says about the request it answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FirstAnswer {
    /// Not enough of it has arrived to tell.
    Incomplete,
    /// FATAL 57P01: the request never ran.
    NeverRan,
    /// Anything else: the request may have run.
    Answered,
}

/// Answers Postgres gives before a statement runs: ParseComplete, BindComplete,
/// ParameterDescription, RowDescription, NoData. They are held back (not relayed) while the
/// request may be re-sent: Postgres sends them only with what follows, unless the client asked
/// for a Flush, which ends the keeping (`scan_client`).
fn before_running(tag: u8) -> bool {
    matches!(tag, b'1' | b'2' | b't' | b'T' | b'n')
}

/// Read the start of a server's answer: answers that come before anything runs, then the
/// first message that says more.
pub(super) fn first_answer(rbuf: &[u8]) -> FirstAnswer {
    let mut at = 0;
    loop {
        let Some(&tag) = rbuf.get(at) else {
            return FirstAnswer::Incomplete;
        };
        if tag != b'E' && !before_running(tag) {
            return FirstAnswer::Answered;
        }
        if rbuf.len() < at + 5 {
            return FirstAnswer::Incomplete;
        }
        let b = &rbuf[at + 1..at + 5];
        let len = 1 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 5 || at + len > KEEP_MAX {
            return FirstAnswer::Answered;
        }
        if rbuf.len() < at + len {
            return FirstAnswer::Incomplete;
        }
        if tag == b'E' {
            let (code, _, severity) = backend::error_fields(&rbuf[at + 5..at + len]);
            return if severity == "FATAL" && code == sqlstate::ADMIN_SHUTDOWN {
                FirstAnswer::NeverRan
            } else {
                FirstAnswer::Answered
            };
        }
        at += len;
    }
}

/// Whether a statement may commit while it runs, before its first answer: a procedure or DO
/// block with COMMIT inside, VACUUM, and the CONCURRENTLY commands commit as they go, so a
/// FATAL in their middle does not prove that nothing took effect. Looks at the first keyword
/// (after blanks, semicolons and comments), and for CONCURRENTLY only after a keyword that can
/// take it: the others never do (a SELECT stays off the scan). A CONCURRENTLY command later
/// in a multi-statement query cannot commit as it runs: Postgres refuses it there, inside the
/// query's implicit transaction block.
pub(super) fn commits_as_it_runs(sql: &[u8]) -> bool {
    let mut s = sql;
    loop {
        let before = s.len();
        while let [c, rest @ ..] = s {
            if c.is_ascii_whitespace() || *c == b';' || *c == b'(' {
                s = rest;
            } else {
                break;
            }
        }
        if let Some(rest) = s.strip_prefix(b"--") {
            s = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(&[][..], |i| &rest[i..]);
        } else if let Some(rest) = s.strip_prefix(b"/*") {
            s = rest
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(&[][..], |i| &rest[i + 2..]);
        }
        if s.len() == before {
            break;
        }
    }
    // Most statements start with a letter none of the keywords below does (SELECT, INSERT,
    // UPDATE, BEGIN, ...): known from one byte.
    if !matches!(
        s.first().map(u8::to_ascii_lowercase),
        Some(b'c' | b'd' | b'v' | b'r' | b'a')
    ) {
        return false;
    }
    let word_len = s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let word = &s[..word_len];
    let first = |k: &&[u8]| word.eq_ignore_ascii_case(k);
    [&b"call"[..], b"do", b"vacuum"].iter().any(first)
        || ([&b"create"[..], b"drop", b"reindex", b"refresh", b"alter"]
            .iter()
            .any(first)
            && contains_concurrently(s))
}

/// Whether `sql` holds "concurrently", in any case. Runs on every statement a request may
/// re-send: memchr finds each 'c' (SIMD), and only there are the 12 bytes compared.
fn contains_concurrently(sql: &[u8]) -> bool {
    const WORD: &[u8; 12] = b"concurrently";
    memchr::memchr2_iter(b'c', b'C', sql).any(|i| {
        sql.get(i..i + WORD.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(WORD))
    })
}

/// The request was sent to a server that never ran it: check out another.
#[derive(Debug)]
pub(super) struct Resend;

impl Relay {
    /// The server's first answer was FATAL 57P01: close it and let the request, still whole at
    /// the front of the client buffer, go to another server.
    pub(super) fn resend(&mut self, mut t: Txn, cbuf: &mut BytesMut) -> Resend {
        self.sess.key.slot.detach();
        if let Some(tr) = t.prep.as_mut() {
            let map = self.statements.get_or_insert_with(Default::default);
            tr.restore(cbuf, map, &mut t.server);
        }
        let pool = &self.sess.pool;
        PoolStats::add(&pool.stats.resent, 1);
        self.handle.info.span().in_scope(|| {
            tracing::info!(
                server = t.server.id,
                "request re-sent: its server was terminated (57P01) before running it"
            )
        });
        t.server
            .close("terminated (57P01) before it ran its first request");
        // Its siblings are likely gone too (a shutdown, a mass pg_terminate_backend).
        pool.drop_dead_idle();
        Resend
    }
}

impl Txn {
    /// A client message at `c_ready` (header `tag`, `len`) is scanned while the request may be
    /// re-sent: stop keeping it if the message makes a re-send unsafe (a Flush, whose answers
    /// the client may wait for before it sends more; a statement that commits as it runs, or
    /// whose text is not whole in the buffer).
    pub(super) fn keeps_after(&self, cbuf: &[u8], tag: u8, len: usize) -> bool {
        let body = |skip_name: bool| {
            let end = self.c_ready + len;
            let b = cbuf.get(self.c_ready + 5..end)?;
            if !skip_name {
                return Some(b);
            }
            let nul = b.iter().position(|&c| c == 0)?;
            Some(&b[nul + 1..])
        };
        match tag {
            b'H' => false,
            b'Q' => body(false).is_some_and(|q| !commits_as_it_runs(q)),
            b'P' => body(true).is_some_and(|q| !commits_as_it_runs(q)),
            _ => true,
        }
    }

    /// Stop keeping the request's bytes: they can no longer be re-sent.
    pub(super) fn stop_keeping(&mut self, cbuf: &mut BytesMut) {
        if !self.keeping {
            return;
        }
        self.keeping = false;
        if let Some(p) = self.prep.as_mut() {
            p.forget_patches();
        }
        if self.kept > 0 {
            cbuf.advance(self.kept);
            self.c_ready -= self.kept;
            self.kept = 0;
        }
    }

    /// `n` more bytes of the client buffer went to the server: keep them for a re-send if the
    /// request may still be re-sent, else let them go.
    pub(super) fn sent(&mut self, cbuf: &mut BytesMut, n: usize) {
        let commits = self.prep.as_ref().is_some_and(|p| p.commits);
        if self.keeping && !commits && self.kept + n <= KEEP_MAX {
            self.kept += n;
            return;
        }
        self.stop_keeping(cbuf);
        cbuf.advance(n);
        self.c_ready -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::{first_answer, FirstAnswer};
    use bytes::BytesMut;

    fn error(severity: &str, code: &str) -> Vec<u8> {
        let mut m = BytesMut::new();
        crate::proto::backend::error_response(&mut m, severity, code, "terminating connection");
        m.to_vec()
    }

    #[test]
    fn only_a_whole_fatal_57p01_first_means_never_ran() {
        let fatal = error("FATAL", "57P01");
        assert_eq!(first_answer(&fatal), FirstAnswer::NeverRan);
        let mut more = fatal.clone();
        more.extend_from_slice(b"Z\0\0\0\x05I");
        assert_eq!(first_answer(&more), FirstAnswer::NeverRan);
        for cut in 0..fatal.len() {
            assert_eq!(
                first_answer(&fatal[..cut]),
                FirstAnswer::Incomplete,
                "{cut}"
            );
        }
        assert_eq!(
            first_answer(&error("FATAL", "57P02")),
            FirstAnswer::Answered
        );
        assert_eq!(
            first_answer(&error("ERROR", "57P01")),
            FirstAnswer::Answered
        );
        assert_eq!(
            first_answer(&error("FATAL", "57P03")),
            FirstAnswer::Answered
        );
        // A NoticeResponse with 57P01 (the synchronous-commit wait) may follow a commit.
        let mut notice = error("WARNING", "57P01");
        notice[0] = b'N';
        assert_eq!(first_answer(&notice), FirstAnswer::Answered);
        assert_eq!(
            first_answer(b"C\0\0\0\x0bSELECT 1\0"),
            FirstAnswer::Answered
        );
        assert_eq!(first_answer(b"E\x7f\0\0\0"), FirstAnswer::Answered);
        // ParseComplete and BindComplete (sent before Execute runs), then the FATAL.
        let mut ext = b"1\0\0\0\x042\0\0\0\x04".to_vec();
        assert_eq!(first_answer(&ext), FirstAnswer::Incomplete);
        ext.extend_from_slice(&fatal);
        assert_eq!(first_answer(&ext), FirstAnswer::NeverRan);
        // CommandComplete of a first statement: it may have committed.
        let mut ran = b"C\0\0\0\x0bINSERT\0".to_vec();
        ran.extend_from_slice(&fatal);
        assert_eq!(first_answer(&ran), FirstAnswer::Answered);
    }

    #[test]
    fn statements_that_commit_as_they_run() {
        use super::commits_as_it_runs as c;
        for sql in [
            "CALL p()",
            "  call p()",
            "/* x */ -- y\n DO $$ begin commit; end $$",
            ";VACUUM t",
            "create index concurrently i on t (a)",
            "REINDEX TABLE CONCURRENTLY t",
            "ALTER TABLE t DETACH PARTITION p CONCURRENTLY",
            "drop index concurrently i",
        ] {
            assert!(c(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "INSERT INTO calls VALUES (1)",
            "",
            "/* unterminated",
            "docs",
            "callp()",
            "select 'concurrentl'",
            "select 'concurrently'",
            // Postgres refuses it inside the implicit transaction block of the query.
            "select 1; create index CONCURRENTLY i on t (a)",
        ] {
            assert!(!c(sql.as_bytes()), "{sql}");
        }
    }
}
