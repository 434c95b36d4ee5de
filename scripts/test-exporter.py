#!/usr/bin/env python3
"""A PgBouncer exporter against PgBouncer and pgmux, side by side.

Starts a throwaway Postgres, PgBouncer (Debian's /usr/sbin/pgbouncer, or PGBOUNCER_BIN) and pgmux
(PGMUX_BIN, default target/release/pgmux) in front of it with the same users and database, runs
the same pgbench -S traffic through both, then runs spreaker's prometheus-pgbouncer-exporter
(PyPI: prometheus-pgbouncer-exporter) against each admin console, one exporter process each, and
scrapes both. Fails when:

  - an exporter logged an error, or its pgbouncer_up is not 1 (it reads SHOW STATS, POOLS,
    DATABASES and CONFIG; a failed query, an empty result, a missing label column or a
    non-integer max_client_conn / max_user_connections all give up 0);
  - a metric the exporter produces for PgBouncer (name and label keys) is missing for pgmux,
    apart from the differences PgBouncer itself has between the PgBouncer version run here and
    the one pgmux's SHOW VERSION claims (EXPECTED_MISSING below).

The exporter is installed into a venv under EXPORTER_VENV (default
~/.cache/pgmux-test-exporter/venv) when missing: its pinned psycopg2 needs a compiler, so it
goes in with --no-deps beside psycopg2-binary and the versions it was written against.

Run as root (initdb, postgres and pgbouncer then run as the `postgres` user) or as a user that
may run them. Ports: free ones, or PORT_BASE .. PORT_BASE+4 when set.

    PGMUX_BIN=target/release/pgmux python3 scripts/test-exporter.py
    PGBOUNCER_BIN=/path/to/pgbouncer-1.24.1 python3 scripts/test-exporter.py   # another PgBouncer
"""

import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PGMUX_BIN = os.path.abspath(os.environ.get("PGMUX_BIN", os.path.join(REPO, "target/release/pgmux")))
PGBOUNCER_BIN = os.environ.get("PGBOUNCER_BIN", "/usr/sbin/pgbouncer")
CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
VENV = os.environ.get("EXPORTER_VENV", os.path.join(CACHE, "pgmux-test-exporter", "venv"))
EXPORTER_PKGS = ["prometheus-pgbouncer-exporter==2.1.2"]
EXPORTER_DEPS = ["psycopg2-binary>=2.9,<3", "prometheus_client==0.8.0",
                 "python-json-logger==0.1.11", "PyYAML>=5.4.1"]
TRAFFIC_SECS = int(os.environ.get("TRAFFIC_SECS", "3"))
DEADLINE = time.monotonic() + 55

# Metrics the exporter produces for an older PgBouncer but not for the version pgmux claims,
# because PgBouncer itself changed the column the exporter reads:
# (metric, the PgBouncer version from which it is gone, why).
EXPECTED_MISSING = [
    ("pgbouncer_databases_database_reserve_pool_size", (1, 24),
     "SHOW DATABASES reserve_pool was renamed reserve_pool_size in PgBouncer 1.24.0 "
     "(pgbouncer/pgbouncer#1232); the exporter reads only reserve_pool"),
]

AS_ROOT = os.geteuid() == 0
PG_USER = "postgres" if AS_ROOT else pwd.getpwuid(os.geteuid()).pw_name


def log(msg):
    print(f"[test-exporter] {msg}", flush=True)


