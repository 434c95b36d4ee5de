//! Clients: the accept loop and one task per client (login, then the request loop or the
//! admin console).

mod login;
mod park;
mod relay;
mod secret;

use std::sync::{Arc, Weak};

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::clients::ClientHandle;
use crate::error::Error;
use crate::net::Conn;
use crate::proto::backend;
use crate::shared::{LoginFailure, Shared};
pub(crate) use login::LoggedIn;
pub use relay::state::{Ready, Sent, TxnState};

/// Accept clients on every listener, one task each, until shutdown begins; then drain the
/// connections already queued in the listeners (so none is reset when they close) and
/// return, closing them.
pub async fn serve(listeners: Vec<TcpListener>, shared: Arc<Shared>) {
    use std::task::Poll;
    // Idle clients park in one epoll set (without it, each keeps its task).
    // The accept loop holds the parking set: its task ends once the loop has ended and no
    // client is parked.
    let parking_set = park::Parking::start(shared.clone())
        .inspect_err(|e| tracing::warn!("idle clients cannot park: {e}"))
        .ok();
    let parking = parking_set.as_ref().map_or_else(Weak::new, Arc::downgrade);
    // The next listener to look at first, so that a busy one cannot starve the others.
    let mut first = 0;
    let accept_any = |first: &mut usize, cx: &mut std::task::Context<'_>| {
        let n = listeners.len();
        for i in 0..n {
            let k = (*first + i) % n;
            if let Poll::Ready(r) = listeners[k].poll_accept(cx) {
                *first = (k + 1) % n;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    };
    loop {
        let changed = shared.run.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if shared.run.shutting_down() {
            break;
        }
        tokio::select! {
            accepted = std::future::poll_fn(|cx| accept_any(&mut first, cx)) => match accepted {
                Ok((stream, peer)) => spawn_client(stream, peer, &shared, &parking),
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = &mut changed => {}
        }
    }
    // Connections the kernel completed before the listeners close would be reset with them.
    while let Some(Ok((stream, peer))) =
        std::future::poll_fn(|cx| match accept_any(&mut first, cx) {
            Poll::Pending => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r)),
        })
        .await
    {
        spawn_client(stream, peer, &shared, &parking);
    }
    tracing::info!("stopped accepting clients");
}

fn spawn_client(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    shared: &Arc<Shared>,
    parking: &Weak<park::Parking>,
) {
    let handle = shared.clients.add(peer, stream.local_addr().ok());
    let config = shared.config();
    crate::net::tcp::TcpOptions::from_general(&config.general).apply(&stream);
    // Every line the login logs carries the client's id and address, and once it has logged
    // in its database and user. This span ends with the login: see `login_task`.
    let span = tracing::info_span!("client", id = handle.info.id, %peer,
        db = tracing::field::Empty, user = tracing::field::Empty);
    let login = login_task(Conn::Tcp(stream), shared.clone(), handle, parking.clone());
    tokio::spawn(login.instrument(span));
}

/// Log a client in, then hand it to a task of its own for the request loop: the login's
/// larger state is freed, and an idle client's task holds only the request loop's state.
async fn login_task(
    mut stream: Conn,
    shared: Arc<Shared>,
    handle: ClientHandle,
    parking: Weak<park::Parking>,
) {
    let logged_in = match login::login(&mut stream, &shared, &handle.info).await {
        Ok(Some(s)) => s,
        Ok(None) => return, // cancel request, or the client left before logging in
        Err(e) => return crate::boxed::boxed(login_failed(stream, shared, e)).await,
    };
    match logged_in {
        LoggedIn::Pool(session) => {
            if shared.config().general.log_connections {
                handle
                    .info
                    .span()
                    .in_scope(|| tracing::info!("client login"));
            }
            // A client that sent nothing more parks at once (most wait for their application
            // a while): it never holds an idle task.
            let park_now = session.leftover.is_none()
                && shared.config().general.client_park_delay.get().is_some();
            let mut relay = relay::Relay::new(stream, session, handle, shared, parking);
            if park_now {
                match park::Parking::park(relay) {
                    Ok(()) => return,
                    Err(back) => relay = back,
                }
            }
            relay::spawn(relay);
        }
        LoggedIn::Admin(admin) => {
            let span = tracing::Span::current();
            span.record("db", "pgbouncer");
            span.record("user", admin.user.as_str());
            tracing::info!("admin console login");
            tokio::spawn(crate::admin::run(stream, shared, handle, admin).instrument(span));
        }
    }
}

/// A failed login: counted, logged, and told (boxed where taken: rare, and its timers would
/// enlarge every login task).
async fn login_failed(mut stream: Conn, shared: Arc<Shared>, e: login::LoginError) {
    let why = e.reason();
    shared.login_failed(why);
    let e = e.into_error();
    tracing::info!("client login failed: {e}");
    // Slow down password guessing: the answer to a failed authentication waits.
    if why == LoginFailure::Auth {
        if let Some(d) = shared.config().general.auth_failure_delay.get() {
            tokio::time::sleep(d).await;
        }
    }
    send_fatal(&mut stream, &e).await;
}

/// Send a FATAL ErrorResponse for `e` (the server's own body when it came from Postgres).
pub(crate) async fn send_fatal(stream: &mut Conn, e: &Error) {
    let mut out = BytesMut::new();
    match e.raw_postgres() {
        Some(raw) => backend::message(&mut out, b'E', |b| b.extend_from_slice(raw)),
        None => {
            let (code, msg) = e.sqlstate();
            backend::error_response(&mut out, "FATAL", code, &msg);
        }
    }
    stream.close(&out).await;
}

#[cfg(test)]
mod tests {
    /// Every connection has a login task, and a storm of logins leaves freed holes of its size
    /// in the heap among the clients' lasting state: its rare branches are boxed, and its
    /// phases are async blocks where an async fn would keep its arguments twice (it was 2032).
    #[test]
    fn a_login_task_stays_small() {
        fn state_of<F, A, B, C, D, Fut>(_: F) -> usize
        where
            F: FnOnce(A, B, C, D) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = state_of(super::login_task);
        assert!(size <= 1664, "the login task's future is {size} bytes");
    }
}
