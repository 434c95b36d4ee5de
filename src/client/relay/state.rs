//! Where a transaction stands, from the tags of the messages the relay passes on: an I/O-free
//! state machine that says when a server may go back to its pool (unit tests below, and the
//! `txn_state` fuzz target over message sequences).
//!
//! It counts what was sent and what came back:
//! - pending: Query, FunctionCall and Sync messages sent whose ReadyForQuery has not come
//!   back. A Sync sent between an Execute and the CopyDone/CopyFail of a COPY FROM STDIN is
//!   taken back: Postgres ignores Syncs in copy-in mode and answers only the one after it.
//! - unsynced: extended-protocol messages sent since the last Sync (Flush and CopyData do
//!   not count).
//!
//! A ReadyForQuery with status `I`, nothing pending and nothing unsynced is a boundary: in
//! transaction and statement mode the server may go back there. In session mode there is
//! none; statement mode treats a transaction block (`T`) as a violation.

use crate::config::PoolMode;

/// What a client message means for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It goes to the server.
    Forward,
    /// Terminate: never forwarded to a pooled server; the client is leaving.
    Terminate,
}

/// What a ReadyForQuery means for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// More answers are owed, or the session keeps its server: go on.
    More,
    /// The transaction is over: the server may go back once no message is half sent.
    Boundary,
    /// Statement mode saw a transaction block open.
    Violation,
}

/// The transaction state of one attached client and server.
#[derive(Debug, Clone)]
pub struct TxnState {
    mode: PoolMode,
    pending: u32,
    unsynced: bool,
    /// Syncs sent since the last Execute or Query.
    syncs_since_exec: u32,
    /// The last transaction status the server reported.
    status: u8,
    terminating: bool,
    /// The server is in COPY FROM STDIN: it waits for the client's data (CopyInResponse seen,
    /// no CopyDone, CopyFail or ReadyForQuery since).
    copy_in: bool,
    at_boundary: bool,
    violation: bool,
}

impl TxnState {
    /// A server just attached, idle (status `I`).
    pub fn new(mode: PoolMode) -> TxnState {
        TxnState {
            mode,
            pending: 0,
            unsynced: false,
            syncs_since_exec: 0,
            status: b'I',
            terminating: false,
            copy_in: false,
            at_boundary: false,
            violation: false,
        }
    }

    /// A client message with this tag is passed on (or, for Terminate, not).
    pub fn client(&mut self, tag: u8) -> Sent {
        match tag {
            // FunctionCall (libpq's fast path, large objects) is answered like a Query.
            b'Q' | b'S' | b'F' => {
                self.pending += 1;
                self.unsynced = false;
                if tag == b'S' {
                    self.syncs_since_exec += 1;
                } else {
                    self.syncs_since_exec = 0;
                }
            }
            b'E' => {
                self.unsynced = true;
                self.syncs_since_exec = 0;
            }
            // Only an Execute (or Query) starts copy-in mode: the Syncs sent between it and
            // here get no ReadyForQuery, and the batch is open again until its next Sync.
            b'c' | b'f' => {
                self.copy_in = false;
                self.pending = self.pending.saturating_sub(self.syncs_since_exec);
                if self.syncs_since_exec > 0 {
                    self.unsynced = true;
                }
                self.syncs_since_exec = 0;
            }
            b'X' => {
                self.terminating = true;
                return Sent::Terminate;
            }
            // Flush and COPY data start no request.
            b'H' | b'd' => {}
            _ => self.unsynced = true,
        }
        if self.pending > 0 || self.unsynced {
            self.at_boundary = false;
        }
        Sent::Forward
    }

    /// The server sent CopyInResponse: it waits for the client's data.
    pub fn copy_in_started(&mut self) {
        self.copy_in = true;
    }

    /// The server sent ReadyForQuery with this status.
    pub fn server_ready(&mut self, status: u8) -> Ready {
        self.status = status;
        self.copy_in = false;
        self.answered()
    }

