//! Integration tests: idle clients parked without a task (client_park_delay) come back for
//! their next request with their session intact, and are still stopped, timed out and counted.

use std::time::Duration;

use crate::support::client::{connect_ok, one};
use crate::support::raw::{self, error_of, read_to_close};
use crate::support::{config, custom_config, eventually, Mux};

/// Clients parked now.
fn parked(mux: &Mux) -> usize {
    let all = mux.running.shared.clients.all();
    all.iter().filter(|c| c.parked()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_park_and_come_back_with_their_session() {
    let mux = Mux::start(config("client_park_delay = 0.3", "")).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect_ok(mux.port(), "app", "app_pw", "appdb").await);
    }
    // A client that sent nothing after its login parks at once.
    eventually(5, "20 clients parked after login", || parked(&mux) == 20).await;
    for (i, (c, _)) in clients.iter().enumerate() {
        c.simple_query(&format!("SET application_name = 'parked{i}'"))
            .await
            .unwrap();
    }
    let stmt = clients[0].0.prepare("SELECT $1::int + 1").await.unwrap();
    // Idle past client_park_delay: parked again, by the parking task's sweep.
    eventually(5, "20 clients parked again", || parked(&mux) == 20).await;
    for (i, (c, _)) in clients.iter().enumerate() {
        assert_eq!(one(c, "SHOW application_name").await, format!("parked{i}"));
    }
    let row = clients[0].0.query_one(&stmt, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(mux.clients(), 20);
    // A parked client that leaves is gone from the list.
    eventually(5, "parked again", || parked(&mux) == 20).await;
    drop(clients);
    eventually(5, "clients gone", || mux.clients() == 0).await;
}

/// client_park_delay counts from the client's latest answer: a request that took longer (a slow
/// query, or a long wait for a server, as with thousands of clients on a small pool) does not
/// make the client park as soon as it is answered, between two requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_time_counts_from_the_answer_not_from_the_request() {
    let mux = Mux::start(config("client_park_delay = 2", "")).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    eventually(5, "parked after login", || parked(&mux) == 1).await;
    c.simple_query("SELECT pg_sleep(2.5)").await.unwrap();
    let answered = std::time::Instant::now();
    // The sweep (every 0.5 s) must leave it in its task for 2 s from the answer.
    while answered.elapsed() < Duration::from_millis(1700) {
        assert_eq!(
            parked(&mux),
            0,
            "parked {:?} after its answer",
            answered.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(5, "parked once idle 2 s", || parked(&mux) == 1).await;
    assert!(answered.elapsed() >= Duration::from_secs(2));
    assert_eq!(one(&c, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_parks_when_client_park_delay_is_0() {
    let mux = Mux::start(config("client_park_delay = 0", "")).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    one(&c, "SELECT 1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(parked(&mux), 0);
    assert_eq!(one(&c, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_clients_are_killed_and_shut_down_with_a_reason() {
    let mut mux = Mux::start(custom_config(
        "auth_type = \"trust\"\nadmin_users = [\"app\"]\nclient_park_delay = 0.2",
        "",
    ))
    .await;
    let mut socks = Vec::new();
    for _ in 0..3 {
        let (s, _) = raw::login_trust(mux.port(), &[("user", "app"), ("database", "appdb")]).await;
        socks.push(s);
    }
    eventually(5, "3 clients parked", || parked(&mux) == 3).await;
    // The first client logged in has the smallest id.
    let victim = mux.running.shared.clients.all()[0].id;
    {
        let (admin, _h) = connect_ok(mux.port(), "app", "", "pgbouncer").await;
        admin
            .simple_query(&format!("KILL_CLIENT {victim}"))
            .await
            .unwrap();
    }
    let msgs = read_to_close(&mut socks[0]).await;
    let (code, msg, sev) = error_of(&msgs).expect("an ErrorResponse");
    assert_eq!((code.as_str(), sev.as_str()), ("57P01", "FATAL"), "{msg}");
    assert!(msg.contains("administrator command"), "{msg}");
    eventually(5, "the admin client and the victim gone", || {
        mux.clients() == 2
    })
    .await;
    assert_eq!(parked(&mux), 2);
    // Shutdown: the parked clients left after shutdown_timeout are told why.
    mux.running.drain(Some(Duration::from_millis(300))).await;
    for s in &mut socks[1..] {
        let msgs = read_to_close(s).await;
        let (code, msg, _) = error_of(&msgs).expect("an ErrorResponse");
        assert_eq!(code, "57P01", "{msg}");
        assert!(msg.contains("shutting down"), "{msg}");
    }
    assert_eq!(mux.clients(), 0);
}
