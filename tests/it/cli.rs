//! The `pgmux` binary: --version, check-config, and serving with --config.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::support::process::Proc;
use crate::support::{free_port, pg, psql, run};

fn pgmux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgmux"))
}

#[test]
fn version_flag() {
    let (ok, out, _) = run(pgmux().arg("--version"));
    assert!(ok);
    assert!(out.starts_with("pgmux "), "{out}");
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgmux.toml");
    let (ok, out, err) = run(pgmux().args(["check-config", example]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn check_config_lists_every_problem_with_its_key() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[general]\nlisten_prot = 1\npool_mode = \"sesion\"\n[databases.appdb]\nhost = \"h\"\npool_szie = 3\n[users.app]\npassword = \"\"\n"
    )
    .unwrap();
    let (ok, out, err) = run(pgmux().arg("check-config").arg(f.path()));
    assert!(!ok, "must exit non-zero:\n{out}{err}");
    for key in [
        "general.listen_prot",
        "general.pool_mode",
        "databases.appdb.pool_szie",
        "users.app.password",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    let (ok, _, err) = run(pgmux().args(["check-config", "/nonexistent/pgmux.toml"]));
    assert!(!ok);
    assert!(err.contains("/nonexistent/pgmux.toml"), "{err}");
}

#[test]
fn serves_with_config_and_stops_on_sigterm() {
    let pg = pg();
    let port = free_port();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[general]\nlisten_port = {port}\nauth_type = \"scram-sha-256\"\n\
         [databases.appdb]\nport = {}\n[users.app]\npassword = \"app_pw\"\n",
        pg.port
    )
    .unwrap();
    let mut p = Proc::start(f.path());
    let mut ok = false;
    for _ in 0..100 {
        let (psql_ok, out, _) = run(psql(port, "app")
            .args(["-qAtX", "-c", "SELECT 40 + 2", "appdb"])
            .env("PGPASSWORD", "app_pw"));
        if psql_ok && out.trim() == "42" {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The logout line follows psql's exit: wait for it before stopping pgmux.
    p.wait_log("client logout", 5);
    p.signal("-TERM");
    let exited_ok = p.wait_exit(10);
    let log = p.log();
    assert!(ok, "psql through the pgmux binary failed; log:\n{log}");
    assert!(exited_ok, "exit after SIGTERM failed\n{log}");
    // One info line per login/logout and server connect, with ids, database and user.
    for needle in [
        "client login",
        "client logout",
        "server connect",
        "db=appdb",
        "user=app",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    // A client's own lines name it, though it holds no span between them.
    for line in ["client login", "client logout"] {
        let l = log.lines().find(|l| l.contains(line)).unwrap();
        for needle in ["client{id=", "peer=127.0.0.1:", "db=appdb", "user=app"] {
            assert!(l.contains(needle), "{line:?} line lacks {needle:?}: {l}");
        }
    }
}
