//! The request loop: wait for a request owning no buffer, check out a server, relay both ways
//! parsing only message headers, and release the server where the pool mode says.
//!
//! Both directions are pumped by one task with non-blocking reads and writes, so a client that
//! pipelines while its server answers never deadlocks, and at most `CAP` bytes per direction
//! are buffered: a slow client slows its server instead of filling pgmux's memory.

use std::future::Future;
use std::io::ErrorKind;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::net::Conn;
use bytes::{Buf, BytesMut};

mod alone;
mod finish;
mod pin;
mod prepared;
mod resend;
mod scan;
pub(super) mod state;

use resend::{first_answer, FirstAnswer, Resend, MAX_RESENDS};
use scan::advance_head;
use state::TxnState;

use super::login::Session;
use super::park::Parking;
use crate::boxed::{boxed, BoxFuture};
use crate::clients::{ClientHandle, Stop};
use crate::config::PoolMode;
use crate::error::{sqlstate, Error, Result};
use crate::pool::PoolStats;
use crate::pool::{Checked, SettingsCache};
use crate::proto::{self, backend};
use crate::shared::Shared;
use std::sync::Weak;
use tracing::Instrument;

/// A simple query that panics the client task while it holds a server, in debug builds only
/// (tests/it/robust.rs checks the panic is contained and the server closed).
#[cfg(debug_assertions)]
const INJECTED_PANIC: &[u8] = b"SELECT 'pgmux: injected panic'";

/// Bytes asked of the kernel per read.
const CHUNK: usize = 16 * 1024;
/// The first read of a request.
const FIRST_READ: usize = 2 * 1024;
/// Largest client buffer kept while the client idles (until it parks).
const KEEP_IDLE: usize = FIRST_READ;
/// Most bytes buffered in one direction before pgmux waits for the other side to drain them.
const CAP: usize = 64 * 1024;

/// A client's request loop, until the client leaves or parks (`client::park`).
///
/// The caller builds the `Relay` outside any async block and awaits this future directly:
/// values moved into an async fn keep their slot in its state, so building it here would
/// store the session twice in every idle client's task.
#[allow(clippy::manual_async_fn)] // on purpose: see the comment below
pub(super) fn run(mut r: Relay) -> impl Future<Output = ()> + Send {
    // An async block, not an async fn: an async fn's argument takes a slot in its state twice
    // (the argument, then the binding it is moved into), doubling an idle client's task.
    async move {
        let reason = loop {
            match serve(&mut r).await {
                Ok(LoopEnd::Left(reason)) => break reason,
                Err(e) => break e.to_string(),
                Ok(LoopEnd::Park) => match Parking::park(r) {
                    Ok(()) => return,
                    // A TLS client (parking moves only a plain socket), or nobody watches
                    // parked clients any more: this task goes on.
                    Err(back) => {
                        r = back;
                        r.handle.info.never_park();
                    }
                },
            }
        };
        if r.client.is_tls() {
            boxed(r.client.close(&[])).await;
        }
        if r.shared.config().general.log_disconnections {
            r.handle
                .info
                .span()
                .in_scope(|| tracing::info!("client logout: {reason}"));
        }
    }
}

/// Run a logged-in client's request loop in a task of its own.
pub(super) fn spawn(r: Relay) {
    // The request loop holds no info-level span: its own lines make one when they are
    // logged (`ClientInfo::span`), and at debug level this span gives the rest context.
    let info = &r.handle.info;
    let span = tracing::debug_span!(parent: None, "client", id = info.id, peer = %info.addr(),
        db = %r.sess.pool.database, user = %r.sess.pool.user);
    // The request loop's future is spawned as it is (no wrapping async block, which would
    // hold a second copy of it): an idle client costs one small task.
    tokio::spawn(run(r).instrument(span));
}

/// How a request loop ends.
enum LoopEnd {
    /// The client left: why.
    Left(String),
    /// Asked to park while idle (`client::park`): the task ends, the client does not.
    Park,
}

/// What ended an idle wait.
enum Woke {
    /// The socket is readable (maybe spuriously).
    Readable,
    /// Stopped from outside.
    Stop(Stop),
    /// Asked to park.
    Park,
    /// Notifications wait for the client (`pool::listen`).
    Notify,
}

/// The FATAL message for a client stopped from outside.
fn stop_message(why: Stop) -> &'static str {
    match why {
        Stop::Shutdown => "pgmux is shutting down",
        Stop::Drain | Stop::DrainNow => {
            "pgmux is shutting down: connect again (to another instance)"
        }
        _ => "terminating connection due to administrator command",
    }
}

