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

/// A config for the shared test cluster on `port`, with `general` lines added.
fn config_file(general: &str, users: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[general]\nauth_type = \"scram-sha-256\"\n{general}\n\
         [databases.appdb]\nport = {}\n{users}",
        pg().port
    )
    .unwrap();
    f
}

/// `psql -h host -p port` as `user` running `SELECT 40 + 2`: whether it printed 42.
fn answers(host: &str, port: u16, user: &str, password: &str) -> bool {
    let (ok, out, _) = run(psql(port, user)
        .args(["-h", host, "-qAtX", "-c", "SELECT 40 + 2", "appdb"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "3"));
    ok && out.trim() == "42"
}

#[test]
fn passwd_prints_an_auth_file_line_that_logs_in() {
    use std::process::Stdio;
    let mut child = pgmux()
        .args(["passwd", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with("\"postgres\" \"SCRAM-SHA-256$4096:"),
        "{line}"
    );
    assert!(!line.contains("s3cret"), "{line}");
    let auth = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(auth.path(), &line).unwrap();
    let port = free_port();
    let f = config_file(
        &format!(
            "listen_port = {port}\nauth_file = \"{}\"",
            auth.path().display()
        ),
        "",
    );
    let _p = Proc::start(f.path());
    assert!(answers("127.0.0.1", port, "postgres", "s3cret pw"));
    assert!(!answers("127.0.0.1", port, "postgres", "s3cret"));
}

#[test]
fn config_path_from_pgmux_config_and_keys_from_the_environment() {
    let port = free_port();
    // The file's own port is taken (by this listener): the environment's wins.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let f = config_file(
        &format!("listen_port = {}", taken.local_addr().unwrap().port()),
        "[users.app]\npassword = \"app_pw\"\n",
    );
    let mut cmd = pgmux();
    cmd.env("PGMUX_CONFIG", f.path())
        .env("PGMUX_GENERAL_LISTEN_PORT", port.to_string())
        .env("PGMUX_GENERAL_DEFAULT_POOL_SIZE", "3");
    let p = Proc::spawn(cmd);
    assert!(answers("127.0.0.1", port, "app", "app_pw"));
    assert!(
        p.log().contains("general.default_pool_size"),
        "the log names the keys set by the environment:\n{}",
        p.log()
    );
    // check-config takes the same file and the same variables.
    let (ok, out, err) = run(pgmux().arg("check-config").env("PGMUX_CONFIG", f.path()));
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(pgmux()
        .arg("check-config")
        .env("PGMUX_CONFIG", f.path())
        .env("PGMUX_GENERAL_DEFAULT_POOL_SIZE", "many"));
    assert!(!ok);
    assert!(err.contains("general.default_pool_size"), "{err}");
    let (ok, _, err) = run(pgmux().env_remove("PGMUX_CONFIG"));
    assert!(!ok);
    assert!(err.contains("PGMUX_CONFIG"), "{err}");
}

#[test]
fn listen_addr_takes_a_list_and_star_means_ipv4_and_ipv6() {
    let users = "[users.app]\npassword = \"app_pw\"\n";
    let port = free_port();
    let f = config_file(&format!("listen_addr = \"*\"\nlisten_port = {port}"), users);
    let p = Proc::start(f.path());
    for host in ["127.0.0.1", "127.0.0.2", "::1"] {
        assert!(
            answers(host, port, "app", "app_pw"),
            "listen_addr = \"*\" does not answer on {host}:\n{}",
            p.log()
        );
    }
    drop(p);
    let port = free_port();
    let f = config_file(
        &format!("listen_addr = \"127.0.0.2, ::1\"\nlisten_port = {port}"),
        users,
    );
    let p = Proc::start(f.path());
    assert!(answers("127.0.0.2", port, "app", "app_pw"), "{}", p.log());
    assert!(answers("::1", port, "app", "app_pw"), "{}", p.log());
    assert!(!answers("127.0.0.1", port, "app", "app_pw"));
    // A bad entry is named by check-config.
    let f = config_file("listen_addr = \"127.0.0.1, not an address\"", users);
    let (ok, _, err) = run(pgmux().arg("check-config").arg(f.path()));
    assert!(!ok);
    assert!(err.contains("general.listen_addr"), "{err}");
}

/// PgBouncer's signals: SIGUSR1 pauses, SIGUSR2 resumes, SIGINT waits for servers to be
/// released (a second one stops at once), SIGQUIT stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_have_pgbouncer_meanings() {
    use crate::support::client::connect_ok;
    let users = "[users.app]\npassword = \"app_pw\"\n";
    let port = free_port();
    let f = config_file(
        &format!("listen_port = {port}\nshutdown_timeout = 30"),
        users,
    );
    let mut p = Proc::start(f.path());
    let (c, _h) = connect_ok(port, "app", "app_pw", "appdb").await;
    c.simple_query("SELECT 1").await.unwrap();

    // SIGUSR1: PAUSE. A query waits until SIGUSR2.
    p.signal("-USR1");
    p.wait_log("SIGUSR1", 5);
    let q = tokio::spawn(async move {
        c.simple_query("SELECT 2").await.unwrap();
        c
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!q.is_finished(), "a query ran while paused");
    assert!(!p.exited(), "SIGUSR1 ended pgmux:\n{}", p.log());
    p.signal("-USR2");
    let c = tokio::time::timeout(Duration::from_secs(5), q)
        .await
        .expect("the query resumes after SIGUSR2")
        .unwrap();

    // SIGINT: safe shutdown. A client inside a transaction keeps its server until it ends.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SELECT 3").await.unwrap();
    p.signal("-INT");
    p.wait_log("SIGINT", 5);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !p.exited(),
        "SIGINT stopped pgmux under a transaction:\n{}",
        p.log()
    );
    c.simple_query("COMMIT").await.unwrap();
    assert!(p.wait_exit(10), "exit after SIGINT failed:\n{}", p.log());

    // A second SIGINT stops at once; so does SIGQUIT.
    for second in ["-INT", "-QUIT"] {
        let mut p = Proc::start(f.path());
        let (c, _h) = connect_ok(port, "app", "app_pw", "appdb").await;
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
        if second == "-INT" {
            p.signal("-INT");
            p.wait_log("SIGINT: safe shutdown", 5);
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!p.exited());
        }
        p.signal(second);
        assert!(
            p.wait_exit(3),
            "{second} did not stop pgmux at once:\n{}",
            p.log()
        );
    }
}

