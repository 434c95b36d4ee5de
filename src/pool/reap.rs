//! Closing a server that may still be running a request its client no longer waits for:
//! cancel what runs, let Postgres end the session, and free the slot once it has.
//!
//! Postgres does not notice a closed socket while a query runs, so a server simply dropped
//! under a running query (a client gone mid-query, KILL, shutdown) would go on holding its
//! locks and a connection until the query ends, however long. pgmux instead sends Terminate
//! after whatever the server was sent (so Postgres ends the session once it gets there) and
//! closes its write side (so a server skipping to a Sync that will never come gets EOF), then
//! sends a CancelRequest, again every `RECANCEL` while the session lives (pipelined queries
//! each get theirs), and reads and drops whatever the server still says until it closes.
//! The slot stays taken until then (at most `REAP_LIMIT`): the pool never has more
//! sessions on Postgres than its size.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::slot::Slot;
use super::Pool;
use crate::server::{send_cancel, Server};

/// Longest a closed server is waited for before its socket is dropped anyway.
const REAP_LIMIT: Duration = Duration::from_secs(5);
/// How often the cancel is sent again while the session lives.
const RECANCEL: Duration = Duration::from_millis(250);

impl Pool {
    /// Close a checked-out server that may be busy (see the module docs), logging why.
    /// Its `slot` is held until the session has ended.
    pub(super) fn close_busy(s: Box<Server>, slot: Slot, reason: &str) {
        slot.pool().forget(&s, reason);
        let closing = slot.pool().budget.as_ref().map(|b| b.closing());
        tokio::spawn(async move {
            reap(s).await;
            drop(slot);
            drop(closing);
        });
    }
}

async fn reap(mut s: Box<Server>) {
    let deadline = Instant::now() + REAP_LIMIT;
    let target = s.cancel_target();
    let _ = s.stream.try_write(&[b'X', 0, 0, 0, 4]);
    // Over TLS, shutdown first sends what rustls still holds, which a server that reads
    // nothing never takes: the cancel must not wait behind it (the reads below go on sending).
    let _ = tokio::time::timeout(RECANCEL, s.stream.shutdown()).await;
    let mut buf = vec![0u8; 8192];
    loop {
        if let Err(e) = tokio::time::timeout_at(deadline, send_cancel(&target)).await {
            tracing::debug!(pid = s.pid, "cancel of a closed server: {e}");
        }
        let next = (Instant::now() + RECANCEL).min(deadline);
        // Drain until the session ends (EOF or error), or the next cancel is due.
        loop {
            match tokio::time::timeout_at(next, s.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                pid = s.pid,
                "a closed server did not end within {REAP_LIMIT:?}"
            );
            return;
        }
    }
}

/// Send Terminate to an idle server and wait until Postgres has closed the session (EOF), at
/// most `REAP_LIMIT`.
pub(super) async fn until_closed(mut s: Box<Server>) {
    let deadline = Instant::now() + REAP_LIMIT;
    let _ = s.stream.try_write(&[b'X', 0, 0, 0, 4]);
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}