def as_pg():
    """Popen arguments that run a command as the postgres user (when we are root)."""
    if not AS_ROOT:
        return {}
    pw = pwd.getpwnam(PG_USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def free_ports(n):
    base = os.environ.get("PORT_BASE")
    if base:
        return [int(base) + i for i in range(n)]
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_port(port, what, proc=None, logfile=None, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    tail = ""
    if logfile and os.path.exists(logfile):
        with open(logfile, errors="replace") as f:
            tail = "".join(f.readlines()[-20:])
    raise SystemExit(f"{what} does not listen on 127.0.0.1:{port}\n{tail}")


def pg_bindir():
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        raise SystemExit("no PostgreSQL found (initdb); apt-get install postgresql")
    return dirs[-1]


def ensure_exporter():
    py = os.path.join(VENV, "bin", "python")
    probe = "import prometheus_pgbouncer_exporter.cli, psycopg2, prometheus_client, pythonjsonlogger, yaml"
    if os.path.exists(py) and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
        return py
    log(f"installing the exporter into {VENV}")
    os.makedirs(os.path.dirname(VENV), exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["--no-deps"] + EXPORTER_PKGS, EXPORTER_DEPS):
        # pip warns that psycopg2==2.8.5 (the exporter's pin) is missing: psycopg2-binary stands in.
        r = subprocess.run(pip + args, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"pip install {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    subprocess.run([py, "-c", probe], check=True)
    return py


def version_of(text):
    m = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(x or 0) for x in m.groups()) if m else None


def show_version(py, port):
    code = ("import psycopg2,sys; c=psycopg2.connect(host='127.0.0.1',port=int(sys.argv[1]),"
            "user='stats',dbname='pgbouncer'); c.autocommit=True; k=c.cursor(); "
            "k.execute('SHOW VERSION'); print(k.fetchone()[0])")
    r = subprocess.run([py, "-c", code, str(port)], capture_output=True, text=True, timeout=10)
    return r.stdout.strip() if r.returncode == 0 else f"(SHOW VERSION failed: {r.stderr.strip()})"


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Prometheus text format -> [(name, {label: value}, value)]."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            raise ValueError(f"unparsable exposition line: {line!r}")
        labels, rest = {}, m.group(2) or ""
        pos = 0
        while pos < len(rest):
            lm = LABEL.match(rest, pos)
            if not lm:
                raise ValueError(f"unparsable labels: {line!r}")
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def scrape(port, proc, logfile):
    end = time.monotonic() + 10
    last = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                return r.read().decode()
        except OSError as e:
            last = e
            time.sleep(0.2)
    with open(logfile, errors="replace") as f:
        tail = f.read()[-3000:]
    raise SystemExit(f"exporter on :{port} could not be scraped ({last}); its log:\n{tail}")


_read_lines = {}  # log file -> lines already checked (each phase reports only its own errors)


def new_lines(path):
    with open(path, errors="replace") as f:
        lines = f.readlines()
    seen = _read_lines.get(path, 0)
    _read_lines[path] = len(lines)
    return lines[seen:]


def exporter_errors(logfile):
    errs = []
    for line in new_lines(logfile):
        try:
            rec = json.loads(line.rstrip().rstrip("`"))
        except ValueError:
            if re.search(r"error|exception|traceback", line, re.I):
                errs.append(line.rstrip())
            continue
        if rec.get("levelname") in ("ERROR", "CRITICAL"):
            errs.append(line.rstrip())
    return errs


def check(phase, scraped, exporters, expected):
    """Failures of one scrape of both exporters (phase: when it was taken)."""
    failures = []
    for name, (eport, p, elog) in exporters.items():
        errs = exporter_errors(elog)
        errs += [l.rstrip() for l in new_lines(elog + ".stderr")
                 if re.search(r"error|exception|traceback", l, re.I)]
        if errs:
            failures.append(f"[{phase}] exporter against {name} logged errors:\n    " + "\n    ".join(errs))
        up = [v for n, _, v in scraped[name] if n == "pgbouncer_up"]
        if up != [1.0]:
            failures.append(f"[{phase}] exporter against {name}: pgbouncer_up = {up} (want [1.0]; "
                            "0 when a query failed or SHOW STATS / POOLS / DATABASES / CONFIG returned no rows)")

    def shapes(samples):
        return {(n, tuple(sorted(l))) for n, l, _ in samples if n.startswith("pgbouncer_")}

    theirs, ours = shapes(scraped["pgbouncer"]), shapes(scraped["pgmux"])
    missing = sorted(s for s in theirs - ours if s[0] not in expected)
    excused = sorted(s for s in theirs - ours if s[0] in expected)
    extra = sorted(ours - theirs)
    log(f"[{phase}] metrics (name, label keys): PgBouncer {len(theirs)}, pgmux {len(ours)}")
    for n, keys in excused:
        log(f"  expected missing for pgmux ({n}, {list(keys)}): {expected[n]}")
    for n, keys in extra:
        log(f"  pgmux only: {n} {list(keys)}")
    if missing:
        failures.append(f"[{phase}] metrics the exporter produces for PgBouncer but not for pgmux:\n" +
                        "\n".join(f"  - {n} {{{', '.join(keys)}}}" for n, keys in missing))
    if failures:
        for name in ("pgbouncer", "pgmux"):
            failures.append(f"[{phase}] exporter output for {name} (pgbouncer_*):\n" + "\n".join(
                f"    {n}{{{', '.join(f'{k}={v!r}' for k, v in sorted(l.items()))}}} {v:g}"
                for n, l, v in sorted(scraped[name], key=lambda x: (x[0], sorted(x[1].items())))
                if n.startswith("pgbouncer_")))
    return failures


def main():
    if not os.access(PGMUX_BIN, os.X_OK):
        raise SystemExit(f"pgmux binary not found: {PGMUX_BIN} (set PGMUX_BIN)")
    if not os.access(PGBOUNCER_BIN, os.X_OK):
        raise SystemExit(f"PgBouncer not found: {PGBOUNCER_BIN} (apt-get install pgbouncer, or set PGBOUNCER_BIN)")
    for tool in ("pgbench",):
        if not shutil.which(tool):
            raise SystemExit(f"missing {tool} (apt-get install postgresql-client)")
    py = ensure_exporter()
    bindir = pg_bindir()
    pg_port, pgb_port, mux_port, exp_pgb_port, exp_mux_port = free_ports(5)

    tmp = tempfile.mkdtemp(prefix="pgmux-exporter-")
    os.chmod(tmp, 0o755)
    procs = []  # (name, Popen), stopped in reverse order
    pg_started = False
    pgdata = os.path.join(tmp, "pgdata")
    try:
        # ---- Postgres ----
        pgdir = os.path.join(tmp, "pg")
        pgbdir = os.path.join(tmp, "pgbouncer")
        for d in (pgdir, pgbdir):
            os.mkdir(d)
            if AS_ROOT:
                shutil.chown(d, PG_USER, PG_USER)
        if AS_ROOT:
            os.mkdir(pgdata, 0o700)
            shutil.chown(pgdata, PG_USER, PG_USER)
        subprocess.run([f"{bindir}/initdb", "-D", pgdata, "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL, timeout=60, **as_pg())
        pglog = os.path.join(pgdir, "postgres.log")
        with open(pglog, "w") as f:
            if AS_ROOT:
                shutil.chown(pglog, PG_USER, PG_USER)
            pg = subprocess.Popen(
                [f"{bindir}/postgres", "-D", pgdata, "-p", str(pg_port), "-k", pgdir,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"],
                stdout=f, stderr=subprocess.STDOUT, **as_pg())
        procs.append(("postgres", pg))
        pg_started = True
        wait_port(pg_port, "postgres", pg, pglog)
        psql = ["psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres", "-X", "-q",
                "-v", "ON_ERROR_STOP=1"]
        for _ in range(50):  # accepting TCP before it accepts logins
            if subprocess.run(psql + ["-c", "select 1"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(psql + ["-c", "create user app", "-c", "create database appdb owner app"],
                       check=True, timeout=30)
        subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "app", "-i", "-s", "1",
                        "-q", "appdb"], check=True, capture_output=True, timeout=60)

        # ---- PgBouncer ----
        userlist = os.path.join(pgbdir, "userlist.txt")
        with open(userlist, "w") as f:
            f.write('"app" ""\n"admin" ""\n"stats" ""\n')
        ini = os.path.join(pgbdir, "pgbouncer.ini")
        pgblog = os.path.join(pgbdir, "pgbouncer.log")
        with open(ini, "w") as f:
            f.write(f"""[databases]
appdb = host=127.0.0.1 port={pg_port} dbname=appdb
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {pgb_port}
unix_socket_dir =
auth_type = trust
auth_file = {userlist}
admin_users = admin
stats_users = stats
pool_mode = transaction
default_pool_size = 5
max_client_conn = 100
logfile = {pgblog}
""")
        if AS_ROOT:
            for p in (userlist, ini):
                shutil.chown(p, PG_USER, PG_USER)
        pgb = subprocess.Popen([PGBOUNCER_BIN, ini], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, **as_pg())
        procs.append(("pgbouncer", pgb))

        # ---- pgmux ----
        muxdir = os.path.join(tmp, "pgmux")
        os.mkdir(muxdir)
        toml = os.path.join(muxdir, "pgmux.toml")
        muxlog = os.path.join(muxdir, "pgmux.log")
        with open(toml, "w") as f:
            f.write(f"""[general]
listen_addr = "127.0.0.1"
listen_port = {mux_port}
pool_mode = "transaction"
default_pool_size = 5
max_client_conn = 100
auth_type = "trust"
admin_users = ["admin"]
stats_users = ["stats"]
shutdown_timeout = 1
[databases.appdb]
host = "127.0.0.1"
port = {pg_port}
[users.app]
[users.admin]
[users.stats]
""")
        with open(muxlog, "w") as f:
            mux = subprocess.Popen([PGMUX_BIN, "--config", toml], stdout=f, stderr=subprocess.STDOUT)
        procs.append(("pgmux", mux))
        wait_port(pgb_port, "pgbouncer", pgb, pgblog)
        wait_port(mux_port, "pgmux", mux, muxlog)

        # ---- one exporter per console ----
        exporters = {}
        for name, port, eport in (("pgbouncer", pgb_port, exp_pgb_port), ("pgmux", mux_port, exp_mux_port)):
            d = os.path.join(tmp, f"exporter-{name}")
            os.mkdir(d)
            cfg = os.path.join(d, "config.yml")
            elog = os.path.join(d, "exporter.log")
            with open(cfg, "w") as f:
                f.write(f"""exporter_host: 127.0.0.1
exporter_port: {eport}
pgbouncers:
  - dsn: postgresql://stats:@127.0.0.1:{port}/pgbouncer
    connect_timeout: 5
""")
            with open(elog + ".stderr", "w") as err:
                p = subprocess.Popen([py, "-m", "prometheus_pgbouncer_exporter.cli", "--config", cfg,
                                      "--log-file", elog, "--log-level", "INFO"],
                                     stdout=subprocess.DEVNULL, stderr=err)
            procs.append((f"exporter-{name}", p))
            exporters[name] = (eport, p, elog)

        pgb_version = show_version(py, pgb_port)
        mux_version = show_version(py, mux_port)
        ref, claimed = version_of(pgb_version), version_of(mux_version)
        log(f"PgBouncer SHOW VERSION: {pgb_version!r}; pgmux SHOW VERSION: {mux_version!r}")
        expected = {}
        if ref and claimed:
            for metric, since, why in EXPECTED_MISSING:
                if ref < since <= claimed:
                    expected[metric] = why

        failures = []
        phases = [("idle", 0)] if not os.environ.get("SKIP_IDLE_SCRAPE") else []
        phases.append(("after traffic", TRAFFIC_SECS))
        for phase, secs in phases:
            if secs:
                # ---- the same traffic through both ----
                log(f"pgbench -S for {secs} s through PgBouncer (:{pgb_port}) and pgmux (:{mux_port})")
                bench = [subprocess.Popen(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-S",
                                           "-c", "4", "-j", "2", "-T", str(secs), "appdb"],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                         for port in (pgb_port, mux_port)]
                for name, b in zip(("PgBouncer", "pgmux"), bench):
                    out, _ = b.communicate(timeout=secs + 30)
                    if b.returncode != 0:
                        raise SystemExit(f"pgbench through {name} failed:\n{out}")
                    tps = re.search(r"tps = ([\d.]+)", out)
                    log(f"  {name}: {tps.group(1) if tps else '?'} tps")
            scraped = {name: parse_metrics(scrape(eport, p, elog))
                       for name, (eport, p, elog) in exporters.items()}
            failures += check(phase, scraped, exporters, expected)

        if time.monotonic() > DEADLINE:
            log("warning: took longer than 55 s")
        if failures:
            print("\nFAIL:\n" + "\n".join(failures), flush=True)
            return 1
        log("OK: the exporter reads pgmux as it reads PgBouncer")
        return 0
    finally:
        live = [(name, p) for name, p in reversed(procs) if p.poll() is None]
        for name, p in live:
            if name == "postgres":
                p.send_signal(signal.SIGQUIT)  # immediate shutdown
            elif name == "pgbouncer":
                p.send_signal(signal.SIGINT)  # safe shutdown: exits once its servers are released
            elif name.startswith("exporter"):
                p.kill()  # stateless; on SIGTERM it would finish a 4 s sleep first
            else:
                p.terminate()
        for name, p in live:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.environ.get("KEEP_TMP"):
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
