//! The `pgmux` binary: --version, check-config, and serving with --config.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    let child = pgmux()
        .arg("-c")
        .arg(f.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(ok, "psql through the pgmux binary failed; log:\n{log}");
    assert!(
        out.status.success(),
        "exit after SIGTERM: {:?}\n{log}",
        out.status
    );
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
}
