//! Database entries with several hosts: reads balanced over replicas, a stopped replica banned
//! and used again once back, an idle server to a stalled host caught by server_check_query,
//! and a host name whose address moves (dns_max_ttl).

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::http;
use crate::support::client::{one, rows, tp_config, tp_connect};
use crate::support::netns::NetHost;
use crate::support::{eventually, free_port, pg, ConfigBuilder, Mux, PrivatePg};

/// `[databases.NAME]` for user postgres's `postgres` database on these local ports.
fn local_hosts(name: &str, ports: &[u16], settings: &str) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "[databases.{name}]\nhost = \"{hosts}\"\nport = \"{}\"\ndbname = \"postgres\"\n{settings}\n",
        ports.join(",")
    )
}

/// pgmux with trust logins for `postgres` (also an admin), `/metrics` and `/ready` on a free
/// port, and these sections.
async fn mux_with(general: &str, sections: &str) -> Mux {
    Mux::start(
        ConfigBuilder::new()
            .general("auth_type = \"trust\"\nmax_client_conn = 500\nadmin_users = [\"postgres\"]")
            .general(general)
            .sections(sections)
            .sections("[metrics]\nlisten = \"127.0.0.1:0\"\n")
            .user("postgres", None)
            .build(),
    )
    .await
}

