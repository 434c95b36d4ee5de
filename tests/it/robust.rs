//! Defects a review of the whole tree found (issue 13), each with the test that failed before
//! its fix.

use crate::support::client::{one, tp_config, tp_connect};
use crate::support::{pg, ConfigBuilder, Mux, PrivatePg};

/// pgmux with trust logins for `postgres`, and entry `moving` on 127.0.0.1:`port`.
fn moving_config(port: u16) -> pgmux::config::Config {
    ConfigBuilder::new()
        .general("auth_type = \"trust\"")
        .database("moving", port, "dbname = \"postgres\"")
        .user("postgres", None)
        .build()
}

/// A reload that points a pool at another server: new clients are told that server's
/// parameters, and the parameter sync does not push the old server's values onto it (defect
/// 4: the pool kept the first server's parameters for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_to_another_server_forgets_the_old_servers_parameters() {
    let private = tokio::task::spawn_blocking(|| {
        let p = PrivatePg::start("robust-welcome");
        p.psql_super("postgres", "ALTER SYSTEM SET TimeZone = 'Asia/Tokyo'");
        p.psql_super("postgres", "SELECT pg_reload_conf()");
        p
    })
    .await
    .unwrap();
    let mux = Mux::start(moving_config(pg().port)).await;
    let cfg = tp_config(mux.port(), "postgres", "", "moving");
    let (a, _ha) = tp_connect(&cfg).await.unwrap();
    let before = one(&a, "SHOW TimeZone").await;
    assert_ne!(before, "Asia/Tokyo");
    drop(a);
    pgmux::reload::apply(&mux.running.shared, moving_config(private.port)).expect("reload");
    let (b, _hb) = tp_connect(&cfg).await.unwrap();
    assert_eq!(
        one(&b, "SELECT current_setting('port')").await,
        private.port.to_string()
    );
    assert_eq!(
        one(&b, "SHOW TimeZone").await,
        "Asia/Tokyo",
        "the old server's TimeZone was pushed onto the new one"
    );
    drop(private);
}
