//! Start a pgmux instance: bind the listener (and the metrics endpoint), spawn the accept
//! loop, the janitor and the stats logger; and stop it: at once, or draining its clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client;
use crate::clients::Stop;
use crate::config::Config;
use crate::shared::{Request, Shared};

/// A running pgmux (in this process).
pub struct Running {
    /// The first address it listens on (port 0 in the config picks a free one).
    pub addr: SocketAddr,
    /// Every address it listens on (`listen_addr` may list several; `*` is IPv4 and IPv6).
    pub addrs: Vec<SocketAddr>,
    /// The metrics endpoint's address, when `[metrics] listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    accept: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

/// Bind a listening socket, with SO_REUSEPORT when asked (several pgmux on one port). An
/// IPv6 socket takes IPv6 only, so `0.0.0.0` and `::` can both be bound (as PgBouncer does).
pub fn bind(addr: SocketAddr, reuseport: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Bind every address `listen_addr` names on `listen_port`. `*` is every IPv4 and IPv6
/// address (IPv6 skipped with a warning where the host has none); a name binds every address
/// it resolves to. With port 0 the first socket picks a free port and the others take it too.
fn bind_all(config: &Config) -> std::io::Result<Vec<TcpListener>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    let g = &config.general;
    let mut port = g.listen_port;
    let mut listeners: Vec<TcpListener> = Vec::new();
    for entry in crate::config::listen_addrs(&g.listen_addr) {
        let (addrs, optional_v6) = if entry == "*" {
            let all = vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ];
            (all, true)
        } else {
            let resolved: Vec<IpAddr> = match entry.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => (entry, 0)
                    .to_socket_addrs()
                    .map_err(|e| std::io::Error::other(format!("listen_addr {entry}: {e}")))?
                    .map(|a| a.ip())
                    .collect(),
            };
            (resolved, false)
        };
        for ip in addrs {
            let addr = SocketAddr::new(ip, port);
            if listeners.iter().any(|l| l.local_addr().ok() == Some(addr)) {
                continue;
            }
            match bind(addr, g.so_reuseport) {
                Ok(l) => {
                    port = l.local_addr()?.port();
                    listeners.push(l);
                }
                Err(e) if optional_v6 && ip.is_ipv6() => {
                    tracing::warn!("listen_addr *: not listening on IPv6 ({addr}): {e}");
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot listen on {addr}: {e}"),
                    ))
                }
            }
        }
    }
    if listeners.is_empty() {
        return Err(std::io::Error::other("listen_addr names no address"));
    }
    Ok(listeners)
}

/// Bind `listen_addr:listen_port` and start serving. Must run inside a Tokio runtime.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let listeners = bind_all(&config)?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let addr = addrs[0];
    // `[metrics] listen = "*:port"`: every IPv4 and (where the host has it) IPv6 address.
    let mut metrics_listeners = Vec::new();
    if let Some(l) = config.metrics.listen.as_deref() {
        let a = crate::config::metrics_addr(l)
            .ok_or_else(|| std::io::Error::other(format!("bad [metrics] listen: {l}")))?;
        let first = bind(a, config.general.so_reuseport)?;
        let port = first.local_addr()?.port();
        metrics_listeners.push(first);
        if l.starts_with("*:") {
            let v6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
            match bind(v6, config.general.so_reuseport) {
                Ok(l) => metrics_listeners.push(l),
                Err(e) => tracing::warn!("[metrics] listen *: not on IPv6 ({v6}): {e}"),
            }
        }
    }
    let shared = Arc::new(Shared::new(Arc::new(config)).map_err(std::io::Error::other)?);
    let accept = tokio::spawn(client::serve(listeners, shared.clone()));
    let mut tasks = vec![
        tokio::spawn({
            let s = shared.clone();
            crate::pool::run_janitor(
                shared.registry.clone(),
                Duration::from_millis(500),
                move || s.config(),
            )
        }),
        tokio::spawn(crate::stats_log::run(shared.clone())),
    ];
    let metrics_addr = match metrics_listeners.first() {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    for l in metrics_listeners {
        tasks.push(tokio::spawn(crate::metrics::serve(l, shared.clone())));
    }
    tracing::info!(addrs = ?addrs, metrics = ?metrics_addr, "pgmux listening");
    Ok(Running {
        addr,
        addrs,
        metrics_addr,
        shared,
        accept,
        tasks,
    })
}

