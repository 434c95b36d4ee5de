#!/usr/bin/env python3
"""The soak: pgbench through pgmux for DURATION seconds (default 1800) with faults mixed in,
then the checks that nothing leaked. Not run by CI.

Load: pgbench tpcb-like, extended protocol, CLIENTS clients on a pool of POOL (transaction
mode), in 60-second runs back to back; a side load on a second entry (`side`, same Postgres
database) that the faults KILL.

Faults, one every FAULT_EVERY seconds (default 3), in turn:
- idle servers killed (pg_terminate_backend on pgmux's idle sessions);
- a client that leaves mid-transaction (psql killed inside BEGIN ... pg_sleep);
- a client that leaves mid-COPY FROM STDIN (psql killed with its data half sent);
- a reload (the config rewritten with another pool size, then SIGHUP);
- admin KILL side (then RESUME side), and admin RECONNECT bench.

Checks at the end: pgmux's RSS after warm-up (the first WARMUP seconds, default a sixth of
the run) against the end; SHOW SERVERS against pg_stat_activity (every server pgmux lists
is a live session of its user, and every session of that user is listed: no ghost, no
leak); no panic in pgmux's log. Prints a table for the closing note; exit status 1 if a
check fails.

Uses ../shared/bench/pg.sh (BENCH_SCRIPTS) and target/release/pgmux (build it first:
cargo build --release). Ports below 32768.

    python3 scripts/soak.py                 # DURATION=1800 CLIENTS=40 POOL=10
    DURATION=120 python3 scripts/soak.py    # a short try
"""

