//! Integration tests: LISTEN/NOTIFY in transaction mode (issue 16): one listener server per
//! pool, notifications fanned out to each subscribed client, many clients on a small pool.

use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::support::client::{one, rows, tp_config};
use crate::support::{custom_config, db_entry, Mux};

/// A client whose notifications come out of the receiver, as (channel, payload).
async fn listening_client(
    cfg: &tokio_postgres::Config,
) -> (Client, mpsc::UnboundedReceiver<(String, String)>) {
    let (client, mut conn) = cfg.connect(NoTls).await.expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    (client, rx)
}

/// What arrives within `wait` of the last arrival.
async fn drain(rx: &mut mpsc::UnboundedReceiver<(String, String)>, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some((c, p))) = tokio::time::timeout(wait, rx.recv()).await {
        got.push(format!("{c}:{p}"));
    }
    got
}

/// Eight clients LISTEN on a pool of two servers (a LISTEN that pinned would leave the others
/// waiting); NOTIFY and pg_notify from another client reach exactly the subscribed ones, in
/// order, only once committed; UNLISTEN and a LISTEN rolled back are honoured; and the
/// listening clients go on running queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_fan_out_to_listening_clients_on_a_small_pool() {
    let general = "query_wait_timeout = 5";
    let mux = Mux::start(custom_config(
        general,
        &db_entry("lsdb", "appdb", "pool_size = 2"),
    ))
    .await;
    let cfg = tp_config(mux.port(), "app", "app_pw", "lsdb");
    let mut clients = Vec::new();
    for i in 0..8 {
        let (c, rx) = listening_client(&cfg).await;
        let sql = match i % 4 {
            0 => "LISTEN alpha",
            1 => "LISTEN beta",
            2 => "LISTEN alpha; LISTEN \"Beta Two\"",
            _ => "BEGIN; LISTEN alpha; ROLLBACK; LISTEN beta",
        };
        rows(&c, sql).await;
        clients.push((c, rx, sql));
    }
    // Every listening client still gets a server for its queries.
    for (c, _, _) in &clients {
        assert_eq!(one(c, "SELECT 1").await, "1");
    }
    let (n, _nh) = listening_client(&cfg).await;
    // pg_listening_channels() is answered for the client, as by Postgres.
    let asked = "SELECT c FROM pg_listening_channels() c ORDER BY c";
    let channels: Vec<_> = rows(&clients[2].0, asked)
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        channels,
        [Some("Beta Two".to_string()), Some("alpha".to_string())]
    );
    assert!(rows(&n, asked).await.is_empty());
    rows(&n, "NOTIFY alpha, 'a1'").await;
    rows(&n, "SELECT pg_notify('beta', 'b1')").await;
    rows(&n, "BEGIN; NOTIFY alpha, 'never'; ROLLBACK").await;
    rows(
        &n,
        "BEGIN; NOTIFY \"Beta Two\", 'b2'; NOTIFY alpha, 'a2'; COMMIT",
    )
    .await;
    for (_, rx, sql) in clients.iter_mut() {
        let want: &[&str] = match *sql {
            "LISTEN alpha" => &["alpha:a1", "alpha:a2"],
            "LISTEN beta" => &["beta:b1"],
            "LISTEN alpha; LISTEN \"Beta Two\"" => &["alpha:a1", "Beta Two:b2", "alpha:a2"],
            _ => &["beta:b1"],
        };
        assert_eq!(drain(rx, Duration::from_millis(500)).await, want, "{sql}");
    }
    // UNLISTEN one channel, UNLISTEN *: nothing more for those.
    rows(&clients[2].0, "UNLISTEN alpha").await;
    rows(&clients[0].0, "UNLISTEN *").await;
    rows(&n, "NOTIFY alpha, 'a3'; NOTIFY \"Beta Two\", 'b3'").await;
    assert_eq!(
        drain(&mut clients[0].1, Duration::from_millis(500)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        drain(&mut clients[2].1, Duration::from_millis(500)).await,
        ["Beta Two:b3"]
    );
    assert_eq!(
        drain(&mut clients[4].1, Duration::from_millis(500)).await,
        ["alpha:a3"]
    );
    // Notifications reach a client between its own requests too.
    let (c, rx, _) = &mut clients[4];
    for i in 0..20 {
        rows(&n, &format!("NOTIFY alpha, '{i}'")).await;
        assert_eq!(one(c, "SELECT 1").await, "1");
    }
    assert_eq!(drain(rx, Duration::from_millis(500)).await.len(), 20);
}

/// psycopg 3's `conn.notifies()` and asyncpg's `add_listener`, then node-postgres'
/// `client.on('notification')`: six listeners of each and a notifier, through pgmux in
/// transaction mode on two servers, receive exactly what they receive directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_listen_through_pgmux_as_directly() {
    use crate::drivers::{node_script, python_script};
    use crate::support::{config, pg};
    let limit = Duration::from_secs(90);
    let mux = Mux::start(config("", &db_entry("lsdrv", "appdb", "pool_size = 2"))).await;
    for (script, node) in [("listen_notify.py", false), ("node_pg_listen.js", true)] {
        let run = |port: u16, what: &'static str| async move {
            let db = if port == pg().port { "appdb" } else { "lsdrv" };
            match node {
                false => python_script(script, port, db, limit, what).await,
                true => node_script(script, port, db, limit, what).await,
            }
        };
        let direct = run(pg().port, "listeners against Postgres").await;
        assert!(
            direct.ok,
            "{script} directly: {}{}",
            direct.stdout, direct.stderr
        );
        assert!(
            direct.stdout.contains("listener 5: chan_b:b0"),
            "{}",
            direct.stdout
        );
        let via = run(mux.port(), "listeners through pgmux").await;
        assert!(
            via.ok,
            "{script} through pgmux: {}{}",
            via.stdout, via.stderr
        );
        assert_eq!(
            via.stdout, direct.stdout,
            "{script}: through pgmux vs directly"
        );
    }
}

