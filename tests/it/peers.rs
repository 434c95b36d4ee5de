//! Integration tests: a fleet of pgmux processes (issue 17). A cancel reaches the replica that
//! issued its key from any replica (PgBouncer's `peer_id` and `[peers]`), forwarded once and
//! never looped.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::haproxy::Balancer;
use crate::support::process::Proc;
use crate::support::raw;
use crate::support::{custom_config, free_port, Mux};

/// `[peers]` naming every replica of the fleet on 127.0.0.1 at `ports` (peer i+1 at ports[i]).
fn peers_section(ports: &[u16]) -> String {
    (ports.iter().enumerate())
        .map(|(i, p)| format!("[peers.{}]\nhost = \"127.0.0.1\"\nport = {p}\n", i + 1))
        .collect()
}

/// Replica `id` (1-based) of a fleet on `ports`, with `peers` as its `[peers]` section.
async fn replica(id: usize, ports: &[u16], peers: &str) -> Mux {
    let general = format!("auth_type = \"trust\"\nadmin_users = [\"app\"]\npeer_id = {id}");
    let mut config = custom_config(&general, peers);
    config.general.listen_port = ports[id - 1];
    Mux::start(config).await
}

/// A logged-in raw client of `port`: its stream and its cancel key.
async fn client(port: u16) -> (TcpStream, i32, i32) {
    client_at("127.0.0.1", port).await
}

/// A logged-in raw client of pgmux at `addr`:`port` (database drilldb when not on 127.0.0.1).
async fn client_at(addr: &str, port: u16) -> (TcpStream, i32, i32) {
    let db = if addr == "127.0.0.1" {
        "appdb"
    } else {
        "drilldb"
    };
    let s = TcpStream::connect((addr, port)).await.unwrap();
    let (s, msgs) = raw::login_trust_on(s, &[("user", "app"), ("database", db)]).await;
    let key = msgs.iter().find(|m| m.0 == b'K').expect("BackendKeyData");
    let pid = i32::from_be_bytes(key.1[..4].try_into().unwrap());
    let secret = i32::from_be_bytes(key.1[4..8].try_into().unwrap());
    (s, pid, secret)
}

/// Every message up to ReadyForQuery, errors included.
async fn answer(s: &mut TcpStream) -> Vec<raw::Msg> {
    let mut out = Vec::new();
    while let Some(m) = raw::read_msg(s).await {
        let done = m.0 == b'Z';
        out.push(m);
        if done {
            break;
        }
    }
    out
}

/// Send a CancelRequest for (pid, secret) to pgmux on `port`.
async fn cancel(port: u16, pid: i32, secret: i32) {
    cancel_at("127.0.0.1", port, pid, secret).await
}

/// Send a CancelRequest for (pid, secret) to pgmux at `addr`:`port`.
async fn cancel_at(addr: &str, port: u16, pid: i32, secret: i32) {
    let mut c = TcpStream::connect((addr, port)).await.unwrap();
    let mut req = Vec::new();
    for v in [16, 80877102, pid, secret] {
        req.extend_from_slice(&v.to_be_bytes());
    }
    c.write_all(&req).await.unwrap();
    let _ = c.shutdown().await;
}

/// The query of `a_cancel_sent_to_any_replica_reaches_its_query` (no other test runs it).
const SLEEP_ANY: &str = "SELECT pg_sleep(30) /* any replica */";

/// Wait until Postgres runs `query` (a cancel sent before would find nothing to cancel).
async fn running(query: &str) {
    running_n(query, 1).await
}