async fn serve(r: &mut Relay) -> Result<LoopEnd> {
    let mut cbuf = r.sess.leftover.take().map_or_else(BytesMut::new, |b| *b);
    loop {
        // Idle: hold no server. A buffer of the first read's size is kept for the next
        // request (allocating it was a request's costliest allocation) by a client that
        // parks once idle long enough, which leaves this loop and frees it; any other
        // client, or a larger buffer, gives it up now (an idle client must stay small).
        if cbuf.is_empty() {
            if cbuf.capacity() > KEEP_IDLE || !r.parks() {
                cbuf = BytesMut::new();
            }
            // A client woken from parking keeps the deadline it parked with.
            let deadline = r
                .idle_deadline
                .take()
                .or_else(|| r.idle_deadline_from_now());
            loop {
                let woke = match deadline {
                    // The timer is boxed: an idle client's task stays small when none is set.
                    Some(d) => match boxed_readable_until(r, d).await {
                        Ok(res) => res?,
                        Err(_) => {
                            boxed_fatal(r, sqlstate::IDLE_SESSION_TIMEOUT, "client_idle_timeout")
                                .await;
                            return Ok(LoopEnd::Left("client_idle_timeout".into()));
                        }
                    },
                    None => std::future::poll_fn(|cx| poll_idle(r, cx)).await?,
                };
                match woke {
                    // Draining: an idle client goes once it has sent nothing for DRAIN_QUIET;
                    // one that sends meanwhile is served, and goes with its answer.
                    Woke::Stop(why) if why.draining() && !boxed_quiet(r).await? => {}
                    Woke::Stop(_) => {
                        // Read again: a KILL or shutdown may have ended a drain's wait.
                        let msg = stop_message(r.handle.info.stopped());
                        boxed_fatal(r, sqlstate::ADMIN_SHUTDOWN, msg).await;
                        return Ok(LoopEnd::Left(msg.into()));
                    }
                    // A listening client stays in its task: its notifications wake it.
                    // It stays small all the same: the buffer goes.
                    Woke::Park if r.listening().is_some() => {
                        r.handle.info.never_park();
                        cbuf = BytesMut::new();
                    }
                    // A client that cannot park (TLS) comes back from `Parking::park`.
                    Woke::Park => {
                        r.idle_deadline = deadline;
                        return Ok(LoopEnd::Park);
                    }
                    Woke::Notify => {
                        if let Some(why) = boxed_notify(r).await {
                            return Ok(LoopEnd::Left(why));
                        }
                        continue;
                    }
                    Woke::Readable => {}
                }
                // Readiness can be stale: only real bytes end the idle wait.
                reserve(&mut cbuf, FIRST_READ);
                match r.client.read_some(&mut cbuf) {
                    Ok(0) => return Ok(LoopEnd::Left("client closed the connection".into())),
                    Ok(n) => {
                        PoolStats::add(&r.sess.pool.stats.bytes_received, n as u64);
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Ok(LoopEnd::Left(format!("client connection error: {e}"))),
                }
            }
        }
        // Everything past the idle wait lives in one boxed future, freed when the request ends,
        // so an idle client's task keeps only the small state above. A panic in it ends this
        // client only: the future is dropped (a server it held is closed by its `Checked`)
        // and the client told.
        let res = CatchUnwind(boxed_request(r, &mut cbuf)).await;
        match res {
            Ok(Some(reason)) => return Ok(LoopEnd::Left(reason)),
            Ok(None) => {}
            Err(panic) => {
                let what = panic_message(&*panic);
                (r.handle.info.span()).in_scope(|| tracing::error!("client task panicked: {what}"));
                let msg = "internal error in pgmux: this connection is closed (its log says why)";
                boxed_fatal(r, sqlstate::INTERNAL_ERROR, msg).await;
                return Ok(LoopEnd::Left(format!("internal error: {what}")));
            }
        }
    }
}

/// The request future, boxed outside the async fn: boxing inline would still leave room for
/// the unboxed future in the caller's state (rustc keeps moved-from temporaries there), making
/// every idle client's task as large as a whole request.
fn boxed_request<'a>(r: &'a mut Relay, cbuf: &'a mut BytesMut) -> BoxFuture<'a, Option<String>> {
    Box::pin(r.request(cbuf))
}

/// A future whose panic is caught and returned instead of ending the task.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let f = &mut self.0;
        // The future is never polled again after a panic: the caller drops it.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(&mut *f).poll(cx)
        })) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// An idle client: ready when it sent something, or when it is asked to stop or to park, or
/// notifications wait for it (the task's waker is registered for those too).
fn poll_idle(r: &Relay, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<Woke>> {
    if let Poll::Ready(why) = r.handle.info.poll_stop(cx) {
        return Poll::Ready(Ok(Woke::Stop(why)));
    }
    if r.handle.info.park_asked() {
        return Poll::Ready(Ok(Woke::Park));
    }
    if let Some(l) = r.listening() {
        if l.subscriber().poll_pending(cx).is_ready() {
            return Poll::Ready(Ok(Woke::Notify));
        }
    }
    r.client.poll_read_ready(cx).map_ok(|()| Woke::Readable)
}

/// Write the notifications that wait for an idle client (boxed, as `boxed_request`). `Some`:
/// why the client goes.
fn boxed_notify(r: &mut Relay) -> BoxFuture<'_, Option<String>> {
    Box::pin(async move {
        use crate::pool::listen::Pending;
        let pending = r.listening()?.subscriber().take()?;
        match pending {
            Pending::Messages(out) => {
                PoolStats::add(&r.sess.pool.stats.bytes_sent, out.len() as u64);
                match r.client.send_all(&out).await {
                    Ok(()) => None,
                    Err(e) => Some(format!("client connection error: {e}")),
                }
            }
            Pending::Overflow(limit) => {
                let msg = format!(
                    "too many notifications waiting for this client (more than \
                     notify_queue_limit, {limit} bytes)"
                );
                r.fatal(sqlstate::PROGRAM_LIMIT_EXCEEDED, &msg).await;
                Some(msg)
            }
        }
    })
}

/// [`poll_idle`] within client_idle_timeout, boxed outside the async fn (as `boxed_request`),
/// so the timer takes no room in an idle client's task.
fn boxed_readable_until(
    r: &Relay,
    deadline: tokio::time::Instant,
) -> BoxFuture<'_, Result<std::io::Result<Woke>, tokio::time::error::Elapsed>> {
    Box::pin(tokio::time::timeout_at(
        deadline,
        std::future::poll_fn(|cx| poll_idle(r, cx)),
    ))
}

/// How long an idle client may still send a request once pgmux drains. A connection pool
/// hands a connection out, checks it, and sends the request right after: closing the
/// connection in that gap would fail the request; one quiet this long sits in its pool, which
/// checks it (or, reading ahead, sees it close) before it is used again. At least HikariCP's
/// 500 ms, below which it skips its check.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// Whether the request starting `cbuf` only checks the connection: an empty query, simple
/// (libpq), extended (psycopg_pool's check), or a Bind of a prepared empty statement (pgjdbc's
/// `isValid`, which HikariCP calls, once pgjdbc prepared it); `statements`: the client's.
fn checks_connection(cbuf: &[u8], statements: Option<&crate::prepared::ClientStatements>) -> bool {
    let Ok(Some((tag, len))) = proto::header(cbuf, usize::MAX) else {
        return false;
    };
    let Some(body) = cbuf.get(5..len) else {
        return false;
    };
    let mut fields = body.split(|&b| b == 0);
    let text = match tag {
        b'Q' => fields.next(),
        // Parse: the statement's name, then its text.
        b'P' => fields.nth(1),
        // Bind: the portal's name, then the statement's.
        b'B' => fields
            .nth(1)
            .and_then(|name| statements?.get(name))
            .map(|s| &s.query[..]),
        _ => None,
    };
    text.is_some_and(|t| t.iter().all(|b| b.is_ascii_whitespace() || *b == b';'))
}

