#!/usr/bin/env python3
"""Live test of deploy/monitoring/: the Grafana dashboard's queries and the Prometheus rules
against a real pgmux scraped by a real Prometheus.

    scripts/test-dashboard.py [PGMUX_BINARY]        (or PGMUX_BIN=...; default target/debug/pgmux)

Starts a throwaway Postgres (initdb into a temporary folder, as the postgres user when run as
root), pgmux in front of it with its metrics on, and Debian's /usr/bin/prometheus scraping
pgmux every second with deploy/monitoring/pgmux-rules.yml loaded. Runs pgbench through pgmux
(more clients than servers, so clients wait) and, beside it, a few failed logins, a client
that hits query_wait_timeout and a database whose server cannot be reached. Then:

- the load did what it should (transactions, waiting clients, each kind of error): the later
  checks are only worth something if the series have data;
- every template variable query (label_values) of grafana-dashboard.json returns values;
- every panel query, with the Grafana variables filled in (once with "All" = .*, once with the
  values the variables found), returns at least one series with data over the load, and so
  does every metric selector inside it (an `or` cannot hide a misspelt name);
- Prometheus loaded every rule of pgmux-rules.yml, evaluates each without error, each rule's
  query runs, every selector in it matches real series, and every recording rule produced
  series. Whether an alert fires is not checked (the promtool unit tests do that).

Every process started runs in its own process group and is stopped on the way out, failure or
not (and dies with this script if it is killed: PR_SET_PDEATHSIG). Ports: 21000-21099 on
127.0.0.1. Takes about 25 s. Prints "N passed, M failed" last; exits 1 on any failure.

--dashboard FILE / --rules FILE test other files (to see the test fail on a broken one).
"""

import argparse
import ctypes
import glob
import json
import math
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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "deploy" / "monitoring"
PORT_RANGE = range(21000, 21100)
PASSWORD = "pgmux-dash-test"
LOAD_SECONDS = 15
SCRAPE_INTERVAL_S = 1
# What Grafana puts in for $__rate_interval with a 1 s scrape is max(4 x scrape, interval +
# scrape) = 4 s; 10 s gives every rate() a few samples all through the load.
RATE_INTERVAL = "10s"


# ---- processes ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """In the child: own process group (start_new_session), killed if this script dies."""
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Procs:
    """Processes started by this test, each the leader of its own process group."""

    def __init__(self):
        self.procs = []  # (name, Popen, stop signal)

    def start(self, name, cmd, log, stop_signal=signal.SIGTERM, **kw):
        out = open(log, "wb")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=_die_with_parent, **kw)
        out.close()
        self.procs.append((name, p, stop_signal))
        return p

    def stop_all(self):
        for name, p, sig in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for name, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {p.pid}) did not stop: SIGKILL to its group", file=sys.stderr)
            # Whatever is left in the group (a postgres backend, a pgbench thread's process).
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {p.pid}) still there after SIGKILL", file=sys.stderr)
        self.procs.clear()


def free_ports(n):
    """n ports of 21000-21099 that nothing listens on now."""
    found = []
    for port in PORT_RANGE:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise SystemExit(f"fewer than {n} free ports in 21000-21099")


def wait_for(what, check, timeout, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    tail = ""
    if log and os.path.exists(log):
        tail = "\n" + "".join(open(log, errors="replace").readlines()[-20:])
    raise SystemExit(f"{what} did not come up within {timeout}s{tail}")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if os.path.exists(f"{d}/initdb"):
            return d
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    raise SystemExit("no initdb under /usr/lib/postgresql/*/bin: install postgresql")


# ---- Prometheus queries --------------------------------------------------------------------

class Prom:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path, params):
        url = f"{self.base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            _, body = http_get(url, timeout=10)
        except urllib.error.HTTPError as e:
            body = e.read()
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise QueryError(f"{doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr, t=None):
        params = {"query": expr}
        if t is not None:
            params["time"] = f"{t:.3f}"
        return self.api("/api/v1/query", params)["result"]

    def query_range(self, expr, start, end, step=1):
        return self.api("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}",
                                                 "end": f"{end:.3f}", "step": step})["result"]