/// Wait until Postgres runs `query` `n` times at once.
async fn running_n(query: &str, n: usize) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query = '{query}' AND state = 'active'"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::support::client::sql_super("postgres", &sql).await != n.to_string() {
        assert!(
            Instant::now() < deadline,
            "{query} never ran {n} times at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three replicas, each query cancelled through each of the other two: every cancel reaches
/// it within a second; the keys carry their replica's id and stay positive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_any_replica_reaches_its_query() {
    let ports = [free_port(), free_port(), free_port()];
    let peers = peers_section(&ports);
    let mut fleet = Vec::new();
    for id in 1..=3 {
        fleet.push(replica(id, &ports, &peers).await);
    }
    for (at, port) in ports.iter().enumerate() {
        for (via, other) in ports.iter().enumerate().filter(|(i, _)| *i != at) {
            let (mut s, pid, secret) = client(*port).await;
            assert!(pid > 0, "a negative pid: {pid}");
            assert_eq!((pid >> 16) as usize, at + 1, "the key names its replica");
            raw::send(&mut s, &raw::query(SLEEP_ANY)).await;
            running(SLEEP_ANY).await;
            let sent = Instant::now();
            cancel(*other, pid, secret).await;
            let msgs = answer(&mut s).await;
            let (code, msg, _) = raw::error_of(&msgs).expect("the query was cancelled");
            assert_eq!(
                code,
                "57014",
                "replica {}, cancel via {}: {msg}",
                at + 1,
                via + 1
            );
            assert!(
                sent.elapsed() < Duration::from_secs(1),
                "{:?}",
                sent.elapsed()
            );
        }
    }
    // SHOW PEERS lists the others.
    let (mut a, _) =
        raw::login_trust(ports[0], &[("user", "app"), ("database", "pgbouncer")]).await;
    let rows = raw::simple_query(&mut a, "SHOW PEERS").await;
    assert_eq!(rows.iter().filter(|m| m.0 == b'D').count(), 2);
}

/// Configs that disagree cannot make a cancel loop: replica 2 thinks peer 1 is itself, so it
/// forwards a cancel for peer 1's key to itself once, marked as forwarded, and then drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_cancel_is_never_forwarded_again() {
    let ports = [free_port(), free_port()];
    let good = peers_section(&ports);
    let wrong = peers_section(&[ports[1], ports[1]]);
    let _one = replica(1, &ports, &good).await;
    let _two = replica(2, &ports, &wrong).await;
    let (mut s, pid, secret) = client(ports[0]).await;
    raw::send(&mut s, &raw::query("SELECT pg_sleep(1)")).await;
    cancel(ports[1], pid, secret).await;
    let msgs = answer(&mut s).await;
    assert!(
        raw::error_of(&msgs).is_none(),
        "cancelled through a wrong [peers]: {msgs:?}"
    );
    // Replica 2 still serves.
    let (mut t, _, _) = client(ports[1]).await;
    let answer = raw::simple_query(&mut t, "SELECT 1").await;
    assert!(answer.iter().any(|m| m.0 == b'D'));
}

/// Issue 17's drill: 100 `pg_sleep(30)` queries through a round-robin balancer in front of
/// three replicas, each cancelled through the balancer (so most cancels reach a replica that
/// did not issue the key): all 100 are cancelled within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_cancels_through_a_balancer_all_land() {
    let ports = [free_port(), free_port(), free_port()];
    let peers = peers_section(&ports);
    let entry = crate::support::db_entry("drilldb", "appdb", "pool_size = 40");
    let mut fleet = Vec::new();
    for id in 1..=3 {
        let general = format!("auth_type = \"trust\"\npeer_id = {id}");
        let mut config = custom_config(&general, &format!("{peers}{entry}"));
        config.general.listen_port = ports[id - 1];
        fleet.push(Mux::start(config).await);
    }
    let lb = Balancer::start(&ports);
    hundred_cancels(&lb, "peer_id").await;
}

/// The same drill with replicas found through DNS (`peer_dns`; a hosts-format file stands in
/// for the headless Service's name): three pgmux processes on 127.0.0.1-3, no peer ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_cancels_through_a_balancer_all_land_with_peer_dns() {
    let port = free_port();
    let addrs = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let dns = DnsFleet::start(port, &addrs, &addrs);
    let replicas: Vec<_> = addrs.iter().map(|a| (*a, port)).collect();
    let lb = Balancer::start_at(&replicas, None);
    hundred_cancels(&lb, "peer_dns").await;
    drop(dns);
}

/// Replicas found through `peer_dns` are found again as the name changes: a replica the name
/// does not list yet gets no forwarded cancel; once it is listed, it does (within a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_dns_is_resolved_again_as_it_changes() {
    let port = free_port();
    let addrs = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let dns = DnsFleet::start(port, &addrs, &addrs[..2]);
    // A client of the third replica, cancelled through the first.
    let (mut s, pid, secret) = client_at("127.0.0.3", port).await;
    let short = "SELECT pg_sleep(3) /* not listed yet */";
    raw::send(&mut s, &raw::query(short)).await;
    running(short).await;
    cancel_at("127.0.0.1", port, pid, secret).await;
    let msgs = answer(&mut s).await;
    assert!(
        raw::error_of(&msgs).is_none(),
        "cancelled though the name does not list the replica: {msgs:?}"
    );
    assert!(dns.replicas[0]
        .log()
        .contains("no replica of peer_dns has its tag"));
    // The name now lists it.
    dns.write_hosts(&addrs);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let long = "SELECT pg_sleep(30) /* listed */";
    raw::send(&mut s, &raw::query(long)).await;
    running(long).await;
    let sent = Instant::now();
    cancel_at("127.0.0.1", port, pid, secret).await;
    let msgs = answer(&mut s).await;
    assert_eq!(
        raw::error_of(&msgs).map(|e| e.0),
        Some("57014".to_string()),
        "{msgs:?}"
    );
    assert!(sent.elapsed() < Duration::from_secs(1));
}