/// The /ready answer's host entries for `database`: host → (up, banned, servers).
async fn ready_hosts(mux: &Mux, database: &str) -> HashMap<String, (bool, bool, u64)> {
    let r = http(mux.running.metrics_addr.unwrap(), "GET", "/ready").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("/ready is JSON");
    v["hosts"]
        .as_array()
        .expect("/ready lists hosts")
        .iter()
        .filter(|h| h["database"] == database)
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_string(),
                (
                    h["up"].as_bool().unwrap(),
                    h["banned"].as_bool().unwrap(),
                    h["servers"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// A metric's value for one label set, from /metrics.
async fn metric(mux: &Mux, name: &str, label: &str) -> Option<f64> {
    let r = http(mux.running.metrics_addr.unwrap(), "GET", "/metrics").await;
    r.body
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Reads over two streaming replicas (`target_session_attrs = "standby"`, round-robin): new
/// servers alternate between them (SHOW SERVERS' host column says where each went). Under a
/// read load, one replica is stopped: no read fails (a read it was running is re-sent), the
/// replica is banned (/ready, /metrics), and once it is back and its ban is over, reads reach
/// it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_leave_a_stopped_replica_and_come_back_to_it() {
    let (primary, r1, r2) = tokio::task::spawn_blocking(|| {
        let p = PrivatePg::start("hosts-primary");
        let r1 = PrivatePg::standby_of(&p, "hosts-r1");
        let r2 = PrivatePg::standby_of(&p, "hosts-r2");
        (p, r1, r2)
    })
    .await
    .unwrap();
    let (p1, p2) = (r1.port, r2.port);
    let sections = [
        local_hosts(
            "reads",
            &[p1, p2],
            "target_session_attrs = \"standby\"\npool_size = 4",
        ),
        local_hosts(
            "fewest",
            &[p1, p2],
            "target_session_attrs = \"read-only\"\nload_balance_hosts = \"least-connections\"",
        ),
    ]
    .concat();
    let mux = mux_with("host_ban_time = 2\nserver_lifetime = 1", &sections).await;
    let cfg = tp_config(mux.port(), "postgres", "", "reads");

    // Four servers at once: two on each replica (round-robin). After the third (r1, r2, r1),
    // a least-connections entry, which counts every pool's servers, goes to r2 first, then
    // (two each) to the first listed.
    let few = tp_config(mux.port(), "postgres", "", "fewest");
    let mut held = Vec::new();
    let mut fewest = Vec::new();
    let mut ports = Vec::new();
    for i in 0..4 {
        if i == 3 {
            for want in [p2, p1] {
                let (c, h) = tp_connect(&few).await.unwrap();
                c.simple_query("BEGIN").await.unwrap();
                let got = one(&c, "SELECT current_setting('port')").await;
                assert_eq!(got, want.to_string(), "least-connections");
                fewest.push((c, h));
            }
        }
        let (c, h) = tp_connect(&cfg).await.unwrap();
        c.simple_query("BEGIN").await.unwrap();
        ports.push(one(&c, "SELECT current_setting('port')").await);
        held.push((c, h));
    }
    ports.sort();
    let mut want = vec![
        p1.to_string(),
        p1.to_string(),
        p2.to_string(),
        p2.to_string(),
    ];
    want.sort();
    assert_eq!(ports, want, "round-robin over the replicas");
    let admin = tp_config(mux.port(), "postgres", "", "pgmux");
    let (a, _ha) = tp_connect(&admin).await.unwrap();
    let show = a.simple_query("SHOW SERVERS").await.unwrap();
    let mut by_host: HashMap<String, usize> = HashMap::new();
    for m in &show {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let host = format!("{}:{}", r.get("addr").unwrap(), r.get("port").unwrap());
            *by_host.entry(host).or_default() += 1;
        }
    }
    assert_eq!(by_host[&format!("127.0.0.1:{p1}")], 3, "{by_host:?}");
    assert_eq!(by_host[&format!("127.0.0.1:{p2}")], 3, "{by_host:?}");
    drop(fewest);
    for (c, _) in &held {
        c.simple_query("COMMIT").await.unwrap();
    }
    drop(held);

    // A read load, counting where reads went and any error.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let on_r1 = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..6 {
        let (stop, errors, on_r1, cfg) = (stop.clone(), errors.clone(), on_r1.clone(), cfg.clone());
        let r1_port = p1.to_string();
        readers.push(tokio::spawn(async move {
            let (c, _h) = tp_connect(&cfg).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                match c.simple_query("SELECT current_setting('port')").await {
                    Ok(m) => {
                        let got = m.iter().find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => {
                                r.get(0).map(str::to_string)
                            }
                            _ => None,
                        });
                        if got.as_deref() == Some(&r1_port) {
                            on_r1.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        eprintln!("read failed: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(on_r1.load(Ordering::Relaxed) > 0, "reads reach r1");
    let r1 = tokio::task::spawn_blocking(move || {
        r1.stop();
        r1
    })
    .await
    .unwrap();
    let r1_host = format!("127.0.0.1:{p1}");
    // Banned once a new server tried it (server_lifetime = 1 makes new servers often).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = ready_hosts(&mux, "reads").await;
        if h.get(&r1_host)
            .is_some_and(|&(up, banned, _)| !up && banned)
        {
            break;
        }
        assert!(Instant::now() < deadline, "r1 never banned: {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let label = format!("host=\"{r1_host}\"");
    assert_eq!(metric(&mux, "pgmux_host_banned", &label).await, Some(1.0));
    assert!(metric(&mux, "pgmux_host_failures_total", &label).await >= Some(1.0));
    let served_while_down = on_r1.load(Ordering::Relaxed);

    // Back: after its ban, new servers go there again.
    let r1 = tokio::task::spawn_blocking(move || {
        r1.start();
        r1
    })
    .await
    .unwrap();
    eventually(20, "reads reach r1 again", || {
        on_r1.load(Ordering::Relaxed) > served_while_down
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "reads failed");
    let h = ready_hosts(&mux, "reads").await;
    assert!(!h[&r1_host].1, "r1 still banned: {h:?}");
    drop((primary, r1, r2));
}

/// An idle server to a host that stopped answering (its packets dropped, no RST) looks alive;
/// server_check_query (server_check_delay = 0: every checkout) catches it within
/// server_connect_timeout, closes it and bans its host, and the client is served by the next
/// host at once instead of failing after tcp_user_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_to_a_stalled_host_fails_its_check_and_the_next_host_serves() {
    let net = NetHost::create();
    let (ns, addr) = (net.ns.clone(), net.addr.clone());
    let private =
        tokio::task::spawn_blocking(move || PrivatePg::start_in("hosts-stall", &ns, &addr))
            .await
            .unwrap();
    let shared_port = pg().port;
    let entry = format!(
        "[databases.two]\nhost = \"{},127.0.0.1\"\nport = \"{},{shared_port}\"\n\
         dbname = \"postgres\"\nload_balance_hosts = \"disable\"\n",
        net.addr, private.port
    );
    let mux = mux_with(
        "server_check_delay = 0\nserver_connect_timeout = 1\nhost_ban_time = 60",
        &entry,
    )
    .await;
    let cfg = tp_config(mux.port(), "postgres", "", "two");
    let (c, _h) = tp_connect(&cfg).await.unwrap();
    assert_eq!(
        one(&c, "SELECT current_setting('port')").await,
        private.port.to_string(),
        "the first host, in order"
    );
    net.cut();
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        rows(&c, "SELECT current_setting('port')"),
    )
    .await
    .expect("the query went to the stalled server");
    assert_eq!(r[0][0].as_deref(), Some(shared_port.to_string().as_str()));
    eprintln!("stalled idle server replaced after {:?}", started.elapsed());
    let pool = mux.pool("two", "postgres").unwrap();
    assert_eq!(pool.stats.check_failures.load(Ordering::Relaxed), 1);
    let stalled = format!("{}:{}", net.addr, private.port);
    let h = ready_hosts(&mux, "two").await;
    assert_eq!(h[&stalled], (false, true, 0), "{h:?}");
    // Banned: the next new servers go to the other host without trying it.
    let (d, _hd) = tp_connect(&cfg).await.unwrap();
    c.simple_query("BEGIN").await.unwrap();
    let t = Instant::now();
    assert_eq!(
        one(&d, "SELECT current_setting('port')").await,
        shared_port.to_string()
    );
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "tried the banned host first"
    );
    drop(private);
    drop(net);
}

/// A line of /etc/hosts of this test's own: appended once, its first byte-wide field changed
/// in place (a reader never sees the file half written), the file cut back on drop.
struct HostsLine {
    len_before: u64,
    at: u64,
}

impl HostsLine {
    /// Map `name` to 127.0.0.`last`; `None` when /etc/hosts cannot be written here (a
    /// read-only mount).
    fn add(name: &str, last: u8) -> Option<HostsLine> {
        let before = std::fs::read("/etc/hosts").expect("read /etc/hosts");
        let mut text = String::new();
        if !before.ends_with(b"\n") && !before.is_empty() {
            text.push('\n');
        }
        let at = (before.len() + text.len()) as u64 + "127.0.0.".len() as u64;
        text.push_str(&format!("127.0.0.{last} {name}\n"));
        let mut f = match std::fs::OpenOptions::new().append(true).open("/etc/hosts") {
            Ok(f) => f,
            Err(e) => {
                eprintln!("SKIPPED: /etc/hosts cannot be written here: {e}");
                return None;
            }
        };
        f.write_all(text.as_bytes()).unwrap();
        Some(HostsLine {
            len_before: before.len() as u64,
            at,
        })
    }

    /// Point it at 127.0.0.`last` (one digit, as given to `add`).
    fn point(&self, last: u8) {
        assert!(last < 10);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/etc/hosts")
            .unwrap();
        f.seek(SeekFrom::Start(self.at)).unwrap();
        f.write_all(&[b'0' + last]).unwrap();
    }
}

impl Drop for HostsLine {
    fn drop(&mut self) {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/etc/hosts") {
            let _ = f.set_len(self.len_before);
        }
    }
}

/// A host name whose address changes (a managed database's endpoint after a failover): with
/// dns_max_ttl = 1, pgmux looks it up again, closes the server to the old address when its
/// client is done with it, and opens the next one at the new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_moves_is_followed() {
    let port = free_port();
    let (old, new) = tokio::task::spawn_blocking(move || {
        (
            PrivatePg::start_at("hosts-dns-old", "127.0.0.2", port),
            PrivatePg::start_at("hosts-dns-new", "127.0.0.3", port),
        )
    })
    .await
    .unwrap();
    let name = format!("pgmux-it-dns-{}", std::process::id());
    let Some(line) = HostsLine::add(&name, 2) else {
        return;
    };
    let mux = mux_with(
        "dns_max_ttl = 1",
        &format!("[databases.moving]\nhost = \"{name}\"\nport = {port}\ndbname = \"postgres\"\n"),
    )
    .await;
    let cfg = tp_config(mux.port(), "postgres", "", "moving");
    let (c, _h) = tp_connect(&cfg).await.unwrap();
    let addr = "SELECT host(inet_server_addr())";
    assert_eq!(one(&c, addr).await, "127.0.0.2");
    let first = one(&c, "SELECT pg_backend_pid()").await;
    line.point(3);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        // One transaction: the server may change between two.
        let both = one(
            &c,
            "SELECT host(inet_server_addr()) || ' ' || pg_backend_pid()",
        )
        .await;
        let (at, pid) = both.split_once(' ').expect("address and pid");
        let (at, pid) = (at.to_string(), pid.to_string());
        if at == "127.0.0.3" {
            assert_ne!(pid, first);
            break;
        }
        assert_eq!(pid, first, "a new server before the name moved");
        assert!(Instant::now() < deadline, "still on 127.0.0.2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("followed the new address after {:?}", started.elapsed());
    let pool = mux.pool("moving", "postgres").unwrap();
    eventually(5, "only the new server is open", || pool.counts().open == 1).await;
    drop(line);
    drop((old, new));
}

/// On a `read-write` entry, a client's `SET default_transaction_read_only TO on` is the
/// session's, not the host's: its server is not taken for a host turned read-only and closed
/// at every release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_session_on_a_read_write_entry_keeps_its_server() {
    use crate::support::client::tp_connect_ok;
    let entry = crate::support::db_entry(
        "rwdb",
        "appdb",
        "target_session_attrs = \"read-write\"\npool_size = 1",
    );
    let mux = Mux::start(crate::support::config("", &entry)).await;
    let (c, _h) = tp_connect_ok(&tp_config(mux.port(), "app", "app_pw", "rwdb")).await;
    rows(&c, "SET default_transaction_read_only TO on").await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    for _ in 0..5 {
        assert_eq!(
            one(&c, "SELECT pg_backend_pid()").await,
            pid,
            "a new server"
        );
        assert_eq!(one(&c, "SHOW default_transaction_read_only").await, "on");
    }
    let opened = mux
        .pool("rwdb", "app")
        .unwrap()
        .stats
        .servers_opened
        .load(Ordering::Relaxed);
    assert_eq!(opened, 1);
}