    /// A ReadyForQuery reached the client, the server's or one pgmux made in its place (with
    /// the status last reported).
    pub fn answered(&mut self) -> Ready {
        // A boundary holds only right after the ReadyForQuery that ends a transaction.
        self.at_boundary = false;
        self.pending = self.pending.saturating_sub(1);
        if self.pending > 0 || self.terminating || self.unsynced {
            return Ready::More;
        }
        match self.mode {
            PoolMode::Session => Ready::More,
            PoolMode::Statement if self.status != b'I' => {
                self.violation = true;
                Ready::Violation
            }
            _ if self.status == b'I' => {
                self.at_boundary = true;
                Ready::Boundary
            }
            _ => Ready::More,
        }
    }

    /// Keep the server past this boundary, as session mode does (a client pinned to it).
    pub(crate) fn keep(&mut self) {
        self.at_boundary = false;
    }

    /// Nothing is owed by the server and no batch is open: the next message starts a query
    /// (and a transaction, at status `I`); a client leaving now leaves the server quiet.
    pub fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced
    }

    /// Query, FunctionCall and Sync messages sent whose ReadyForQuery has not come back.
    pub(crate) fn pending(&self) -> u32 {
        self.pending
    }

    /// The last ReadyForQuery ended a transaction (for the transaction count).
    pub(crate) fn transaction_ended(&self) -> bool {
        self.status == b'I' && self.pending == 0
    }

    /// The server owes answers to what it was sent (not counting a COPY waiting for data).
    pub(crate) fn server_owes(&self) -> bool {
        self.pending > 0 && !self.copy_in
    }

    /// The server waits for the client: in a transaction, in a batch without its Sync (an
    /// implicit transaction, with its locks), or in COPY FROM STDIN.
    pub(crate) fn client_awaited(&self) -> bool {
        self.status != b'I' || self.unsynced || self.copy_in
    }

    /// Stopped just after a ReadyForQuery that ends the transaction (transaction and
    /// statement mode), until the client sends more.
    pub fn at_boundary(&self) -> bool {
        self.at_boundary
    }

    /// The last transaction status the server reported.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The client sent Terminate.
    pub fn terminating(&self) -> bool {
        self.terminating
    }

    /// Statement mode saw a transaction block open.
    pub(crate) fn violation(&self) -> bool {
        self.violation
    }

    /// Syncs sent since the last Execute or Query (the prepared-statement queue forgets their
    /// answers at the end of a COPY, as Postgres never sends them).
    pub(crate) fn syncs_since_exec(&self) -> u32 {
        self.syncs_since_exec
    }

    /// Whether what holds now is consistent (the fuzz target checks it after every step).
    pub fn check(&self) -> Result<(), String> {
        if self.at_boundary
            && !(self.idle() && self.status == b'I' && self.mode != PoolMode::Session)
        {
            return Err(format!("a boundary that is none: {self:?}"));
        }
        if self.violation && self.mode != PoolMode::Statement {
            return Err(format!("a violation outside statement mode: {self:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed client tags and server ReadyForQuery statuses ("Z<status>"), collecting what the
    /// ReadyForQuerys meant.
    fn run(mode: PoolMode, steps: &[&str]) -> (TxnState, Vec<Ready>) {
        let mut s = TxnState::new(mode);
        let mut out = Vec::new();
        for step in steps {
            let b = step.as_bytes();
            match b {
                [b'Z', status] => out.push(s.server_ready(*status)),
                [b'G'] => s.copy_in_started(),
                [tag] => {
                    s.client(*tag);
                }
                _ => panic!("bad step {step}"),
            }
            s.check().unwrap();
        }
        (s, out)
    }

    use Ready::*;

    #[test]
    fn a_simple_query_ends_at_its_ready_for_query() {
        let (s, r) = run(PoolMode::Transaction, &["Q", "ZI"]);
        assert_eq!(r, [Boundary]);
        assert!(s.at_boundary() && s.idle() && s.transaction_ended());
    }

    #[test]
    fn a_transaction_block_ends_only_at_status_idle() {
        let (_, r) = run(PoolMode::Transaction, &["Q", "ZT", "Q", "ZT", "Q", "ZI"]);
        assert_eq!(r, [More, More, Boundary]);
        let (_, r) = run(PoolMode::Transaction, &["Q", "ZE", "Q", "ZI"]);
        assert_eq!(r, [More, Boundary]);
    }

    #[test]
    fn extended_batches_end_at_the_last_sync() {
        // Parse, Bind, Execute, Sync; then two pipelined batches.
        let (_, r) = run(PoolMode::Transaction, &["P", "B", "E", "S", "ZI"]);
        assert_eq!(r, [Boundary]);
        let (s, r) = run(
            PoolMode::Transaction,
            &["P", "B", "E", "S", "B", "E", "S", "ZI"],
        );
        assert_eq!(r, [More]);
        assert!(!s.idle());
        // A batch sent without its Sync keeps the server, whatever came back before.
        let (s, r) = run(PoolMode::Transaction, &["Q", "B", "E", "ZI"]);
        assert_eq!(r, [More]);
        assert!(s.client_awaited());
    }

    #[test]
    fn flush_and_copy_data_start_nothing() {
        let (s, _) = run(PoolMode::Transaction, &["H", "d"]);
        assert!(s.idle());
        let (_, r) = run(PoolMode::Transaction, &["P", "H", "S", "ZI"]);
        assert_eq!(r, [Boundary]);
    }

    #[test]
    fn syncs_inside_copy_from_stdin_get_no_answer() {
        // Execute of COPY FROM STDIN, a Sync pipelined before the data (Postgres ignores it),
        // the data, CopyDone, then the Sync that Postgres answers.
        let (s, r) = run(
            PoolMode::Transaction,
            &["P", "B", "E", "S", "G", "d", "c", "S", "ZI"],
        );
        assert_eq!(r, [Boundary]);
        assert!(s.idle());
        // A simple-query COPY: CopyDone, then its one ReadyForQuery.
        let (_, r) = run(PoolMode::Transaction, &["Q", "G", "d", "c", "ZI"]);
        assert_eq!(r, [Boundary]);
    }

    #[test]
    fn copy_in_waits_for_the_client() {
        let (s, _) = run(PoolMode::Transaction, &["Q", "G"]);
        assert!(!s.server_owes() && s.client_awaited());
    }

    #[test]
    fn session_mode_has_no_boundary() {
        let (s, r) = run(PoolMode::Session, &["Q", "ZI", "Q", "ZI"]);
        assert_eq!(r, [More, More]);
        assert!(!s.at_boundary() && s.idle());
    }

    #[test]
    fn statement_mode_refuses_a_transaction_block() {
        let (s, r) = run(PoolMode::Statement, &["Q", "ZT"]);
        assert_eq!(r, [Violation]);
        assert!(s.violation());
        let (_, r) = run(PoolMode::Statement, &["Q", "ZI"]);
        assert_eq!(r, [Boundary]);
    }

    #[test]
    fn terminate_is_not_sent_and_ends_no_transaction() {
        let mut s = TxnState::new(PoolMode::Transaction);
        s.client(b'Q');
        assert_eq!(s.client(b'X'), Sent::Terminate);
        assert_eq!(s.server_ready(b'I'), More);
        assert!(s.terminating() && !s.at_boundary());
    }

    #[test]
    fn the_next_request_leaves_the_boundary() {
        let (mut s, _) = run(PoolMode::Transaction, &["Q", "ZI"]);
        assert!(s.at_boundary());
        s.client(b'Q');
        assert!(!s.at_boundary());
        assert_eq!(s.server_ready(b'I'), Boundary);
    }

    #[test]
    fn a_ready_for_query_that_ends_nothing_is_no_boundary() {
        // Found by the txn_state fuzz target: a boundary, then a ReadyForQuery in a
        // transaction block with nothing sent in between.
        let (mut s, _) = run(PoolMode::Transaction, &["Q", "ZI"]);
        assert_eq!(s.server_ready(b'T'), More);
        assert!(!s.at_boundary());
        s.check().unwrap();
    }

    #[test]
    fn a_made_up_ready_for_query_keeps_the_status() {
        let (mut s, _) = run(PoolMode::Transaction, &["Q", "ZT", "Q"]);
        assert_eq!(s.answered(), More);
        assert_eq!(s.status(), b'T');
    }
}
