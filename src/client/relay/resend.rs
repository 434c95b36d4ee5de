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

/// Most re-sends of one request (a database shutting down terminates every server).
pub(super) const MAX_RESENDS: u32 = 3;

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

/// Read the first message of a server's answer.
pub(super) fn first_answer(rbuf: &[u8]) -> FirstAnswer {
    match rbuf.first() {
        None => return FirstAnswer::Incomplete,
        Some(b'E') => {}
        Some(_) => return FirstAnswer::Answered,
    }
    if rbuf.len() < 5 {
        return FirstAnswer::Incomplete;
    }
    let len = 1 + u32::from_be_bytes([rbuf[1], rbuf[2], rbuf[3], rbuf[4]]) as usize;
    if !(5..=4096).contains(&len) {
        return FirstAnswer::Answered;
    }
    if rbuf.len() < len {
        return FirstAnswer::Incomplete;
    }
    let (code, _, severity) = backend::error_fields(&rbuf[5..len]);
    if severity == "FATAL" && code == sqlstate::ADMIN_SHUTDOWN {
        FirstAnswer::NeverRan
    } else {
        FirstAnswer::Answered
    }
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
        tracing::info!(client = self.id, server = t.server.id, db = %pool.database,
            user = %pool.user, "request re-sent: its server was terminated (57P01) before running it");
        pool.close(t.server, true, "terminated (57P01) before it ran its first request");
        // Its siblings are likely gone too (a shutdown, a mass pg_terminate_backend).
        pool.drop_dead_idle();
        Resend
    }
}

impl Txn {
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
        if self.keeping && self.kept + n <= KEEP_MAX {
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
            assert_eq!(first_answer(&fatal[..cut]), FirstAnswer::Incomplete, "{cut}");
        }
        assert_eq!(first_answer(&error("FATAL", "57P02")), FirstAnswer::Answered);
        assert_eq!(first_answer(&error("ERROR", "57P01")), FirstAnswer::Answered);
        assert_eq!(first_answer(&error("FATAL", "57P03")), FirstAnswer::Answered);
        // A NoticeResponse with 57P01 (the synchronous-commit wait) may follow a commit.
        let mut notice = error("WARNING", "57P01");
        notice[0] = b'N';
        assert_eq!(first_answer(&notice), FirstAnswer::Answered);
        assert_eq!(first_answer(b"C\0\0\0\x0bSELECT 1\0"), FirstAnswer::Answered);
        assert_eq!(first_answer(b"E\0\0\x10\0"), FirstAnswer::Answered);
    }
}