import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.environ.get("BENCH_SCRIPTS", os.path.join(REPO, "..", "shared", "bench"))
BENCH_DIR = os.environ.get("BENCH_DIR", "/tmp/pgmux-soak")
PG_PORT = int(os.environ.get("PG_PORT", "15542"))
MUX_PORT = int(os.environ.get("MUX_PORT", "15544"))
POOL = int(os.environ.get("POOL", "10"))
CLIENTS = int(os.environ.get("CLIENTS", "40"))
DURATION = int(os.environ.get("DURATION", "1800"))
WARMUP = int(os.environ.get("WARMUP", str(max(30, DURATION // 6))))
FAULT_EVERY = float(os.environ.get("FAULT_EVERY", "3"))
ENV = dict(os.environ, BENCH_DIR=BENCH_DIR, PG_PORT=str(PG_PORT), SCALE=os.environ.get("SCALE", "4"))


def config(pool):
    return f"""[general]
listen_addr = "127.0.0.1"
listen_port = {MUX_PORT}
pool_mode = "transaction"
default_pool_size = {pool}
max_client_conn = 2000
auth_type = "scram-sha-256"
admin_users = ["soakadmin"]
log_connections = false
log_disconnections = false
stats_period = 0
query_wait_timeout = 30

[databases.bench]
host = "127.0.0.1"
port = {PG_PORT}

[databases.side]
host = "127.0.0.1"
port = {PG_PORT}
dbname = "bench"
pool_size = 3

[users.bench]
password = "bench"

[users.soakadmin]
password = "soakadmin"
"""


def psql(sql, port=PG_PORT, user="postgres", db="bench", password=None, check=True):
    env = dict(ENV)
    if password:
        env["PGPASSWORD"] = password
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-qAtX",
                        "-F", "|", "-c", sql, db], env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {r.stderr}")
    return r.stdout


def admin(sql, check=True):
    return psql(sql, port=MUX_PORT, user="soakadmin", db="pgbouncer", password="soakadmin",
                check=check)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Load:
    """pgbench in 60-second runs until stopped; counts transactions and aborted clients."""

    def __init__(self, db, clients, deadline):
        self.db, self.clients, self.deadline = db, clients, deadline
        self.runs = self.tx = self.aborted = self.failed_runs = 0
        self.reasons = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while (left := int(self.deadline - time.time())) >= 1:
            cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(MUX_PORT), "-U", "bench", "-n",
                   "-M", "extended", "-c", str(self.clients), "-j", "2", "-T",
                   str(min(60, left)), self.db]
            p = subprocess.run(cmd, env=dict(ENV, PGPASSWORD="bench"), capture_output=True,
                               text=True)
            out, err = p.stdout, p.stderr
            self.runs += 1
            m = re.search(r"number of transactions actually processed: (\d+)", out)
            self.tx += int(m.group(1)) if m else 0
            self.aborted += len(re.findall(r"aborted in command", err))
            for line in err.splitlines():
                if "aborted in command" in line or line.startswith("pgbench: error"):
                    why = re.sub(r"client \d+ |\d+", "N", line)[:120]
                    self.reasons[why] = self.reasons.get(why, 0) + 1
            if p.returncode not in (0, 2):
                self.failed_runs += 1


def fault_kill_idle():
    n = psql("SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity "
             "WHERE usename = 'bench' AND state = 'idle' LIMIT 2) s").strip()
    return f"killed {n} idle servers"


def fault_leave_mid_transaction():
    p = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(MUX_PORT), "-U", "bench", "-qX",
                          "-c", "BEGIN; UPDATE pgbench_branches SET bbalance = bbalance "
                          "WHERE bid = 1; SELECT pg_sleep(5); COMMIT;", "bench"],
                         env=dict(ENV, PGPASSWORD="bench"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    p.kill()
    p.wait()
    return "a client left mid-transaction"


def fault_leave_mid_copy():
    p = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(MUX_PORT), "-U", "bench", "-qX",
                          "-c", "COPY pgbench_history (tid, bid, aid, delta, mtime) FROM STDIN",
                          "bench"], env=dict(ENV, PGPASSWORD="bench"), stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for i in range(200):
        p.stdin.write(f"1\t1\t{i + 1}\t0\t2026-01-01\n".encode())
    p.stdin.flush()
    time.sleep(0.3)
    p.kill()
    p.wait()
    return "a client left mid-COPY"


class Faults:
    def __init__(self, mux_pid, conf_path):
        self.mux_pid, self.conf_path = mux_pid, conf_path
        self.done = {}
        self.errors = []
        self.pool = POOL
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def reload(self):
        self.pool = POOL + 2 if self.pool == POOL else POOL
        with open(self.conf_path, "w") as f:
            f.write(config(self.pool))
        os.kill(self.mux_pid, signal.SIGHUP)
        return f"reload (pool size {self.pool})"

    def kill_side(self):
        admin("KILL side")
        time.sleep(0.5)
        admin("RESUME side")
        return "KILL side, RESUME side"

    def reconnect(self):
        admin("RECONNECT bench")
        return "RECONNECT bench"

    def run(self):
        faults = [fault_kill_idle, fault_leave_mid_transaction, fault_leave_mid_copy,
                  self.reload, self.kill_side, self.reconnect]
        i = 0
        while not self.stop.wait(FAULT_EVERY * random.uniform(0.5, 1.5)):
            f = faults[i % len(faults)]
            i += 1
            try:
                f()
                self.done[f.__name__] = self.done.get(f.__name__, 0) + 1
            except Exception as e:  # a fault that fails is reported, the soak goes on
                self.errors.append(f"{f.__name__}: {e}")


def servers_vs_sessions():
    """SHOW SERVERS' remote pids against pg_stat_activity's sessions of the pooled user."""
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(MUX_PORT), "-U", "soakadmin",
                          "-X", "-A", "-F", "|", "-P", "footer=off", "-c", "SHOW SERVERS",
                          "pgbouncer"], env=dict(ENV, PGPASSWORD="soakadmin"),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    at = out[0].split("|").index("remote_pid")
    pids = {row.split("|")[at] for row in out[1:] if row}
    sessions = set(psql("SELECT pid FROM pg_stat_activity WHERE usename = 'bench' "
                        "AND backend_type = 'client backend'").split())
    return pids, sessions