/// pgmux processes on `addrs` (one port), each with peer_dns = "pgmux-fleet.test", which a
/// hosts-format file (PGMUX_HOSTS_FILE) resolves to `listed`.
struct DnsFleet {
    replicas: Vec<Proc>,
    hosts: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl DnsFleet {
    fn start(port: u16, addrs: &[&str], listed: &[&str]) -> DnsFleet {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let mut fleet = DnsFleet {
            replicas: Vec::new(),
            hosts,
            _dir: dir,
        };
        fleet.write_hosts(listed);
        for (i, a) in addrs.iter().enumerate() {
            let path = fleet._dir.path().join(format!("r{i}.toml"));
            let text = format!(
                "[general]\nlisten_addr = \"{a}\"\nlisten_port = {port}\nauth_type = \"trust\"\n\
                 max_client_conn = 500\npeer_dns = \"pgmux-fleet.test\"\n\
                 [databases.drilldb]\ndbname = \"appdb\"\nport = {}\npool_size = 40\n\
                 [users.app]\npassword = \"app_pw\"\n",
                crate::support::pg().port
            );
            std::fs::write(&path, text).unwrap();
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"));
            cmd.arg("-c")
                .arg(&path)
                .env("PGMUX_HOSTS_FILE", &fleet.hosts);
            fleet.replicas.push(Proc::spawn(cmd));
        }
        fleet
    }

    /// The name resolves to `listed` from now on.
    fn write_hosts(&self, listed: &[&str]) {
        let text: String = listed
            .iter()
            .map(|a| format!("{a} pgmux-fleet.test\n"))
            .collect();
        std::fs::write(&self.hosts, format!("127.0.0.1 localhost\n{text}")).unwrap();
    }
}

/// 100 `pg_sleep(30)` queries through `lb`, each cancelled through it: all cancelled within
/// a second.
async fn hundred_cancels(lb: &Balancer, label: &str) {
    let sleep = format!("SELECT pg_sleep(30) /* {label} */");
    lb.listening().await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (s, msgs) =
            raw::login_trust(lb.port, &[("user", "app"), ("database", "drilldb")]).await;
        let key = msgs.iter().find(|m| m.0 == b'K').expect("BackendKeyData");
        let pid = i32::from_be_bytes(key.1[..4].try_into().unwrap());
        let secret = i32::from_be_bytes(key.1[4..8].try_into().unwrap());
        clients.push((s, pid, secret));
    }
    let issuers: std::collections::BTreeSet<i32> = clients.iter().map(|c| c.1 >> 16).collect();
    assert_eq!(
        issuers.len(),
        3,
        "the balancer spread the clients: {issuers:?}"
    );
    for (s, _, _) in clients.iter_mut() {
        raw::send(s, &raw::query(&sleep)).await;
    }
    // Every query runs in Postgres before the cancels go.
    running_n(&sleep, 100).await;
    // The cancels go at once, each on a connection of its own, as 100 clients' would.
    let sent = Instant::now();
    let cancels: Vec<_> = (clients.iter())
        .map(|(_, pid, secret)| tokio::spawn(cancel(lb.port, *pid, *secret)))
        .collect();
    for c in cancels {
        c.await.unwrap();
    }
    let mut cancelled = 0;
    for (s, _, _) in clients.iter_mut() {
        let msgs = answer(s).await;
        if raw::error_of(&msgs).is_some_and(|e| e.0 == "57014") {
            cancelled += 1;
        }
    }
    let took = sent.elapsed();
    eprintln!("100 cancels through the balancer ({label}): all answered in {took:?}");
    assert_eq!(cancelled, 100);
    assert!(
        took < Duration::from_secs(1),
        "the 100 cancels took {took:?}"
    );
}