/// The listener's server is terminated: the listener opens another and LISTENs again, and
/// notifications reach the client again (those sent while it was down are lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_listens_again_after_losing_its_server() {
    use crate::support::client::sql_super;
    let mux = Mux::start(custom_config(
        "",
        &db_entry("lsre", "appdb", "pool_size = 2"),
    ))
    .await;
    let cfg = tp_config(mux.port(), "app", "app_pw", "lsre");
    let (c, mut rx) = listening_client(&cfg).await;
    rows(&c, "LISTEN gamma_reconnect").await;
    let (n, _) = listening_client(&cfg).await;
    rows(&n, "NOTIFY gamma_reconnect, 'before'").await;
    assert_eq!(
        drain(&mut rx, Duration::from_millis(300)).await,
        ["gamma_reconnect:before"]
    );
    let killed = sql_super(
        "appdb",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query = 'LISTEN \"gamma_reconnect\";'",
    )
    .await;
    assert_eq!(killed, "1", "the listener's server");
    let mut got = Vec::new();
    for i in 0..50 {
        rows(&n, &format!("NOTIFY gamma_reconnect, 'after {i}'")).await;
        got = drain(&mut rx, Duration::from_millis(200)).await;
        if !got.is_empty() {
            break;
        }
    }
    assert!(
        !got.is_empty(),
        "no notification after the listener's server was lost"
    );
    assert_eq!(one(&c, "SELECT 1").await, "1");
}

/// A client that stops reading while notifications pour in: at most notify_queue_limit (2 MiB
/// here) waits for it in pgmux, then it gets 54000 and is disconnected; a client that reads
/// them is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_notifications_is_disconnected() {
    use crate::support::raw;
    let general = "auth_type = \"trust\"\nnotify_queue_limit = 2097152";
    let mux = Mux::start(custom_config(
        general,
        &db_entry("lsbig", "appdb", "pool_size = 2"),
    ))
    .await;
    let (mut slow, _) =
        raw::login_trust(mux.port(), &[("user", "app"), ("database", "lsbig")]).await;
    raw::simple_query(&mut slow, "LISTEN big").await;
    let cfg = tp_config(mux.port(), "app", "", "lsbig");
    let (ok, mut ok_rx) = listening_client(&cfg).await;
    rows(&ok, "LISTEN big").await;
    let (n, _) = listening_client(&cfg).await;
    // 12 MB, more than the kernel's socket buffers and pgmux's limit together, in bursts of
    // 0.8 MB (each transaction's notifications come at once); the client that reads takes
    // each burst before the next is sent, as a client that keeps up does.
    for burst in 0..16 {
        rows(
            &n,
            "SELECT count(pg_notify('big', i || repeat('x', 7900))) \
                  FROM generate_series(1, 100) i",
        )
        .await;
        for i in 0..100 {
            let got = tokio::time::timeout(Duration::from_secs(10), ok_rx.recv()).await;
            assert!(
                matches!(got, Ok(Some(_))),
                "burst {burst}: {i} of 100 arrived"
            );
        }
    }
    let msgs = raw::read_to_close(&mut slow).await;
    let (code, msg, _) = raw::error_of(&msgs).expect("an error before the close");
    assert_eq!(code, "54000", "{msg}");
    let notes = msgs.iter().filter(|m| m.0 == b'A').count();
    assert!(notes < 1600, "all {notes} notifications were delivered");
    assert_eq!(one(&ok, "SELECT 1").await, "1");
}

/// A client told its LISTEN is done gets every notification sent after that, even one sent
/// at once straight to Postgres: its ReadyForQuery waits until the pool's listener LISTENs
/// (the first time, once it has opened its server). It came before, and a NOTIFY in that gap
/// was lost (seen as a flaky test under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_sent_right_after_listen_returns_arrives() {
    use crate::support::pg;
    let mux = Mux::start(custom_config(
        "",
        &db_entry("lsnow", "appdb", "pool_size = 2"),
    ))
    .await;
    let (direct, _) = listening_client(&tp_config(pg().port, "app", "app_pw", "appdb")).await;
    let (c, mut rx) = listening_client(&tp_config(mux.port(), "app", "app_pw", "lsnow")).await;
    // The first opens the listener's server; the others add a channel to it.
    for (i, channel) in ["now_a", "now_b", "now_c"].into_iter().enumerate() {
        rows(&c, &format!("LISTEN {channel}")).await;
        direct
            .batch_execute(&format!("NOTIFY {channel}, 'at once {i}'"))
            .await
            .unwrap();
        assert_eq!(
            drain(&mut rx, Duration::from_millis(1000)).await,
            [format!("{channel}:at once {i}")]
        );
    }
}