def main():
    workdir = tempfile.mkdtemp(prefix="pgmux-soak-")
    subprocess.run(["bash", os.path.join(SCRIPTS, "pg.sh"), "start"], env=ENV, check=True)
    conf = os.path.join(workdir, "pgmux.toml")
    with open(conf, "w") as f:
        f.write(config(POOL))
    log_path = os.path.join(workdir, "pgmux.log")
    log = open(log_path, "w")
    mux = subprocess.Popen([os.path.join(REPO, "target", "release", "pgmux"), "-c", conf],
                           stdout=log, stderr=log, env=dict(ENV, RUST_LOG="pgmux=info"))
    for _ in range(100):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(MUX_PORT)]).returncode == 0:
            break
        time.sleep(0.1)
    started = time.time()
    deadline = started + DURATION
    main_load, side_load = Load("bench", CLIENTS, deadline), Load("side", 4, deadline)
    faults = Faults(mux.pid, conf)
    samples = []
    try:
        main_load.thread.start()
        side_load.thread.start()
        faults.thread.start()
        while time.time() - started < DURATION:
            time.sleep(min(30, max(1, DURATION - (time.time() - started))))
            t = time.time() - started
            samples.append((t, rss_kb(mux.pid)))
            print(f"{t:6.0f} s: rss {samples[-1][1]} kB, {main_load.tx} tx in finished runs, "
                  f"faults {sum(faults.done.values())}", flush=True)
        faults.stop.set()
        faults.thread.join()
        main_load.thread.join()
        side_load.thread.join()
        # Let reaped and closing servers finish, then compare.
        time.sleep(6)
        pids, sessions = servers_vs_sessions()
        end_rss = rss_kb(mux.pid)
    finally:
        mux.terminate()
        mux.wait()
        subprocess.run(["bash", os.path.join(SCRIPTS, "pg.sh"), "stop"], env=ENV)
    with open(log_path) as f:
        text = f.read()
    panics = len(re.findall(r"panicked", text))
    warm = [r for t, r in samples if t >= WARMUP]
    warm_rss = warm[0] if warm else samples[0][1]
    peak_after = max(warm) if warm else end_rss
    ghosts = sorted(pids - sessions)
    leaks = sorted(sessions - pids)
    growth = (end_rss - warm_rss) / warm_rss if warm_rss else 0
    ok = panics == 0 and not ghosts and not leaks and growth < 0.10
    print(f"\nsoak: {DURATION} s, pgbench tpcb-like -M extended -c {CLIENTS} on pool {POOL} "
          f"(transaction mode) + side load -c 4 on pool 3; a fault every ~{FAULT_EVERY} s\n")
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| transactions (main load) | {main_load.tx} in {main_load.runs} pgbench runs |")
    print(f"| pgbench clients aborted by faults (main / side) | {main_load.aborted} / {side_load.aborted} |")
    for name, n in sorted(faults.done.items()):
        print(f"| fault {name} | {n} |")
    for load in (main_load, side_load):
        for why, n in sorted(load.reasons.items(), key=lambda kv: -kv[1])[:4]:
            print(f"| {load.db}: {n} x | {why} |")
    if faults.errors:
        print(f"| faults that failed to run | {len(faults.errors)}: {faults.errors[:3]} |")
    print(f"| RSS after warm-up ({WARMUP} s) / peak after / end | {warm_rss} / {peak_after} / {end_rss} kB "
          f"({growth:+.1%}) |")
    print(f"| SHOW SERVERS vs pg_stat_activity at the end | {len(pids)} listed, {len(sessions)} sessions, "
          f"ghosts {ghosts}, unlisted sessions {leaks} |")
    print(f"| panics in the log | {panics} |")
    print(f"\nlog: {log_path}; {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
