//! pgbench through pgmux: 500 clients on a pool of 20, simple, extended and prepared protocol
//! (named statements mapped across servers), no failures.
//!
//! The duration per run is `PGMUX_PGBENCH_SECS` (default 10; the acceptance run uses 30).

use std::process::Command;

use crate::support::{config, database_section, pg, run, Mux};

fn secs() -> u64 {
    std::env::var("PGMUX_PGBENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

fn pgbench(port: u16, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("sh");
    // pgbench opens one socket per client: make sure the open-files limit allows it.
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n $(ulimit -Hn) 2>/dev/null; exec pgbench -h 127.0.0.1 -p {port} -U app {} benchdb",
            args.join(" ")
        ))
        .env("PGPASSWORD", "app_pw");
    run(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_500_clients_pool_20_simple_extended_prepared() {
    let pg = pg();
    pg.psql_super("postgres", "CREATE DATABASE benchdb OWNER app");
    let extra = database_section("benchdb", pg.port, "pool_size = 20");
    let mux = Mux::start(config("", &extra)).await;
    let port = mux.port();
    let t = secs().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let init = pgbench(port, &["-i", "-s", "2", "-q"]);
        assert!(init.0, "pgbench -i failed: {}", init.2);
        ["simple", "extended", "prepared"]
            .iter()
            .map(|mode| {
                let r = pgbench(
                    port,
                    &["-n", "-S", "-M", mode, "-c", "500", "-j", "2", "-T", &t],
                );
                (mode.to_string(), r)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (mode, (ok, stdout, stderr)) in out {
        assert!(ok, "pgbench -M {mode} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("number of failed transactions: 0 "),
            "pgbench -M {mode} had failures:\n{stdout}"
        );
        let processed: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.trim().parse().ok())
            .expect("pgbench summary");
        assert!(processed > 0, "no transactions:\n{stdout}");
        eprintln!("pgbench -M {mode}: {processed} transactions, 0 failed");
    }
    let counts = mux.counts("benchdb", "app").unwrap();
    assert!(counts.open <= 20, "pool grew past its size: {counts:?}");
}