/// Draining: wait up to [`DRAIN_QUIET`] for the idle client to send (false: it did, serve
/// it) or not (true: it goes). A stop that cannot wait ends the wait at once (true).
fn boxed_quiet(r: &Relay) -> BoxFuture<'_, std::io::Result<bool>> {
    Box::pin(async move {
        let quiet = tokio::time::sleep(DRAIN_QUIET);
        tokio::pin!(quiet);
        std::future::poll_fn(|cx| {
            let why = r.handle.info.stopped();
            if why != Stop::None && !why.draining() {
                return Poll::Ready(Ok(true));
            }
            if let Poll::Ready(res) = r.client.poll_read_ready(cx) {
                return Poll::Ready(res.map(|()| false));
            }
            quiet.as_mut().poll(cx).map(|()| Ok(true))
        })
        .await
    })
}

/// `Relay::fatal`, boxed outside the async fn (as `boxed_request`).
fn boxed_fatal<'a>(r: &'a mut Relay, code: &'a str, msg: &'a str) -> BoxFuture<'a, ()> {
    Box::pin(r.fatal(code, msg))
}

impl Relay {
    /// The request loop's state for a logged-in client.
    pub(crate) fn new(
        client: Conn,
        sess: Session,
        handle: ClientHandle,
        shared: std::sync::Arc<Shared>,
        parking: Weak<Parking>,
    ) -> Relay {
        handle.info.set_params(&sess.params);
        handle
            .info
            .set_settings(sess.settings.as_deref().map(|c| &c.now));
        // A client that logged in while pgmux drains is drained from the start (a pool's new
        // connection that landed here checks it, and learns it goes).
        if let Some(now) = shared.run.drain_phase() {
            handle.info.drain_pooled(now);
        }
        if sess.held.is_some() {
            // It holds a server already: it stays in its task.
            handle.info.never_park();
        }
        Relay {
            client,
            parking,
            idle_deadline: None,
            statements: None,
            rare: None,
            settings: SettingsCache::new(&sess.pool),
            sess,
            handle,
            shared,
        }
    }
}

/// Make room for a read of about `want` bytes, without growing a buffer that still has room.
fn reserve(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want / 4 {
        buf.reserve(want);
    }
}

/// A logged-in client and what its request loop needs.
pub(super) struct Relay {
    client: Conn,
    /// This client in the client list (removed when the loop ends).
    handle: ClientHandle,
    shared: std::sync::Arc<Shared>,
    sess: Session,
    /// The client's prepared statements, by its names (transaction and statement mode).
    statements: Option<Box<crate::prepared::ClientStatements>>,
    /// What few clients have, in one box (`None` for most: every idle client pays for each
    /// field here).
    rare: Option<Box<Rare>>,
    /// Where the client parks when idle long enough.
    parking: Weak<Parking>,
    /// When client_idle_timeout ends the idle wait of a client woken from parking.
    idle_deadline: Option<tokio::time::Instant>,
    /// Its pool's settings, read once per reload rather than per use.
    settings: SettingsCache,
}

/// A client's statements whose Parse may change session settings, by name.
type Touching = Vec<(Box<str>, crate::sql::Touch)>;

/// The parts of a request loop few clients have.
#[derive(Default)]
struct Rare {
    /// Its statements whose Parse may change session settings, and which: each Bind of one
    /// is read back like the Parse.
    touching: Touching,
    /// Its LISTENs, served by the pool's listener (`pool::listen`), once it has made one.
    listening: Option<crate::pool::listen::Listening>,
    /// Bytes of stray COPY messages still to drop (see `request`).
    discard: u32,
}

/// A request loop taken off its socket, to be parked (`client::park`): its connection is
/// `Conn::Closed` until [`Unplugged::plug`] gives it back.
pub(super) struct Unplugged(Box<Relay>);

impl Relay {
    /// Its LISTENs, once it has made one.
    fn listening(&self) -> Option<&crate::pool::listen::Listening> {
        self.rare.as_ref()?.listening.as_ref()
    }

    /// Its statements whose Parse may change session settings (empty for most clients).
    fn touching(&self) -> &[(Box<str>, crate::sql::Touch)] {
        self.rare.as_ref().map_or(&[], |r| &r.touching)
    }

    /// The rare parts, made when first needed.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// Whether an idle wait ends in parking, once long enough (`client::park`).
    fn parks(&mut self) -> bool {
        self.handle.info.may_park() && self.settings.get(&self.sess.pool).parks
    }

    /// When client_idle_timeout ends an idle wait that starts now, if it is set.
    fn idle_deadline_from_now(&mut self) -> Option<tokio::time::Instant> {
        let t = self.settings.get(&self.sess.pool).client_idle_timeout?;
        Some(tokio::time::Instant::now() + t)
    }

    /// Where the client parks.
    pub(super) fn parking(&self) -> &Weak<Parking> {
        &self.parking
    }

    /// Take the client's socket out of the runtime, for a parking set of its own. `Err` gives
    /// back a relay that cannot park (a TLS client; a socket the runtime failed to let go of
    /// is closed, and the relay's connection with it).
    #[allow(clippy::result_large_err)] // the relay comes back by value, as it came: rare
    pub(super) fn unplug(mut self) -> Result<(std::net::TcpStream, Unplugged), Relay> {
        // Parked straight from its login: its idle wait starts now.
        if self.idle_deadline.is_none() {
            self.idle_deadline = self.idle_deadline_from_now();
        }
        match std::mem::replace(&mut self.client, Conn::Closed) {
            Conn::Tcp(s) => match s.into_std() {
                Ok(sock) => Ok((sock, Unplugged(Box::new(self)))),
                Err(_) => Err(self),
            },
            other => {
                self.client = other;
                Err(self)
            }
        }
    }
}

impl Unplugged {
    pub(super) fn info(&self) -> &crate::clients::ClientInfo {
        &self.0.handle.info
    }

    pub(super) fn idle_deadline(&self) -> Option<tokio::time::Instant> {
        self.0.idle_deadline
    }

    /// The relay on its socket again, registered with the runtime (if the runtime refuses it,
    /// the connection stays closed: the relay's next call fails and the client leaves).
    pub(super) fn plug(self, sock: std::net::TcpStream) -> Relay {
        let mut r = *self.0;
        if let Ok(s) = tokio::net::TcpStream::from_std(sock) {
            r.client = Conn::Tcp(s);
        }
        r
    }
}

