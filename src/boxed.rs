//! Futures moved to the heap where a rare, large branch of a task's future is taken, so the
//! task (allocated per client or per request) need not hold room for it.
//!
//! A function, not `Box::pin` written at the `.await`: there the unboxed future is a
//! temporary of the caller, and rustc keeps room for it in the caller's state anyway.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `f` on the heap.
pub(crate) fn boxed<'a, T>(f: impl Future<Output = T> + Send + 'a) -> BoxFuture<'a, T> {
    Box::pin(f)
}