impl Running {
    /// Stop accepting and stop the background tasks (clients already connected keep their
    /// tasks).
    pub fn stop(self) {
        self.accept.abort();
        for t in &self.tasks {
            t.abort();
        }
    }

    /// PAUSE every pool (SIGUSR1): clients wait, servers close once released.
    pub fn pause(&self) {
        crate::admin::set_paused(&self.shared, None, true);
    }

    /// RESUME every pool (SIGUSR2).
    pub fn resume(&self) {
        crate::admin::set_paused(&self.shared, None, false);
    }

    /// Remember the config file, for RELOAD and SIGHUP.
    pub fn set_config_path(&self, path: std::path::PathBuf) {
        *self.shared.config_path.lock() = Some(path);
    }

    /// The next thing the admin console asks of the process (SHUTDOWN).
    pub async fn next_request(&self) -> Request {
        loop {
            let changed = self.shared.run.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = self.shared.run.requests.lock().pop() {
                return r;
            }
            changed.await;
        }
    }

    /// Graceful shutdown: stop accepting (connections already queued are still served), let
    /// connected clients go on until they leave, and after `timeout` close the rest (idle
    /// ones at once, the others mid-request). Returns when no client is left.
    pub async fn drain(&mut self, timeout: Option<Duration>) {
        self.shared.run.begin_shutdown();
        let _ = (&mut self.accept).await;
        tracing::info!(
            clients = self.shared.clients.count(),
            "shutting down: waiting for clients to leave (shutdown_timeout {timeout:?})"
        );
        // Transaction and statement mode, with 57P01 (a client that reconnects lands on another
        // instance): a client goes once idle a moment or when it checks its connection, and
        // after DRAIN_GRACE also with the answer that ends its transaction; never in the
        // middle of one (`client::relay`). Asked again every 50 ms, for logins under way.
        let shared = &self.shared;
        let boundary =
            shared.config().general.shutdown_clients == crate::config::ShutdownClients::Boundary;
        if boundary {
            shared.run.begin_drain();
        }
        let gone = async {
            while shared.clients.count() > 0 {
                let now = shared.run.drain_phase().unwrap_or(false);
                for c in shared.clients.all().into_iter().filter(|_| boundary) {
                    c.drain_pooled(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let timed_out = match timeout {
            Some(t) => tokio::time::timeout(t, gone).await.is_err(),
            None => {
                gone.await;
                false
            }
        };
        if timed_out {
            let left = self.shared.clients.all();
            tracing::info!(
                clients = left.len(),
                "shutdown_timeout reached: closing the clients left"
            );
            for c in left {
                c.stop(Stop::Shutdown);
            }
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                wait_for(|| self.shared.clients.count() == 0),
            )
            .await;
        }
        self.close_idle_servers();
    }

    /// SHUTDOWN WAIT_FOR_SERVERS: stop accepting, pause every pool, and return once every
    /// server has been released and closed (or after `timeout`).
    pub async fn drain_servers(&mut self, timeout: Option<Duration>) {
        self.shared.run.begin_shutdown();
        let _ = (&mut self.accept).await;
        let pools = self.shared.registry.all();
        for p in &pools {
            p.pause();
        }
        let done = wait_for(|| pools.iter().all(|p| p.open_servers() == 0));
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, done).await;
            }
            None => done.await,
        }
    }

    /// Close every idle server (sending Terminate), before the process exits.
    pub(crate) fn close_idle_servers(&self) {
        for p in self.shared.registry.all() {
            p.pause();
        }
    }
}

/// Poll `cond` every 20 ms until it holds.
async fn wait_for(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