/// Where a client and its server stand while attached.
struct Txn {
    server: Checked,
    /// Client bytes at the front of the client buffer whose message headers were read: the
    /// `kept` ones already sent, then the ones ready to write.
    c_ready: usize,
    /// Bytes at the front of the client buffer already sent to the server and kept there, to
    /// be re-sent to another server if this one never ran them (`resend.rs`).
    kept: usize,
    /// No answer has come back yet: the request may still be re-sent.
    keeping: bool,
    /// Body bytes of the current client message not yet received.
    c_skip: usize,
    /// The client buffer must grow to this many bytes before scanning can go on (a message
    /// pgmux must read whole), even past `CAP`.
    c_want: usize,
    /// Bytes of the message at the write head not yet sent to the server (0: the server has
    /// whole messages only).
    head_remaining: usize,
    /// Server bytes at the front of `server.rbuf` ready to relay.
    s_ready: usize,
    s_skip: usize,
    /// Where the transaction stands (what is owed, whether it may end here).
    state: TxnState,
    last_client_activity: Instant,
    /// When the running query and transaction started (for their durations).
    query_start: Instant,
    xact_start: Instant,
    /// `query_start` and `xact_start` are the attach time, for the request's first query:
    /// its scan need not read the clock again.
    started_now: bool,
    /// When the latest answer ended (the server is idle since then when released).
    answer_at: Instant,
    /// Prepared-statement mapping (transaction and statement mode with max_prepared_statements),
    /// from the first message that may need it (`Relay::maps`).
    prep: Option<prepared::Tracker>,
    /// Settings the request's statements may have changed: read back before the server goes.
    touched: Option<Box<crate::sql::Touch>>,
    /// Why the client is pinned to this server (`pin.rs`: state that cannot move), if it is.
    pinned: u8,
    /// The pool's settings when the server was attached (a reload applies to the next one).
    settings: std::sync::Arc<crate::pool::PoolSettings>,
}

