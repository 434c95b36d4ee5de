//! Protocol-level prepared statements in transaction mode: clients' named statements follow
//! them across servers, byte for byte as on a direct connection.

use crate::support::config::db_entry;
use crate::support::{config, pg, Mux};

/// tokio-postgres names its statements s0, s1, ... on every connection and closes them when
/// dropped: 20 clients on a pool of 2 collide on those names unless pgmux maps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_prepare_the_same_names_on_shared_servers() {
    let _pg = pg();
    let extra = db_entry("psdb", "appdb", "pool_size = 2");
    let mux = Mux::start(config("", &extra)).await;
    let mut tasks = Vec::new();
    for c in 0..20i32 {
        let client = mux.connect_as("app", "app_pw", "psdb").await;
        tasks.push(tokio::spawn(async move {
            let a = client.prepare("SELECT $1::int + 1").await.unwrap();
            let b = client
                .prepare(&format!("SELECT $1::int * {}", c + 2))
                .await
                .unwrap();
            for i in 0..50i32 {
                let x: i32 = client.query_one(&a, &[&i]).await.unwrap().get(0);
                assert_eq!(x, i + 1);
                let y: i32 = client.query_one(&b, &[&i]).await.unwrap().get(0);
                assert_eq!(y, i * (c + 2));
                // A statement prepared and dropped (Closed) each time.
                let z: String = client
                    .query_one("SELECT $1::text || 'z'", &[&format!("{c}")])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(z, format!("{c}z"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pool = mux.pool("psdb", "app").unwrap();
    let s = &pool.stats;
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "client parses {} server parses {} hits {} evictions {} binds {}",
        s.ps_client_parses.load(Relaxed),
        s.ps_server_parses.load(Relaxed),
        s.ps_hits.load(Relaxed),
        s.ps_evictions.load(Relaxed),
        s.ps_binds.load(Relaxed)
    );
}
