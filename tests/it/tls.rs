//! TLS on both sides, with certificates the tests make themselves (rcgen): psql with
//! sslmode=require, verify-full and a client certificate against pgmux; bytes sent after
//! SSLRequest before the answer refused; pgmux against a Postgres with `ssl = on` and a
//! hostssl-only pg_hba.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::support::{config, custom_config, database_section, psql, run, Mux, PrivatePg};

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate for `app`,
/// as PEM files in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pgmux test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write("ca.pem", ca_cert.pem());
        for (name, cn, sans) in [
            (
                "server",
                "localhost",
                vec!["localhost".to_string(), "127.0.0.1".into()],
            ),
            ("client", "app", vec![]),
        ] {
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `[general]` lines for client TLS in `mode`.
    fn client_tls(&self, mode: &str) -> String {
        format!(
            "client_tls_sslmode = \"{mode}\"\nclient_tls_cert_file = \"{}\"\n\
             client_tls_key_file = \"{}\"\nclient_tls_ca_file = \"{}\"\n",
            self.p("server.pem"),
            self.p("server.key"),
            self.p("ca.pem")
        )
    }
}

/// psql through pgmux as app with a connection string's extra `opts`; (ok, stdout, stderr).
fn psql_tls(port: u16, opts: &str, sql: &str) -> (bool, String, String) {
    run(std::process::Command::new("psql")
        .arg(format!(
            "host=localhost hostaddr=127.0.0.1 port={port} user=app dbname=appdb {opts}"
        ))
        .args(["-qAtX", "-c", sql])
        .env("PGPASSWORD", "app_pw"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_sslmode_require_and_verify_full() {
    let certs = Certs::new();
    let mux = Mux::start(config(&certs.client_tls("require"), "")).await;
    let port = mux.port();
    let ca = certs.p("ca.pem");
    let out = tokio::task::spawn_blocking(move || {
        [
            psql_tls(port, "sslmode=require", "SELECT 1"),
            psql_tls(
                port,
                &format!("sslmode=verify-full sslrootcert={ca}"),
                "SELECT 2",
            ),
            psql_tls(port, "sslmode=disable", "SELECT 3"),
        ]
    })
    .await
    .unwrap();
    assert!(out[0].0 && out[0].1.trim() == "1", "require: {:?}", out[0]);
    assert!(
        out[1].0 && out[1].1.trim() == "2",
        "verify-full: {:?}",
        out[1]
    );
    assert!(!out[2].0, "plaintext got in: {:?}", out[2]);
    assert!(out[2].2.contains("SSL required"), "{}", out[2].2);
}

/// A TLS client idle past client_park_delay is asked to park, cannot (parking moves only a
/// plain socket), and goes on in its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_idle_past_client_park_delay_keeps_working() {
    let certs = Certs::new();
    let general = format!("{}client_park_delay = 0.2\n", certs.client_tls("require"));
    let mux = Mux::start(config(&general, "")).await;
    let port = mux.port();
    let out = tokio::task::spawn_blocking(move || {
        run(std::process::Command::new("psql")
            .arg(format!(
                "host=localhost hostaddr=127.0.0.1 port={port} user=app dbname=appdb sslmode=require"
            ))
            .args(["-qAtX", "-c", "SELECT 1", "-c", "\\! sleep 1.2", "-c", "SELECT 2"])
            .env("PGPASSWORD", "app_pw"))
    });
    // While psql sleeps its client is idle in its task, never parked.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let parked = mux
        .running
        .shared
        .clients
        .all()
        .iter()
        .filter(|c| c.parked())
        .count();
    let out = out.await.unwrap();
    assert!(out.0, "{out:?}");
    assert_eq!(
        out.1.split_whitespace().collect::<Vec<_>>(),
        ["1", "2"],
        "{out:?}"
    );
    assert_eq!(parked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_with_verify_ca() {
    let certs = Certs::new();
    let mux = Mux::start(config(&certs.client_tls("verify-ca"), "")).await;
    let port = mux.port();
    let (ca, cert, key) = (
        certs.p("ca.pem"),
        certs.p("client.pem"),
        certs.p("client.key"),
    );
    let out = tokio::task::spawn_blocking(move || {
        [
            psql_tls(
                port,
                &format!("sslmode=verify-full sslrootcert={ca} sslcert={cert} sslkey={key}"),
                "SELECT 1",
            ),
            // No client certificate: the handshake fails.
            psql_tls(
                port,
                "sslmode=require sslcert=/nonexistent sslkey=/nonexistent",
                "SELECT 2",
            ),
        ]
    })
    .await
    .unwrap();
    assert!(
        out[0].0 && out[0].1.trim() == "1",
        "with a client cert: {:?}",
        out[0]
    );
    assert!(!out[1].0, "without a client certificate: {:?}", out[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_sslrequest_before_the_answer_are_refused() {
    let certs = Certs::new();
    let mux = Mux::start(config(&certs.client_tls("prefer"), "")).await;
    let port = mux.port();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // SSLRequest and, in the same write, a StartupMessage an attacker would have pgmux
        // read as if it came through TLS.
        let mut bytes = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let body = b"\x00\x03\x00\x00user\x00app\x00database\x00appdb\x00\x00";
        bytes.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        bytes.extend_from_slice(body);
        s.write_all(&bytes).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(
            got.first() != Some(&b'S'),
            "pgmux answered 'S' after data that came with the SSLRequest"
        );
        assert_eq!(
            got.first(),
            Some(&b'E'),
            "expected an ErrorResponse: {got:?}"
        );
        assert!(String::from_utf8_lossy(&got).contains("before the encryption answer"));
    })
    .await
    .unwrap();
}

/// A private Postgres with `ssl = on` (the test certificates) accepting only hostssl; `tag`
/// names its directory, one per test (tests run at once).
fn tls_postgres(certs: &Certs, tag: &str) -> PrivatePg {
    let pg = PrivatePg::start(tag);
    let data = pg.data_dir();
    for (from, to) in [("server.pem", "server.crt"), ("server.key", "server.key")] {
        let dst = data.join(to);
        std::fs::copy(certs.path(from), &dst).unwrap();
        chown_postgres(&dst);
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.auto.conf"))
        .unwrap();
    writeln!(
        conf,
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
    )
    .unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    pg.restart();
    pg
}

/// Give a file to the `postgres` user, which runs the cluster when the tests run as root
/// (otherwise the cluster runs as us and the file is ours already).
/// `[databases.tlsdb]`: the TLS-only cluster's postgres database, as its superuser.
fn tlsdb_section(pg: &PrivatePg) -> String {
    database_section(
        "tlsdb",
        pg.port,
        "dbname = \"postgres\"\nuser = \"postgres\"\npassword = \"unused\"",
    )
}

fn chown_postgres(p: &Path) {
    if crate::support::cluster::is_root() {
        let ok = std::process::Command::new("chown")
            .args(["postgres", &p.display().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown postgres {}", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmux_to_a_hostssl_only_postgres() {
    let certs = Certs::new();
    let pg = tls_postgres(&certs, "tls");
    let db = tlsdb_section(&pg);
    for (mode, ok) in [
        (
            format!(
                "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{}\"",
                certs.p("ca.pem")
            ),
            true,
        ),
        ("server_tls_sslmode = \"require\"".to_string(), true),
        ("server_tls_sslmode = \"disable\"".to_string(), false),
    ] {
        let mux = Mux::start(config(&mode, &db)).await;
        let port = mux.port();
        let (good, out, err) = tokio::task::spawn_blocking(move || {
            run(psql(port, "app")
                .args([
                    "-qAtX",
                    "-c",
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    "tlsdb",
                ])
                .env("PGPASSWORD", "app_pw"))
        })
        .await
        .unwrap();
        if ok {
            assert!(good && out.trim() == "t", "{mode}: {out} {err}");
        } else {
            assert!(
                !good,
                "{mode}: plaintext reached a hostssl-only server: {out}"
            );
            assert!(
                err.contains("pg_hba.conf") || err.contains("SSL"),
                "{mode}: {err}"
            );
        }
    }
    // verify-full against a CA that did not sign the server's certificate: refused.
    let other = Certs::new();
    let mode = format!(
        "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{}\"",
        other.p("ca.pem")
    );
    let mux = Mux::start(config(&mode, &db)).await;
    let port = mux.port();
    let (good, _, err) = tokio::task::spawn_blocking(move || {
        run(psql(port, "app")
            .args(["-qAtX", "-c", "SELECT 1", "tlsdb"])
            .env("PGPASSWORD", "app_pw"))
    })
    .await
    .unwrap();
    assert!(!good, "an untrusted server certificate was accepted");
    assert!(err.contains("TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_cert_maps_the_certificate_cn_to_the_user() {
    let certs = Certs::new();
    let general = format!(
        "{}auth_type = \"cert\"\nauth_failure_delay = 0\n",
        certs.client_tls("verify-full")
    );
    let mux = Mux::start(crate::support::custom_config(&general, "")).await;
    let port = mux.port();
    let (ca, cert, key) = (
        certs.p("ca.pem"),
        certs.p("client.pem"),
        certs.p("client.key"),
    );
    let opts = format!("sslmode=verify-full sslrootcert={ca} sslcert={cert} sslkey={key}");
    let out = tokio::task::spawn_blocking(move || {
        let as_app = psql_tls(port, &opts, "SELECT current_user");
        // The certificate says "app": logging in as another user fails.
        let as_other = run(std::process::Command::new("psql")
            .arg(format!(
                "host=localhost hostaddr=127.0.0.1 port={port} user=other dbname=appdb {opts}"
            ))
            .args(["-qAtX", "-c", "SELECT 1"]));
        (as_app, as_other)
    })
    .await
    .unwrap();
    assert!(out.0 .0 && out.0 .1.trim() == "app", "{:?}", out.0);
    assert!(!out.1 .0, "{:?}", out.1);
    assert!(
        out.1 .2.contains("certificate authentication failed"),
        "{}",
        out.1 .2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_read_again_on_reload() {
    let (first, second) = (Certs::new(), Certs::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgmux.toml");
    let general = format!("{}admin_users = [\"app\"]\n", first.client_tls("require"));
    let mux = Mux::start(config(&general, "")).await;
    let port = mux.port();
    // The same config as a file, then with the second certificate.
    let file = |certs: &Certs| {
        format!(
            "[general]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\n{}\
             admin_users = [\"app\"]\n[databases.appdb]\nport = {}\n[users.app]\npassword = \"app_pw\"\n",
            certs.client_tls("require"),
            crate::support::pg().port
        )
    };
    std::fs::write(&path, file(&second)).unwrap();
    mux.running.set_config_path(path.clone());
    let verify = |certs: &Certs| {
        let opts = format!("sslmode=verify-full sslrootcert={}", certs.p("ca.pem"));
        move || psql_tls(port, &opts, "SELECT 1")
    };
    let before = tokio::task::spawn_blocking(verify(&first)).await.unwrap();
    assert!(before.0, "{before:?}");
    let ok = tokio::task::spawn_blocking(move || {
        psql_tls(port, "sslmode=require dbname=pgmux", "RELOAD")
    })
    .await
    .unwrap();
    assert!(ok.0, "RELOAD: {ok:?}");
    let old = tokio::task::spawn_blocking(verify(&first)).await.unwrap();
    let new = tokio::task::spawn_blocking(verify(&second)).await.unwrap();
    assert!(!old.0, "the old certificate is still served: {old:?}");
    assert!(new.0, "the new certificate is not served: {new:?}");
    // A reload whose key file is gone is refused, and the certificate in force stays.
    std::fs::write(&path, file(&second).replace("server.key", "missing.key")).unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        psql_tls(port, "sslmode=require dbname=pgmux", "RELOAD")
    })
    .await
    .unwrap();
    assert!(
        !refused.0 && refused.2.contains("client_tls_key_file"),
        "{refused:?}"
    );
    let still = tokio::task::spawn_blocking(verify(&second)).await.unwrap();
    assert!(still.0, "{still:?}");
}

/// Connections that have not logged in count against max_client_conn, and the limit is
/// checked before TLS: over it, an SSLRequest gets the 53300 error instead of a handshake
/// (issue 13, defect 8: a flood of connections got TLS handshakes and logins without bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_client_conn_an_sslrequest_gets_the_error_not_a_handshake() {
    let certs = Certs::new();
    let general = format!("{}max_client_conn = 1\n", certs.client_tls("prefer"));
    let mux = Mux::start(custom_config(&general, "")).await;
    let port = mux.port();
    tokio::task::spawn_blocking(move || {
        // One connection that has sent nothing yet takes the only place.
        let idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert_eq!(got.first(), Some(&b'E'), "not refused before TLS: {got:?}");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("53300") && text.contains("max_client_conn"),
            "{text}"
        );
        // A CancelRequest is still served (and answered by a close, as Postgres does).
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
        cancel.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        c.write_all(&cancel).unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert!(got.is_empty(), "a cancel got {got:?}");
        drop(idle);
    })
    .await
    .unwrap();
    // The place is free again: psql logs in over TLS.
    let mut ok = false;
    for _ in 0..50 {
        if psql_tls(port, "sslmode=require", "SELECT 1").0 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "no login once the place was free");
}

/// SHOW CLIENTS and SHOW SERVERS fill `tls` as PgBouncer does: protocol, cipher suite and key
/// exchange group of a TLS connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_describe_their_tls() {
    let certs = Certs::new();
    let pg = tls_postgres(&certs, "tls-show");
    let db = tlsdb_section(&pg);
    let general = format!(
        "{}server_tls_sslmode = \"require\"\nadmin_users = [\"app\"]\n",
        certs.client_tls("require")
    );
    let mux = Mux::start(config(&general, &db)).await;
    let port = mux.port();
    let (servers, clients) = tokio::task::spawn_blocking(move || {
        let q = psql_tls(port, "sslmode=require dbname=tlsdb", "SELECT 1");
        assert!(q.0, "{q:?}");
        let s = psql_tls(port, "sslmode=require dbname=pgbouncer", "SHOW SERVERS");
        let c = psql_tls(port, "sslmode=require dbname=pgbouncer", "SHOW CLIENTS");
        (s, c)
    })
    .await
    .unwrap();
    assert!(servers.0 && clients.0, "{servers:?} {clients:?}");
    for (what, out) in [("SHOW SERVERS", &servers.1), ("SHOW CLIENTS", &clients.1)] {
        assert!(
            out.lines()
                .any(|l| l.contains("|TLSv1.3/TLS13_") && l.contains("/ECDH=")),
            "{what} does not describe the TLS connection:\n{out}"
        );
    }
}

/// A pgmux process (its CPU time can be read apart from the tests') with trust
/// authentication, `[general]` lines `general`, and `[databases.tlsdb]` on `pg`, for user
/// app; its port, the process and the directory of its config.
fn trusting_mux_process(
    pg: &PrivatePg,
    general: &str,
) -> (u16, crate::support::process::Proc, tempfile::TempDir) {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgmux.toml");
    std::fs::write(
        &path,
        format!(
            "[general]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nauth_type = \"trust\"\n\
             {general}{}[users.app]\n",
            tlsdb_section(pg),
        ),
    )
    .unwrap();
    (port, crate::support::process::Proc::start(&path), dir)
}

/// The CPU time (user + system, in clock ticks) a process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// TLS on both sides carries bulk both ways and many clients at once, with rustls run inline
/// on the sockets: pgbench's COPY (`-i`) and 16 clients with the extended protocol, a 40 MB
/// answer, and a client that reads none of a large answer for 2 s, during which pgmux waits
/// without spinning and then delivers every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_many_clients_through_tls_on_both_sides() {
    let certs = Certs::new();
    let pg = tls_postgres(&certs, "tls-bulk");
    let general = format!(
        "default_pool_size = 4\nserver_tls_sslmode = \"require\"\n{}",
        certs.client_tls("require")
    );
    let (port, mux, _dir) = trusting_mux_process(&pg, &general);
    let pid = mux.pid();
    let pgbench = |args: &str| {
        run(std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec pgbench -h 127.0.0.1 -p {port} -U app {args} tlsdb"
            ))
            .env("PGSSLMODE", "require"))
    };
    tokio::task::block_in_place(|| {
        let init = pgbench("-i -s 2 -q");
        assert!(init.0, "pgbench -i through TLS: {}{}", init.1, init.2);
        crate::pgbench::clean_run(
            "pgbench -S -M extended, 16 clients, TLS both sides",
            pgbench("-S -M extended -c 16 -j 2 -T 3"),
        );

        let (ok, out, err) = psql_tls(
            port,
            "sslmode=require dbname=tlsdb",
            "select repeat('x', 2000) from generate_series(1, 20000)",
        );
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 20000, "rows of the 40 MB answer");
        assert!(lines.iter().all(|l| l.len() == 2000), "a row came cut");

        let before = cpu_ticks(pid);
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/drivers/tls_slow_reader.py"
        );
        let (ok, out, err) = run(std::process::Command::new("python3").args([
            script,
            &port.to_string(),
            "app",
            "tlsdb",
            "20000",
            "2000",
            "2",
        ]));
        let used = cpu_ticks(pid) - before;
        eprintln!("pgmux CPU around the slow reader: {used} ticks");
        assert!(ok, "slow reader: {out}{err}");
        assert_eq!(out.trim(), "20000 40000000", "what the slow reader got");
        // Spinning while the client does not read would take about 2 s of CPU (200 ticks).
        assert!(
            used < 80,
            "pgmux used {used} ticks of CPU around a 2 s pause"
        );
    });
}

/// A client is killed (KILL_CLIENT) while its COPY FROM STDIN waits for a lock, with TLS
/// toward the server: the COPY data pgmux still holds for the server (in rustls, which the
/// blocked server never reads) does not hold back the cancel, and the server's session ends
/// at once instead of when the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_mid_copy_gets_its_tls_server_cancelled() {
    use crate::support::raw::{self, Raw};
    let certs = Certs::new();
    let pg = tls_postgres(&certs, "tls-reap");
    pg.psql_super("postgres", "CREATE TABLE t (a text)");
    let general = "admin_users = [\"app\"]\nserver_tls_sslmode = \"require\"\n";
    let (port, mux, _dir) = trusting_mux_process(&pg, general);
    let (mut holder, _, _) = Raw::login(port, "tlsdb").await;
    holder
        .simple_query("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await;
    let (mut c, _, _) = Raw::login(port, "tlsdb").await;
    c.send(&raw::query("COPY t FROM STDIN")).await;
    // Far more than the socket buffers hold: the server waits for the lock and reads none.
    let row = raw::msg(b'd', &[b'x'; 65535]);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        for _ in 0..512 {
            c.send(&row).await;
        }
    })
    .await;
    let copying = || {
        pg.psql_super(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY t FROM STDIN%'",
        )
        .trim()
        .to_string()
    };
    assert_eq!(copying(), "1", "the COPY is not waiting for the lock");
    // Client ids go in login order: the holder is 1, the COPY's client 2.
    let (mut admin, _, _) = Raw::login(port, "pgbouncer").await;
    admin.simple_query("KILL_CLIENT 2").await;
    let gone = Instant::now();
    while copying() != "0" {
        assert!(
            gone.elapsed() < Duration::from_secs(3),
            "the COPY's session still runs {:?} after its client was killed:\n{}",
            gone.elapsed(),
            mux.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.simple_query("COMMIT").await;
    drop(c);
}