/// What is left of a request once [`Relay::exit`] acted on how it ended.
enum Ending<'a> {
    Done(Option<String>),
    /// Still to run: delivering the rest, resetting the server.
    Later(BoxFuture<'a, Option<String>>),
    /// The client goes, once this ran: why.
    Gone(BoxFuture<'a, String>),
    Resend(Resend),
}

/// What ended a wait for a server in `checkout_watching`.
enum Watched {
    Checked(std::result::Result<Checked, crate::error::CheckoutError>),
    Stop(Stop),
    SendFailed(std::io::Error),
    Readable(std::io::Result<()>),
}

enum Event {
    ServerReadable,
    ClientReadable,
    Writable,
    /// The client's connection failed (for TLS, maybe sending what rustls held).
    ClientSendFailed(std::io::Error),
    Timer,
    Stop,
}

/// How an attached request ends; acted on by `Relay::exit`, which owns the `Txn`.
enum Exit {
    /// The transaction is over: the server goes back.
    Release,
    /// The transaction is over while pgmux drains (SIGTERM): the server goes back, and the
    /// client is told to reconnect with the rest of its answer.
    Drained,
    /// The client is gone or must go (told why already, when it must be).
    ClientLost(String),
    /// The server broke.
    ServerLost(String),
    ClientProtocol(String),
    ServerProtocol(String),
    /// The server never ran the request: another one runs it.
    Resend,
}

/// Whether a server's settings are the client's (`None`: the client changed none).
fn settings_equal(
    server: &crate::server::Settings,
    client: Option<&crate::server::settings::ClientSettings>,
) -> bool {
    match client {
        None => server.is_empty(),
        Some(c) => *server == c.now,
    }
}

/// How long the client may keep its server waiting now, if a timer applies: in a
/// transaction, a batch without its Sync (an implicit transaction, with its locks) or COPY
/// FROM STDIN, idle_transaction_timeout; idle in session mode, client_idle_timeout.
fn idle_timer(t: &Txn) -> Option<Duration> {
    if t.state.server_owes() || t.c_ready > t.kept {
        None
    } else if t.state.client_awaited() {
        t.settings.idle_transaction_timeout
    } else if t.settings.mode == PoolMode::Session || t.pinned != 0 {
        t.settings.client_idle_timeout
    } else {
        None
    }
}

impl Relay {
    /// Send a FATAL error (boxed: rare, and its timer would otherwise enlarge every client task).
    async fn fatal(&mut self, code: &str, msg: &str) {
        let mut out = BytesMut::new();
        backend::error_response(&mut out, "FATAL", code, msg);
        let write = tokio::time::timeout(Duration::from_secs(1), self.client.send_all(&out));
        let _ = Box::pin(write).await;
    }

    /// Serve one request: read its first header, check out a server, relay until release.
    /// `Some(reason)` when the client is gone.
    async fn request(&mut self, cbuf: &mut BytesMut) -> Option<String> {
        // Read until the first message header is complete.
        let max_packet = self.settings.get(&self.sess.pool).max_packet;
        let tag = loop {
            // CopyData/CopyDone/CopyFail that arrive with no server attached belong to a COPY
            // that already failed: Postgres would ignore them, so pgmux drops them here rather
            // than check out a server that would then wait for a ReadyForQuery never sent.
            if let Some(rare) = self.rare.as_mut().filter(|r| r.discard > 0) {
                let n = (rare.discard as usize).min(cbuf.len());
                cbuf.advance(n);
                rare.discard -= n as u32;
                if cbuf.is_empty() {
                    return None;
                }
            }
            match proto::header(cbuf, max_packet) {
                Ok(Some((b'd' | b'c' | b'f', len))) => {
                    // At most max_packet, validated to fit a Postgres message length.
                    self.rare().discard = len as u32;
                    continue;
                }
                Ok(Some((tag, _))) => break tag,
                Ok(None) => {}
                Err(e) => {
                    self.fatal(sqlstate::PROTOCOL_VIOLATION, &e).await;
                    return Some(format!("protocol violation: {e}"));
                }
            }
            // Most requests are small: start with a small buffer, grow when one is not.
            reserve(cbuf, FIRST_READ);
            match self.client.read_some(cbuf) {
                Ok(0) => return Some("client closed the connection".into()),
                Ok(n) => PoolStats::add(&self.sess.pool.stats.bytes_received, n as u64),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if let Err(e) = self.client.readable().await {
                        return Some(format!("client connection error: {e}"));
                    }
                }
                Err(e) => return Some(format!("client connection error: {e}")),
            }
        };
        if tag == b'X' {
            return Some("client closed (Terminate)".into());
        }
        // Draining: a pool checking this connection learns that it is going, and uses another.
        if self.handle.info.stopped().draining()
            && checks_connection(cbuf, self.statements.as_deref())
        {
            let msg = stop_message(Stop::Drain);
            self.fatal(sqlstate::ADMIN_SHUTDOWN, msg).await;
            return Some(msg.into());
        }
        if tag == b'P' {
            if let Some(answer) = self.prepare_alone(cbuf) {
                PoolStats::add(&self.sess.pool.stats.bytes_sent, answer.len() as u64);
                if let Err(e) = self.client.send_all(&answer).await {
                    return Some(format!("client connection error: {e}"));
                }
                return None;
            }
        }
        let mut resends = 0;
        loop {
            self.handle.info.waiting();
            // The server is moved into the attached future in a block of its own: a binding
            // still in scope would keep a second slot for it in this future's state.
            let attached = {
                // Session mode: the server given at login, for the first request.
                let server = match self.sess.held.take() {
                    Some(s) => Ok((*s, Instant::now())),
                    None => self.server_for(cbuf, Instant::now()).await,
                };
                let (server, now) = match server {
                    Ok((s, now)) => {
                        self.handle.info.active(s.id);
                        s.info
                            .link_to(self.handle.info.id, self.handle.info.request_us());
                        (s, now)
                    }
                    Err(why) => return Some(why),
                };
                // The statements may have become known while this client waited: then its
                // Parse+Sync needs no server after all. (Sent, it would get a ParseComplete from
                // pgmux, after which a terminated server's FATAL could not be re-sent.)
                if tag == b'P' {
                    if let Some(answer) = self.prepare_alone(cbuf) {
                        server.release();
                        self.handle.info.idle();
                        PoolStats::add(&self.sess.pool.stats.bytes_sent, answer.len() as u64);
                        if let Err(e) = self.client.send_all(&answer).await {
                            return Some(format!("client connection error: {e}"));
                        }
                        return None;
                    }
                }
                self.attached(server, now, cbuf, resends < MAX_RESENDS)
            };
            let gone = match attached.await {
                Ok(gone) => gone,
                // The server died before it ran anything of the request: another one runs it.
                Err(resend::Resend) => {
                    resends += 1;
                    continue;
                }
            };
            if gone.is_none() {
                let info = &self.handle.info;
                info.idle();
                let n = self.statements.as_ref().map_or(0, |m| m.len());
                info.prepared
                    .store(n as u32, std::sync::atomic::Ordering::Relaxed);
            }
            return gone;
        }
    }

    /// A server for this request and when it came (the request's start, `now`, when it was
    /// idle), or why the client goes (told already when it must be). Nothing here holds a
    /// server across an await in the caller's state.
    async fn server_for(
        &mut self,
        cbuf: &mut BytesMut,
        now: Instant,
    ) -> Result<(Checked, Instant), String> {
        // Most requests find an idle server: no wait, no watching.
        if let Some(s) = (self.sess.pool).idle_now(now, self.settings.get(&self.sess.pool)) {
            return Ok((s, now));
        }
        match self.checkout_watching(cbuf, now).await {
            Ok(Some(s)) => Ok((s, Instant::now())),
            Ok(None) => Err("client closed the connection while waiting for a server".into()),
            Err(e) => Err(boxed(self.no_server(e)).await),
        }
    }

    /// No server for this request: tell the client why (Postgres' own error when it came
    /// from Postgres). Returns why the client goes.
    async fn no_server(&mut self, e: Error) -> String {
        let (code, msg) = e.sqlstate();
        let msg = msg.to_string();
        match e.raw_postgres() {
            Some(raw) => {
                let mut out = BytesMut::new();
                backend::message(&mut out, b'E', |b| b.extend_from_slice(raw));
                let _ = self.client.send_all(&out).await;
            }
            None => self.fatal(code, &msg).await,
        }
        format!("no server: {msg}")
    }

    /// Check out a server while watching the client: a client that leaves while waiting
    /// leaves the queue at once, and its request never runs. Bytes it sends meanwhile
    /// (pipelined requests) are kept in `cbuf`, up to `CAP`. `Ok(None)`: the client left.
    async fn checkout_watching(
        &mut self,
        cbuf: &mut BytesMut,
        started: Instant,
    ) -> Result<Option<Checked>> {
        let pool = &self.sess.pool;
        // `server_for` tried an idle server already: straight to the full checkout.
        let mut checkout = boxed(pool.checkout_from(started, self.settings.get(pool)));
        loop {
            let watch = cbuf.len() < CAP;
            // One poll function, not a `select!`: the client's readiness is polled directly
            // (no per-wait future in the socket's waiter list), as in `wait`.
            let (info, client) = (&self.handle.info, &self.client);
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(s) = checkout.as_mut().poll(cx) {
                    return Poll::Ready(Watched::Checked(s));
                }
                if let Poll::Ready(why) = info.poll_stop(cx) {
                    if !why.draining() {
                        return Poll::Ready(Watched::Stop(why));
                    }
                }
                // Output TLS still holds for the client goes on while it waits (nothing for
                // TCP).
                if let Poll::Ready(Err(e)) = client.poll_send_pending(cx) {
                    return Poll::Ready(Watched::SendFailed(e));
                }
                if watch {
                    if let Poll::Ready(r) = client.poll_read_ready(cx) {
                        return Poll::Ready(Watched::Readable(r));
                    }
                }
                Poll::Pending
            })
            .await;
            match woke {
                Watched::Checked(s) => return Ok(Some(s?)),
                Watched::Stop(why) => {
                    return Err(Error::client(sqlstate::ADMIN_SHUTDOWN, stop_message(why)));
                }
                Watched::SendFailed(e) => {
                    tracing::debug!("client connection error: {e}");
                    return Ok(None);
                }
                Watched::Readable(r) => {
                    r?;
                    reserve(cbuf, CHUNK);
                    match self.client.read_some(cbuf) {
                        Ok(0) => return Ok(None),
                        Ok(n) => PoolStats::add(&pool.stats.bytes_received, n as u64),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => return Ok(None),
                    }
                }
            }
        }
    }

    /// Relay one transaction (or session). `Ok(None)`: the server went back and the client goes
    /// on. `Err(Resend)`: the server died before it ran any of the request, which is still
    /// whole in `cbuf` for another server (only when `may_resend`).
    ///
    /// An async block, not an async fn, so the server is held once in its state, not twice.
    /// `now`: when the server came (the first query's start).
    fn attached<'a>(
        &'a mut self,
        server: Checked,
        now: Instant,
        cbuf: &'a mut BytesMut,
        may_resend: bool,
    ) -> impl Future<Output = Result<Option<String>, Resend>> + Send + 'a {
        self.sess.key.slot.attach(&server);
        let settings = self.settings.get(&self.sess.pool).clone();
        let mut t = Txn {
            server,
            c_ready: 0,
            kept: 0,
            keeping: may_resend,
            c_skip: 0,
            c_want: 0,
            head_remaining: 0,
            s_ready: 0,
            s_skip: 0,
            state: TxnState::new(settings.mode),
            last_client_activity: now,
            query_start: now,
            xact_start: now,
            started_now: true,
            answer_at: now,
            prep: None,
            touched: None,
            pinned: 0,
            settings,
        };
        async move {
            // Most requests find the server's parameters equal to the client's: the sync (a
            // hidden query, rare) is boxed, so its future takes no room in the request's.
            let differ = !t.server.params.has_all(&self.sess.params)
                || !settings_equal(&t.server.settings, self.sess.settings.as_deref());
            let mut synced = match differ {
                true => boxed(self.sync(&mut t.server)).await,
                false => Ok(()),
            };
            // A listening client that asks pg_listening_channels() gets its channels: its
            // server LISTENs them for this transaction (handed back to the listener after).
            if let Some(sql) = synced.is_ok().then(|| self.channels_asked(cbuf)).flatten() {
                synced = boxed(t.server.run_hidden(&sql)).await.map(|_| ());
                t.touched = Some(Box::new(crate::sql::Touch {
                    creates: true,
                    ..Default::default()
                }));
            }
            if let Err(e) = synced {
                self.sess.key.slot.detach();
                let pool = &self.sess.pool;
                // Nothing of the client's was sent: a server that died idle is replaced.
                if may_resend && crate::pool::connect_error_passes(&e) {
                    t.server.close(&format!("parameter sync failed: {e}"));
                    pool.drop_dead_idle();
                    return Err(Resend);
                }
                t.server.close("parameter sync failed");
                let (code, msg) = e.sqlstate();
                let msg = msg.to_string();
                self.fatal(code, &msg).await;
                return Ok(Some(format!("parameter sync failed: {msg}")));
            }
            // Debug builds only: a panic while a server is held, for the test of its containment.
            #[cfg(debug_assertions)]
            if cbuf.get(5..).is_some_and(|b| b.starts_with(INJECTED_PANIC)) {
                panic!("injected panic (debug builds only)");
            }
            if let Err(e) = self.scan_client(&mut t, cbuf) {
                return Ok(Some(boxed(self.client_protocol_error(t, e)).await));
            }
            // A terminate request may have come with the answer to pgmux's own last query (its
            // login, the parameter sync): nothing of the client's was sent yet.
            if t.keeping && !t.server.rbuf.is_empty() {
                match first_answer(&t.server.rbuf) {
                    FirstAnswer::NeverRan => return Err(self.resend(t, cbuf)),
                    FirstAnswer::Incomplete => {}
                    FirstAnswer::Answered => t.stop_keeping(cbuf),
                }
            }
            loop {
                let step = match self.pump(&mut t, cbuf).await {
                    Ok(write_limit) => {
                        let ev = self.wait(&t, cbuf, write_limit).await;
                        self.dispatch(ev, &mut t, cbuf).await
                    }
                    Err(exit) => Err(exit),
                };
                if let Err(mut exit) = step {
                    // A transaction that may have left state on its server: keep the server
                    // while it holds some (`pin.rs`).
                    // A drained client too: pinned, it keeps its server as a session-mode
                    // client does, and goes when it leaves (or at shutdown_timeout).
                    if matches!(exit, Exit::Release | Exit::Drained) && pin::may_hold(&t) {
                        match boxed(self.settle_pin(&mut t)).await {
                            Ok(true) => {
                                t.state.keep();
                                continue;
                            }
                            Ok(false) => {}
                            Err(e) => exit = Exit::ServerLost(e),
                        }
                    }
                    return match self.exit(t, cbuf, exit) {
                        Ending::Done(gone) => Ok(gone),
                        Ending::Later(f) => Ok(f.await),
                        Ending::Gone(f) => Ok(Some(f.await)),
                        Ending::Resend(r) => Err(r),
                    };
                }
            }
        }
    }

    /// For a listening client whose request names `pg_listening_channels`: the LISTENs that
    /// give its server the client's channels.
    fn channels_asked(&self, cbuf: &[u8]) -> Option<String> {
        let l = self.listening()?;
        let asks = |w: &[u8]| memchr::memmem::find(cbuf, w).is_some();
        if l.is_empty() || !(asks(b"listening_channels") || asks(b"LISTENING_CHANNELS")) {
            return None;
        }
        let channels = l.subscriber().channels();
        Some(crate::pool::listen::statements("LISTEN", &channels))
    }

    /// Make the server's parameters and settings the client's (rare: a hidden query).
    async fn sync(&mut self, server: &mut crate::server::Server) -> Result<()> {
        let wanted = std::sync::Arc::make_mut(&mut self.sess.params);
        let r = server.sync_params(wanted).await;
        self.handle.info.set_params(&self.sess.params);
        r?;
        let none = crate::server::Settings::default();
        let wanted = self.sess.settings.as_deref().map_or(&none, |c| &c.now);
        server.sync_settings(wanted).await
    }

    /// Act on how the request ended, with the `Txn` (its server) given up for good. A clean
    /// release is done on the spot; every other end is rare, and its future (which owns the
    /// `Txn`) is made here on the heap, so the request's future, allocated per request, holds
    /// no room for it. (Not an async fn: one would hold the `Txn` in its own state.)
    fn exit(&mut self, t: Txn, cbuf: &mut BytesMut, exit: Exit) -> Ending<'_> {
        match exit {
            Exit::Release => match self.release(t) {
                finish::Released::Done => Ending::Done(None),
                released => Ending::Later(Box::pin(self.after_release(released, false))),
            },
            Exit::Drained => {
                let released = self.release(t);
                Ending::Later(Box::pin(self.after_release(released, true)))
            }
            Exit::ClientLost(why) => Ending::Gone(Box::pin(self.client_lost(t, why))),
            Exit::ServerLost(why) => Ending::Gone(Box::pin(self.server_lost(t, why))),
            Exit::ClientProtocol(e) => Ending::Gone(Box::pin(self.client_protocol_error(t, e))),
            Exit::ServerProtocol(e) => Ending::Gone(Box::pin(self.server_protocol_error(t, e))),
            Exit::Resend => Ending::Resend(self.resend(t, cbuf)),
        }
    }

    /// Move whatever can move without waiting, both ways; then end the request where it is
    /// over. Returns how many client bytes may go to the server once it is writable.
    async fn pump(&mut self, t: &mut Txn, cbuf: &mut BytesMut) -> Result<usize, Exit> {
        // At a transaction boundary only the rest of a message already partly sent may go
        // (stray COPY data the server ignores).
        let unsent = t.c_ready - t.kept;
        let write_limit = if t.state.at_boundary() {
            t.head_remaining.min(unsent)
        } else {
            unsent
        };
        if write_limit > 0 {
            let from = t.kept;
            match t.server.stream.try_write(&cbuf[from..from + write_limit]) {
                Ok(n) => {
                    t.head_remaining = advance_head(t.head_remaining, &cbuf[from..], n);
                    t.sent(cbuf, n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(Exit::ServerLost(e.to_string())),
            }
        }
        // Draining, and this answer ends the client's transaction with nothing more asked:
        // it goes with the answer (`Exit::Drained`), which is not written here.
        if t.state.at_boundary()
            && t.head_remaining == 0
            && cbuf.len() == t.kept
            && self.handle.info.stopped() == Stop::DrainNow
        {
            return Err(Exit::Drained);
        }
        // The answer that ends a transaction which may have left state waits until
        // `settle_pin` has asked what it left: a client told its LISTEN is done must get
        // every notification sent after that.
        let settle_first = t.state.at_boundary() && t.head_remaining == 0 && pin::asks(t);
        if t.s_ready > 0 && !settle_first {
            match self.client.try_write(&t.server.rbuf[..t.s_ready]) {
                Ok(n) => {
                    PoolStats::add(&self.sess.pool.stats.bytes_sent, n as u64);
                    t.server.rbuf.advance(n);
                    t.s_ready -= n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(Exit::ClientLost(format!("client connection error: {e}"))),
            }
        }
        // The server never sees a message cut in two: release once the write head is at a
        // message boundary. Unsent messages stay in `cbuf` for the next request.
        if t.state.at_boundary() && t.head_remaining == 0 {
            return Err(Exit::Release);
        }
        if t.state.violation() {
            self.fatal(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "transaction blocks not allowed in statement pooling mode",
            )
            .await;
            return Err(Exit::ClientLost(
                "transaction block in statement pooling mode".into(),
            ));
        }
        // Terminate: the client will read nothing more. A request still in flight is
        // cancelled with its server (`client_lost`), as when the socket closes: nobody waits
        // for it, and it may wait forever itself (COPY FROM STDIN, a batch without Sync).
        if t.state.terminating() {
            return Err(Exit::ClientLost("client closed (Terminate)".into()));
        }
        Ok(write_limit)
    }

    /// Wait for what can happen next: either socket readable or writable as needed, the
    /// idle timer, or a stop request.
    async fn wait(&self, t: &Txn, cbuf: &BytesMut, write_limit: usize) -> std::io::Result<Event> {
        let info = &self.handle.info;
        let deadline = idle_timer(t).map(|d| t.last_client_activity + d);
        let c_can_read = !t.state.terminating() && (cbuf.len() < CAP || cbuf.len() < t.c_want);
        let s_can_read = !t.state.at_boundary() && t.server.rbuf.len() < CAP;
        // Wait on the sockets' readiness directly (poll_*_ready): no per-wait future or
        // waiter-list registration on the hot path.
        let mut timer = deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into())));
        let (server, client) = (&t.server.stream, &self.client);
        let c_write = write_limit > 0;
        let s_write = t.s_ready > 0;
        std::future::poll_fn(|cx| {
            // What TLS still holds goes out first (nothing to do for TCP).
            if let Poll::Ready(Err(e)) = server.poll_send_pending(cx) {
                return Poll::Ready(Err(e));
            }
            if let Poll::Ready(Err(e)) = client.poll_send_pending(cx) {
                return Poll::Ready(Ok(Event::ClientSendFailed(e)));
            }
            if s_can_read {
                if let Poll::Ready(r) = server.poll_read_ready(cx) {
                    return Poll::Ready(r.map(|_| Event::ServerReadable));
                }
            }
            if c_can_read {
                if let Poll::Ready(r) = client.poll_read_ready(cx) {
                    return Poll::Ready(Ok(
                        r.map_or_else(Event::ClientSendFailed, |_| Event::ClientReadable)
                    ));
                }
            }
            if c_write {
                if let Poll::Ready(r) = server.poll_write_ready(cx) {
                    return Poll::Ready(r.map(|_| Event::Writable));
                }
            }
            if s_write {
                if let Poll::Ready(r) = client.poll_write_ready(cx) {
                    return Poll::Ready(Ok(
                        r.map_or_else(Event::ClientSendFailed, |_| Event::Writable)
                    ));
                }
            }
            if let Some(timer) = timer.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Event::Timer));
                }
            }
            // The task's waker was registered for stop requests while it waited for this
            // server (`checkout_watching`): checking the flag is enough here.
            // A drain waits for the transaction's end (the idle wait acts on it); meanwhile
            // the task stays registered for a stop that cannot wait (its wake-up was spent).
            match info.stopped() {
                Stop::None => {}
                Stop::Drain | Stop::DrainNow => {
                    if let Poll::Ready(why) = info.poll_stop(cx) {
                        if !why.draining() {
                            return Poll::Ready(Ok(Event::Stop));
                        }
                    }
                }
                _ => return Poll::Ready(Ok(Event::Stop)),
            }
            Poll::Pending
        })
        .await
    }

    /// Act on what happened: read what came and scan it, or end the request.
    async fn dispatch(
        &mut self,
        ev: std::io::Result<Event>,
        t: &mut Txn,
        cbuf: &mut BytesMut,
    ) -> Result<(), Exit> {
        match ev {
            Err(e) => Err(Exit::ServerLost(e.to_string())),
            Ok(Event::Writable) => Ok(()),
            Ok(Event::ClientSendFailed(e)) => {
                Err(Exit::ClientLost(format!("client connection error: {e}")))
            }
            Ok(Event::Stop) => {
                let msg = stop_message(self.handle.info.stopped());
                self.fatal(sqlstate::ADMIN_SHUTDOWN, msg).await;
                Err(Exit::ClientLost(msg.into()))
            }
            Ok(Event::Timer) => {
                let (code, what) = if t.state.client_awaited() {
                    (
                        sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                        "idle_transaction_timeout",
                    )
                } else {
                    (sqlstate::IDLE_SESSION_TIMEOUT, "client_idle_timeout")
                };
                self.fatal(code, what).await;
                Err(Exit::ClientLost(what.into()))
            }
            Ok(Event::ServerReadable) => {
                let server = &mut *t.server;
                reserve(&mut server.rbuf, CHUNK);
                match server.stream.read_some(&mut server.rbuf) {
                    Ok(0) => Err(Exit::ServerLost("server closed the connection".into())),
                    Ok(_) => {
                        if t.keeping {
                            match first_answer(&t.server.rbuf) {
                                // Relay nothing before it is known.
                                FirstAnswer::Incomplete => return Ok(()),
                                FirstAnswer::NeverRan => return Err(Exit::Resend),
                                FirstAnswer::Answered => t.stop_keeping(cbuf),
                            }
                        }
                        self.scan_server(t).map_err(Exit::ServerProtocol)
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(Exit::ServerLost(e.to_string())),
                }
            }
            Ok(Event::ClientReadable) => {
                reserve(cbuf, CHUNK);
                match self.client.read_some(cbuf) {
                    Ok(0) => Err(Exit::ClientLost("client closed the connection".into())),
                    Ok(n) => {
                        PoolStats::add(&self.sess.pool.stats.bytes_received, n as u64);
                        t.last_client_activity = Instant::now();
                        let was_boundary = t.state.at_boundary();
                        self.scan_client(t, cbuf).map_err(Exit::ClientProtocol)?;
                        // The client already sent its next request: keep this server and
                        // read on past the ReadyForQuery.
                        if was_boundary && !t.state.at_boundary() {
                            self.scan_server(t).map_err(Exit::ServerProtocol)?;
                        }
                        Ok(())
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(Exit::ClientLost(format!("client connection error: {e}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// What a parked client keeps: its boxed `Relay` and its `ClientInfo` (in an Arc). Each
    /// took 24-40 bytes more as features came (10,000 idle clients went from 0.81 to 0.86 kB
    /// each, above PgBouncer's 0.84), until the rare parts went into boxes of their own.
    /// glibc rounds a chunk (size + 8) up to 16: 168 bytes is the last size of its class.
    #[test]
    fn a_parked_clients_records_stay_small() {
        // mio adds a field to each socket in debug builds (a registration check): the Relay
        // is counted with its connection at its release size, 32 bytes.
        let conn = std::mem::size_of::<crate::net::Conn>();
        let relay = std::mem::size_of::<super::Relay>() - conn + 32;
        let info = std::mem::size_of::<crate::clients::ClientInfo>();
        assert!(
            relay <= 168,
            "Relay is {relay} bytes (with a 32-byte connection)"
        );
        assert!(info <= 168, "ClientInfo is {info} bytes");
    }

    /// An idle client's task holds the request loop's future: it must stay small (an async
    /// fn's argument stored twice once made it 752 bytes; 10,000 idle clients pay it each).
    /// Tokio's task adds about 130 bytes (header, trailer, the span) and rounds up to 128:
    /// at most 384 keeps the task at 512 bytes (it was 640 with the parameters inline).
    #[test]
    fn an_idle_clients_future_stays_small() {
        fn state_of<F: FnOnce(super::Relay) -> Fut, Fut>(_: F) -> usize {
            std::mem::size_of::<Fut>()
        }
        let size = state_of(super::run);
        assert!(size <= 384, "the request loop's future is {size} bytes");
    }

    /// A request's future is allocated per request: its rare branches (opening a server,
    /// waiting, checking, syncing parameters, every end but a clean release) live on the
    /// heap of their own, so it holds little more than the transaction's state (it was 5.9 kB).
    #[test]
    fn a_requests_future_holds_only_the_common_path() {
        fn request<'a, F, Fut>(_: F) -> usize
        where
            F: FnOnce(&'a mut super::Relay, &'a mut bytes::BytesMut) -> Fut,
            Fut: 'a,
        {
            std::mem::size_of::<Fut>()
        }
        fn checkout<'a, F, Fut>(_: F) -> usize
        where
            F: FnOnce(&'a std::sync::Arc<crate::pool::Pool>) -> Fut,
            Fut: 'a,
        {
            std::mem::size_of::<Fut>()
        }
        let txn = std::mem::size_of::<super::Txn>();
        let size = request(super::Relay::request);
        assert!(
            size <= txn + 640,
            "a request's future is {size} bytes (its Txn {txn})"
        );
        let size = checkout(|p| crate::pool::Pool::checkout(p, std::time::Instant::now()));
        assert!(size <= 64, "a checkout's future is {size} bytes");
    }
}

#[cfg(test)]
mod drain_tests {
    use super::checks_connection;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn empty_queries_are_connection_checks() {
        let none = None;
        assert!(checks_connection(&msg(b'Q', b"\0"), none));
        assert!(checks_connection(&msg(b'Q', b" ;\n\0"), none));
        assert!(!checks_connection(&msg(b'Q', b"SELECT 1\0"), none));
        // Parse of an empty statement text, with Bind/Execute/Sync after it.
        let mut p = msg(b'P', b"\0\0\0\0");
        p.extend(msg(b'S', b""));
        assert!(checks_connection(&p, none));
        assert!(!checks_connection(&msg(b'P', b"s1\0SELECT 1\0\0\0"), none));
        assert!(checks_connection(&msg(b'P', b"S_1\0\0\0\0"), none));
        // A Bind of a statement the client prepared empty (pgjdbc's isValid, from its fifth).
        let mut statements = crate::prepared::ClientStatements::new();
        let empty = std::sync::Arc::new(crate::prepared::Statement::new(b"", &[]));
        let one = std::sync::Arc::new(crate::prepared::Statement::new(b"SELECT 1", &[]));
        statements.insert(b"S_1"[..].into(), empty);
        statements.insert(b"S_2"[..].into(), one);
        let bind = |name: &[u8]| {
            let mut b = b"\0".to_vec();
            b.extend_from_slice(name);
            b.extend_from_slice(b"\0\0\0\0\0\0\0");
            msg(b'B', &b)
        };
        assert!(checks_connection(&bind(b"S_1"), Some(&statements)));
        assert!(!checks_connection(&bind(b"S_2"), Some(&statements)));
        assert!(!checks_connection(&bind(b"S_3"), Some(&statements)));
        assert!(!checks_connection(&bind(b"S_1"), none));
        // Not whole yet, or another message: not a check.
        assert!(!checks_connection(&msg(b'Q', b"\0")[..4], none));
        assert!(!checks_connection(&msg(b'D', b"S\0"), none));
        assert!(!checks_connection(b"", none));
    }
}