class QueryError(Exception):
    pass


def finite_values(series):
    """The finite values of a query_range or query result."""
    out = []
    for s in series:
        points = s.get("values") or ([s["value"]] if "value" in s else [])
        for _, v in points:
            f = float(v)
            if math.isfinite(f):
                out.append(f)
    return out


# Metric selectors inside a PromQL expression: pgmux's names, recording rules' level:pgmux_...
# names and `up`, with their {matchers} if any.
SELECTOR = re.compile(r'(?<![\w:"])((?:[a-zA-Z_]+:)?pgmux_[a-zA-Z0-9_:]*|up)(?![\w(:])\s*(\{[^}]*\})?')


def selectors(expr):
    return sorted({name + (m or "") for name, m in SELECTOR.findall(expr)})


# ---- Grafana variables ---------------------------------------------------------------------

VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr, values):
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name}")
        return values[name]
    return VAR.sub(repl, expr)


def regex_of(vals):
    """A multi-value variable as Grafana formats it for =~: (a|b), metacharacters escaped."""
    esc = [re.sub(r"([.*+?^${}()|\[\]\\])", r"\\\\\1", v) for v in vals]
    return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


# ---- the test ------------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def ok(self, what, detail=""):
        self.passed += 1
        print(f"  ok    {what}" + (f": {detail}" if detail else ""))

    def fail(self, what, detail):
        self.failed.append(what)
        print(f"  FAIL  {what}: {detail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pgmux", nargs="?", default=os.environ.get("PGMUX_BIN", str(ROOT / "target/debug/pgmux")))
    ap.add_argument("--dashboard", default=str(MON / "grafana-dashboard.json"))
    ap.add_argument("--rules", default=str(MON / "pgmux-rules.yml"))
    ap.add_argument("--prometheus", default=os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args()

    pgmux = os.path.abspath(args.pgmux)
    if not os.access(pgmux, os.X_OK):
        raise SystemExit(f"no pgmux binary at {pgmux} (give its path, or set PGMUX_BIN)")
    if not os.access(args.prometheus, os.X_OK):
        subprocess.run(["bash", str(ROOT / "scripts/install-prometheus.sh")], check=True)
    dashboard = json.loads(Path(args.dashboard).read_text())
    rules_path = os.path.abspath(args.rules)
    rule_names = re.findall(r"(?m)^[ \t]*- (?:alert|record):\s*(\S+)", Path(rules_path).read_text())

    # SIGTERM (a test runner giving up) unwinds through the finally below like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    t_begin = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="pgmux-dash-")
    procs = Procs()
    res = Results()
    try:
        run(args, pgmux, dashboard, rules_path, rule_names, tmp, procs, res)
    except (KeyboardInterrupt, SystemExit) as e:
        res.fail("run", f"interrupted ({e!r})")
        print(f"{res.passed} passed, {len(res.failed)} failed")
        raise
    finally:
        procs.stop_all()
        if args.keep or res.failed:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"took {time.monotonic() - t_begin:.1f}s")
    print(f"{res.passed} passed, {len(res.failed)} failed")
    return 1 if res.failed else 0