/// With `$NOTIFY_SOCKET` (systemd's Type=notify), pgmux says when it is ready, reloading and
/// stopping.
#[test]
fn tells_systemd_when_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let port = free_port();
    let f = config_file(
        &format!("listen_port = {port}"),
        "[users.app]\npassword = \"app_pw\"\n",
    );
    let mut cmd = pgmux();
    cmd.arg("-c").arg(f.path()).env("NOTIFY_SOCKET", &sock_path);
    let mut p = Proc::spawn(cmd);
    let ready = next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}", p.pid())), "{ready}");
    p.signal("-HUP");
    assert_eq!(next(), "RELOADING=1");
    assert_eq!(next(), "READY=1");
    p.signal("-TERM");
    assert_eq!(next(), "STOPPING=1");
    assert!(p.wait_exit(10));
}

/// A PgBouncer setup moved in one command: its ini (with an %include) and userlist become a
/// pgmux config that serves the same clients.
#[test]
fn import_moves_a_pgbouncer_config_in_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("databases.ini"),
        format!(
            "[databases]\nappdb = host=127.0.0.1 port={} dbname=appdb pool_size=3 reserve_pool=1\n",
            pg().port
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pgbouncer.ini"),
        format!(
            ";; a PgBouncer config as it ran\n%include databases.ini\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = scram-sha-256\n\
             auth_file = userlist.txt\npool_mode = transaction\nadmin_users = app\n\
             logfile = /var/log/pgbouncer/pgbouncer.log\npidfile = /run/pgbouncer.pid\n\
             query_timeout = 30\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"app\" \"app_pw\"\n").unwrap();
    let (ok, toml, notes) = run(pgmux().arg("import").arg(dir.path().join("pgbouncer.ini")));
    assert!(ok, "{notes}");
    for line in [
        "pgbouncer.logfile: ignored",
        "pgbouncer.pidfile: ignored",
        "pgbouncer.query_timeout: UNSUPPORTED",
    ] {
        assert!(notes.contains(line), "stderr lacks {line:?}:\n{notes}");
    }
    assert!(toml.contains("# Settings not carried over"), "{toml}");
    let conf = dir.path().join("pgmux.toml");
    std::fs::write(&conf, &toml).unwrap();
    let (ok, out, err) = run(pgmux().arg("check-config").arg(&conf));
    assert!(ok, "{out}{err}\n{toml}");
    let _p = Proc::start(&conf);
    assert!(answers("127.0.0.1", port, "app", "app_pw"));
    assert!(!answers("127.0.0.1", port, "app", "wrong"));
    // --auth-file: another userlist, checked.
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "\"app\" \"x\"\n\"bad\n").unwrap();
    let (ok, _, err) = run(pgmux()
        .arg("import")
        .arg(dir.path().join("pgbouncer.ini"))
        .arg("--auth-file")
        .arg(&other));
    assert!(!ok);
    assert!(err.contains("other.txt"), "{err}");
}

/// Debian's sample pgbouncer.ini (the pgbouncer package the tests install) imports into a
/// config that passes check-config.
#[test]
fn import_reads_debians_sample_config() {
    let sample = std::path::Path::new("/etc/pgbouncer/pgbouncer.ini");
    assert!(sample.exists(), "needs Debian's pgbouncer package");
    let (ok, toml, notes) = run(pgmux().arg("import").arg(sample));
    assert!(ok, "{notes}");
    assert!(
        notes.contains("pgbouncer.unix_socket_dir: ignored"),
        "{notes}"
    );
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &toml).unwrap();
    let (ok, out, err) = run(pgmux().arg("check-config").arg(f.path()));
    assert!(ok, "{out}{err}\n{toml}");
}
