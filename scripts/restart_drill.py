#!/usr/bin/env python3
"""The restart drill, pgmux and PgBouncer side by side in one run.

pgbench select-only, 50 clients at 1,000 transactions per second, through a pool of 10; after
DRILL_AT seconds Postgres is stopped with `pg_ctl stop -m fast` and started again DOWN seconds
later. For each pooler: clients aborted, transactions processed, and the seconds from
`pg_ctl start` returning to the first transaction completed after it (from pgbench's
per-transaction log).

Uses ../shared/bench's pg.sh and pgbouncer.sh (BENCH_SCRIPTS) and target/release/pgmux
(build it first: cargo build --release). Ports below 32768.

    python3 scripts/restart_drill.py            # ROUNDS=2 T=14 DRILL_AT=4 DOWN=3
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.environ.get("BENCH_SCRIPTS", os.path.join(REPO, "..", "shared", "bench"))
BENCH_DIR = os.environ.get("BENCH_DIR", "/tmp/pgmux-drill")
PG_PORT = int(os.environ.get("PG_PORT", "15532"))
PGB_PORT = int(os.environ.get("PGB_PORT", "15533"))
MUX_PORT = int(os.environ.get("MUX_PORT", "15534"))
POOL = int(os.environ.get("POOL_SIZE", "10"))
CLIENTS = int(os.environ.get("CLIENTS", "50"))
RATE = int(os.environ.get("RATE", "1000"))
T = int(os.environ.get("T", "14"))
DRILL_AT = float(os.environ.get("DRILL_AT", "4"))
DOWN = float(os.environ.get("DOWN", "3"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
ENV = dict(os.environ, BENCH_DIR=BENCH_DIR, PG_PORT=str(PG_PORT), PGB_PORT=str(PGB_PORT),
           POOL_SIZE=str(POOL), SCALE=os.environ.get("SCALE", "1"))


def sh(*args, **kw):
    return subprocess.run(args, env=ENV, check=True, **kw)


def pg_bin():
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(found)
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]


def pg_ctl(args):
    cmd = f"{pg_bin()}/pg_ctl -D {BENCH_DIR}/pgdata {args}"
    if os.getuid() == 0:
        subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", cmd], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)


def start_pgmux(workdir):
    conf = os.path.join(workdir, "pgmux.toml")
    with open(conf, "w") as f:
        f.write(f"""[general]
listen_addr = "127.0.0.1"
listen_port = {MUX_PORT}
pool_mode = "transaction"
default_pool_size = {POOL}
max_client_conn = 15000
auth_type = "scram-sha-256"
log_connections = false
log_disconnections = false
stats_period = 0

[databases.bench]
host = "127.0.0.1"
port = {PG_PORT}

[users.bench]
password = "bench"
""")
    log = open(os.path.join(workdir, "pgmux.log"), "w")
    p = subprocess.Popen([os.path.join(REPO, "target", "release", "pgmux"), "-c", conf],
                         stdout=log, stderr=log)
    for _ in range(100):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(MUX_PORT)]).returncode == 0:
            return p
        time.sleep(0.1)
    sys.exit("pgmux did not start; see " + log.name)


def drill(name, port, workdir):
    prefix = os.path.join(workdir, f"{name}-{time.time_ns()}")
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "-n", "-S",
           "-c", str(CLIENTS), "-j", "2", "--rate", str(RATE), "-T", str(T),
           "-l", "--log-prefix", prefix, "bench"]
    out = {}

    def run():
        r = subprocess.run(cmd, env=dict(ENV, PGPASSWORD="bench"), capture_output=True, text=True)
        out["stdout"], out["stderr"] = r.stdout, r.stderr

    t = threading.Thread(target=run)
    t.start()
    time.sleep(DRILL_AT)
    pg_ctl("-m fast -w stop")
    time.sleep(DOWN)
    pg_ctl(f"-w -t 60 start -l {BENCH_DIR}/postgres.log")
    back = time.time()
    t.join()
    aborted = len(re.findall(r"aborted in command", out["stderr"]))
    m = re.search(r"number of transactions actually processed: (\d+)", out["stdout"])
    processed = int(m.group(1)) if m else 0
    first = None
    for path in glob.glob(prefix + "*"):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6:
                    done = int(parts[4]) + int(parts[5]) / 1e6
                    if done > back and (first is None or done < first):
                        first = done
        os.remove(path)
    served = f"{first - back:.2f}" if first else "never"
    return aborted, processed, served


def main():
    workdir = tempfile.mkdtemp(prefix="pgmux-drill-")
    sh("bash", os.path.join(SCRIPTS, "pg.sh"), "start")
    sh("bash", os.path.join(SCRIPTS, "pgbouncer.sh"), "start")
    mux = start_pgmux(workdir)
    version = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    rows = []
    try:
        for r in range(ROUNDS):
            for name, port in [("pgbouncer", PGB_PORT), ("pgmux", MUX_PORT)]:
                time.sleep(2)
                aborted, processed, served = drill(name, port, workdir)
                rows.append((r + 1, name, aborted, processed, served))
                print(f"round {r + 1} {name}: aborted {aborted}/{CLIENTS}, {processed} transactions, "
                      f"served again after {served} s", flush=True)
    finally:
        mux.terminate()
        sh("bash", os.path.join(SCRIPTS, "pgbouncer.sh"), "stop")
        sh("bash", os.path.join(SCRIPTS, "pg.sh"), "stop")
    print(f"\n{version}; pool {POOL}, pgbench -S -c {CLIENTS} --rate {RATE} -T {T}, "
          f"pg_ctl stop -m fast at {DRILL_AT} s, start {DOWN} s later\n")
    print("| round | pooler | clients aborted | transactions | served again after pg_ctl start (s) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| %d | %s | %d of %d | %d | %s |" % (row[0], row[1], row[2], CLIENTS, row[3], row[4]))


if __name__ == "__main__":
    main()