def run(args, pgmux, dashboard, rules_path, rule_names, tmp, procs, res):
    pg_port, mux_port, metrics_port, prom_port, dead_port = free_ports(5)
    bindir = pg_bindir()
    as_pg = {}
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")  # Postgres refuses to run as root
        as_pg = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        os.chmod(tmp, 0o755)
    pgdir = os.path.join(tmp, "pg")
    os.mkdir(pgdir)
    if as_pg:
        os.chown(pgdir, as_pg["user"], as_pg["group"])

    # -- Postgres
    print(f"Postgres ({bindir}) on {pg_port}")
    subprocess.run([f"{bindir}/initdb", "-D", f"{pgdir}/data", "-U", "postgres", "-A", "trust",
                    "--no-sync", "-E", "UTF8", "--locale=C"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=pgdir, **as_pg)
    pg_log = f"{pgdir}/postgres.log"
    pg = procs.start("postgres", [f"{bindir}/postgres", "-D", f"{pgdir}/data", "-p", str(pg_port),
                                  "-k", pgdir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                  "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                  "-c", "max_connections=50"],
                     pg_log, stop_signal=signal.SIGINT, cwd=pgdir, **as_pg)
    wait_for("Postgres", lambda: subprocess.run([f"{bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p",
                                                 str(pg_port)]).returncode == 0, 30, pg, pg_log)
    subprocess.run([f"{bindir}/pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(pg_port),
                    "-U", "postgres", "postgres"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)

    # -- pgmux: pool "bench" (2 servers for 16 pgbench clients), "slow" (1 server, for a
    # query_wait_timeout), "down" (a port nothing listens on, for server connect failures).
    cfg = os.path.join(tmp, "pgmux.toml")
    Path(cfg).write_text(f"""
[general]
listen_addr = "127.0.0.1"
listen_port = {mux_port}
pool_mode = "transaction"
default_pool_size = 2
max_client_conn = 100
auth_type = "scram-sha-256"
auth_failure_delay = 0
query_wait_timeout = 3
server_login_retry = 0.2

[metrics]
listen = "127.0.0.1:{metrics_port}"

[databases.bench]
host = "127.0.0.1"
port = {pg_port}
dbname = "postgres"

[databases.slow]
host = "127.0.0.1"
port = {pg_port}
dbname = "postgres"
pool_size = 1

[databases.down]
host = "127.0.0.1"
port = {dead_port}
dbname = "postgres"

[users.postgres]
password = "{PASSWORD}"
""")
    print(f"pgmux {pgmux} on {mux_port}, metrics on {metrics_port}")
    mux_log = os.path.join(tmp, "pgmux.log")
    mux = procs.start("pgmux", [pgmux, "--config", cfg], mux_log)
    wait_for("pgmux metrics", lambda: http_get(f"http://127.0.0.1:{metrics_port}/health")[0] == 200,
             20, mux, mux_log)

    # -- Prometheus
    prom_dir = os.path.join(tmp, "prometheus")
    os.mkdir(prom_dir)
    prom_cfg = os.path.join(prom_dir, "prometheus.yml")
    Path(prom_cfg).write_text(f"""
global:
  scrape_interval: {SCRAPE_INTERVAL_S}s
  scrape_timeout: {SCRAPE_INTERVAL_S}s
  evaluation_interval: 1s
rule_files:
  - {json.dumps(rules_path)}
scrape_configs:
  - job_name: pgmux
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
""")
    version = subprocess.run([args.prometheus, "--version"], capture_output=True, text=True)
    print(f"Prometheus on {prom_port}: {(version.stdout or version.stderr).splitlines()[0]}")
    prom_log = os.path.join(prom_dir, "prometheus.log")
    prom_proc = procs.start("prometheus", [args.prometheus, f"--config.file={prom_cfg}",
                                           f"--storage.tsdb.path={prom_dir}/data",
                                           f"--web.listen-address=127.0.0.1:{prom_port}",
                                           "--log.level=warn"], prom_log, cwd=prom_dir)
    prom = Prom(prom_port)
    wait_for("Prometheus", lambda: http_get(f"{prom.base}/-/ready")[0] == 200, 30, prom_proc, prom_log)
    wait_for("the pgmux target", lambda: any(s["value"][1] == "1" for s in prom.query('up{job="pgmux"}')),
             15, prom_proc, prom_log)

    # -- load
    env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="10")
    bad_env = dict(env, PGPASSWORD="wrong-password")

    def psql(db, sql):
        return [f"{bindir}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(mux_port), "-U", "postgres",
                "-d", db, "-c", sql]

    load_start = time.time() - 2
    print(f"pgbench through pgmux for {LOAD_SECONDS}s (16 clients, pool of 2), with failing clients beside it")
    bench_log = os.path.join(tmp, "pgbench.log")
    bench = procs.start("pgbench", [f"{bindir}/pgbench", "-n", "-c", "16", "-j", "2", "-T", str(LOAD_SECONDS),
                                    "-P", "5", "-h", "127.0.0.1", "-p", str(mux_port), "-U", "postgres", "bench"],
                        bench_log, env=env)
    time.sleep(2)
    side = []
    # A client holds the only server of "slow" for 5 s; the next one waits past
    # query_wait_timeout (3 s).
    side.append(("hold slow", procs.start("psql hold", psql("slow", "select pg_sleep(5)"),
                                          os.path.join(tmp, "psql-hold.log"), env=env), 0))
    time.sleep(0.5)
    side.append(("query_wait_timeout", procs.start("psql timeout", psql("slow", "select 1"),
                                                   os.path.join(tmp, "psql-timeout.log"), env=env), None))
    side.append(("server down", procs.start("psql down", psql("down", "select 1"),
                                            os.path.join(tmp, "psql-down.log"), env=env), None))
    for i in range(6):
        r = subprocess.run(psql("bench", "select 1"), env=bad_env, capture_output=True, text=True)
        if r.returncode == 0:
            res.fail("wrong password refused", "psql with a wrong password logged in")
    r = subprocess.run(psql("no_such_db", "select 1"), env=env, capture_output=True, text=True)
    if r.returncode == 0:
        res.fail("unknown database refused", "psql to an unknown database logged in")
    for what, p, want in side:
        rc = p.wait(timeout=30)
        if (want == 0) != (rc == 0):
            res.fail(f"side client {what!r}", f"psql exited {rc}; see {tmp}")
    rc = bench.wait(timeout=LOAD_SECONDS + 30)
    bench_out = Path(bench_log).read_text(errors="replace")
    if rc != 0:
        res.fail("pgbench", f"exited {rc}:\n{bench_out}")
    else:
        tps = re.search(r"tps = ([\d.]+)", bench_out)
        res.ok("pgbench through pgmux", f"tps {tps.group(1) if tps else '?'}")
    time.sleep(3)  # the last scrapes and rule evaluations
    load_end = time.time()
    window = f"{int(load_end - load_start) + 1}s"

    def rng(expr):
        return prom.query_range(expr, load_start, load_end, 1)

    # -- the load did what the later checks rely on
    print("the load:")
    for what, expr in [
        ("transactions", 'sum(pgmux_pool_transactions_total{database="bench"})'),
        ("clients waited for a server", 'sum(pgmux_pool_clients{state="waiting"})'),
        ("failed logins (auth_failed)", 'pgmux_client_login_failures_total{reason="auth_failed"}'),
        ("failed logins (unknown_database)", 'pgmux_client_login_failures_total{reason="unknown_database"}'),
        ("query_wait_timeout", 'sum(pgmux_pool_query_wait_timeouts_total{database="slow"})'),
        ("server connect failures", 'sum(pgmux_pool_server_connect_failures_total{database="down"})'),
        ("a client waited over 1 s (pgmux_pool_max_wait_seconds)", 'max(pgmux_pool_max_wait_seconds) > 1'),
    ]:
        vals = finite_values(rng(expr))
        if vals and max(vals) > 0:
            res.ok(what, f"max {max(vals):g}")
        else:
            res.fail(what, f"{expr} never above 0 during the load")

    # -- the dashboard's template variables
    print("dashboard template variables:")
    tvars = dashboard.get("templating", {}).get("list", [])
    found = {}
    for v in tvars:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q or "")
        if not m:
            res.fail(f"variable ${v['name']}", f"not a label_values(selector, label) query: {q!r}")
            continue
        sel = substitute(m.group(1), {k: ".*" for k in ("database", "user")})
        try:
            vals = prom.api(f"/api/v1/label/{m.group(2)}/values",
                            {"match[]": sel, "start": f"{load_start:.3f}", "end": f"{load_end:.3f}"})
        except QueryError as e:
            res.fail(f"variable ${v['name']}", str(e))
            continue
        if vals:
            found[v["name"]] = vals
            res.ok(f"variable ${v['name']}", ", ".join(vals))
        else:
            res.fail(f"variable ${v['name']}", f"{q} found no values")

    # -- every panel query
    builtins = {
        "__rate_interval": RATE_INTERVAL, "__interval": f"{SCRAPE_INTERVAL_S}s",
        "__interval_ms": str(SCRAPE_INTERVAL_S * 1000), "__range": window,
        "__range_s": window[:-1], "__range_ms": str(int(window[:-1]) * 1000),
        "datasource": "prometheus",
    }
    passes = [("all", {**builtins, **{n: ".*" for n in ("database", "user")}})]
    if found:
        passes.append(("values", {**builtins, **{n: regex_of(vs) for n, vs in found.items()}}))
    checked_selectors = {}

    def check_selectors(label, expr):
        for sel in selectors(expr):
            if sel not in checked_selectors:
                try:
                    checked_selectors[sel] = len(rng(sel))
                except QueryError as e:
                    checked_selectors[sel] = f"error: {e}"
            n = checked_selectors[sel]
            if not isinstance(n, int) or n == 0:
                res.fail(f"{label}: selector {sel}", "no series" if n == 0 else n)

    print(f"dashboard panels ($__rate_interval = {RATE_INTERVAL}):")
    n_targets = 0
    for panel in walk_panels(dashboard.get("panels", [])):
        for t in panel.get("targets", []):
            if not t.get("expr"):
                continue
            n_targets += 1
            for pass_name, values in passes:
                label = f"panel {panel.get('title')!r} {t.get('refId')} [{pass_name}]"
                try:
                    expr = substitute(t["expr"], values)
                    series = rng(expr)
                except (KeyError, QueryError) as e:
                    res.fail(label, f"{e}\n        {t['expr']}")
                    continue
                vals = finite_values(series)
                if not series or not vals:
                    res.fail(label, f"no data\n        {expr}")
                    continue
                res.ok(label, f"{len(series)} series, max {max(vals):g}")
                check_selectors(label, expr)
    if n_targets == 0:
        res.fail("dashboard", "no panel queries found")

    # -- the rules, as Prometheus loaded them
    print("rules:")
    groups = prom.api("/api/v1/rules", {})["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    missing = [n for n in rule_names if n not in loaded]
    if missing or not rule_names:
        res.fail("rules loaded", f"Prometheus did not load {missing or 'any rule'}; see {prom_log}")
    for name in rule_names:
        r = loaded.get(name)
        if r is None:
            continue
        label = f"{r['type']} {name}"
        if r.get("health") != "ok" or r.get("lastError"):
            res.fail(label, f"health {r.get('health')}: {r.get('lastError')}")
            continue
        try:
            now_result = prom.query(r["query"], load_end)
        except QueryError as e:
            res.fail(label, f"{e}\n        {r['query']}")
            continue
        before = len(res.failed)
        check_selectors(label, r["query"])
        if r["type"] == "recording":
            produced = rng(name)
            if not produced:
                res.fail(label, "recorded no series")
        if len(res.failed) == before:
            state = f", {r.get('state')}" if r["type"] == "alerting" else f", {len(produced)} series"
            res.ok(label, f"{len(now_result)} result(s) now{state}")


if __name__ == "__main__":
    sys.exit(main())
