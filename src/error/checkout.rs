//! Why a client got no server from its pool.

use std::sync::Arc;

use super::ConnectError;

/// A checkout that failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// query_wait_timeout passed with every server busy.
    #[error("query_wait_timeout: no server became free in time")]
    WaitTimeout,
    /// query_wait_timeout passed while PAUSE or KILL held the pool.
    #[error("query_wait_timeout: the database stayed paused")]
    PausedTimeout,
    /// query_wait_timeout passed while no server could be opened; `last` is what the last
    /// attempt said (the cause itself went to the log when it happened).
    #[error(
        "query_wait_timeout: no server could be opened for {database:?} (down for {down:.1} s): {last}"
    )]
    Outage {
        database: String,
        down: f64,
        last: Arc<str>,
    },
    /// The pool went away while the client waited.
    #[error("pool closed")]
    Closed,
    /// Opening a server failed in a way waiting will not mend (a wrong password, a missing
    /// database).
    #[error(transparent)]
    Connect(#[from] ConnectError),
}
