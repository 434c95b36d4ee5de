//! Integration tests: a fleet of pgmux processes (issue 17). A cancel reaches the replica that
//! issued its key from any replica (PgBouncer's `peer_id` and `[peers]`), forwarded once and
//! never looped.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
    let (s, msgs) = raw::login_trust(port, &[("user", "app"), ("database", "appdb")]).await;
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
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut req = Vec::new();
    for v in [16, 80877102, pid, secret] {
        req.extend_from_slice(&v.to_be_bytes());
    }
    c.write_all(&req).await.unwrap();
    let _ = c.shutdown().await;
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
            raw::send(&mut s, &raw::query("SELECT pg_sleep(30)")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
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
