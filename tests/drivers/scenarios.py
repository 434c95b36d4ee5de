"""Small application scenarios, all at once, each with several concurrent clients (psycopg 3):
run directly against Postgres and through pgmux in transaction mode on a pool smaller than
the number of clients, they must print the same. A setting, a lock, a temporary table, a
cursor, a prepared statement or a notification that leaked to another client, or got lost
between servers, changes what is printed.

Scenarios: search_path per tenant, statement_timeout per request, application_name, time
zones, an advisory-lock job queue (the pattern of Rails' and good_job's locks), temporary
tables, WITH HOLD cursors, LISTEN/NOTIFY fan-out, SQL PREPARE.

Usage: scenarios.py HOST PORT USER PASSWORD DBNAME
"""
import concurrent.futures
import sys
import threading
import time

import psycopg

host, port, user, password, dbname = sys.argv[1:6]
conninfo = f"host={host} port={port} user={user} password={password} dbname={dbname}"
CLIENTS = 4
ROUNDS = 8


def connect():
    return psycopg.connect(conninfo, autocommit=True)


def setup():
    with connect() as c:
        for k in range(CLIENTS):
            c.execute(f"DROP SCHEMA IF EXISTS tenant_{k} CASCADE")
            c.execute(f"CREATE SCHEMA tenant_{k}")
            c.execute(f"CREATE TABLE tenant_{k}.who (name text)")
            c.execute(f"INSERT INTO tenant_{k}.who VALUES ('tenant {k}')")
        c.execute("DROP TABLE IF EXISTS scenario_jobs")
        c.execute("CREATE TABLE scenario_jobs (id int PRIMARY KEY, done_by int)")
        c.execute("INSERT INTO scenario_jobs SELECT i, NULL FROM generate_series(1, 40) i")


def search_path(k):
    with connect() as c:
        c.execute(f"SET search_path TO tenant_{k}, public")
        seen = set()
        for _ in range(ROUNDS):
            seen.add(c.execute("SELECT name FROM who").fetchone()[0])
            time.sleep(0.01)
        return f"search_path client {k}: {sorted(seen)}"


def statement_timeout(k):
    with connect() as c:
        if k % 2 == 0:
            c.execute("SET statement_timeout = '100ms'")
        outcomes = []
        for _ in range(3):
            try:
                c.execute("SELECT pg_sleep(0.3)")
                outcomes.append("slept")
            except psycopg.errors.QueryCanceled:
                outcomes.append("cancelled (57014)")
        return f"statement_timeout client {k}: {outcomes}"


def application_name(k):
    with connect() as c:
        c.execute(f"SET application_name = 'scenario-{k}'")
        seen = set()
        for _ in range(ROUNDS):
            seen.add(c.execute("SELECT current_setting('application_name')").fetchone()[0])
            time.sleep(0.01)
        return f"application_name client {k}: {sorted(seen)}"


def time_zone(k):
    zones = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Paris"]
    with connect() as c:
        c.execute(f"SET TIME ZONE '{zones[k]}'")
        seen = set()
        for _ in range(ROUNDS):
            q = "SELECT to_char(timestamptz '2026-01-01 00:00:00+00', 'YYYY-MM-DD HH24:MI')"
            seen.add(c.execute(q).fetchone()[0])
            time.sleep(0.01)
        return f"time zone client {k} ({zones[k]}): {sorted(seen)}"


def job_queue(k):
    """Workers take jobs under session advisory locks, as good_job does."""
    done = 0
    with connect() as c:
        while True:
            row = c.execute(
                "WITH free AS MATERIALIZED (SELECT id FROM scenario_jobs WHERE done_by IS NULL"
                " ORDER BY id LIMIT 5) SELECT id FROM free WHERE pg_try_advisory_lock(id)"
                " LIMIT 1").fetchone()
            if row is None:
                c.execute("SELECT pg_advisory_unlock_all()")
                left = c.execute(
                    "SELECT count(*) FROM scenario_jobs WHERE done_by IS NULL").fetchone()[0]
                if left == 0:
                    break
                time.sleep(0.01)
                continue
            held = c.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid() AND objid = %s", (row[0],)).fetchone()[0]
            assert held == 1, f"job {row[0]}: its lock is not on this session"
            took = c.execute(
                "UPDATE scenario_jobs SET done_by = %s WHERE id = %s AND done_by IS NULL"
                " RETURNING id", (k, row[0])).fetchone()
            done += took is not None
            c.execute("SELECT pg_advisory_unlock_all()")
    return done


def temp_tables(k):
    with connect() as c:
        c.execute("CREATE TEMP TABLE scratch (x int)")
        for i in range(ROUNDS):
            c.execute("INSERT INTO scratch VALUES (%s)", (k * 100 + i,))
            time.sleep(0.01)
        total = c.execute("SELECT sum(x), count(*) FROM scratch").fetchone()
        c.execute("DROP TABLE scratch")
        return f"temp table client {k}: sum {total[0]} of {total[1]} rows"


def hold_cursor(k):
    with connect() as c:
        c.execute(f"DECLARE cur CURSOR WITH HOLD FOR SELECT i * {k + 1} FROM generate_series(1, 9) i")
        got = []
        for _ in range(3):
            got += [r[0] for r in c.execute("FETCH 3 FROM cur").fetchall()]
            time.sleep(0.01)
        c.execute("CLOSE cur")
        return f"WITH HOLD cursor client {k}: {got}"


def sql_prepare(k):
    with connect() as c:
        c.execute(f"PREPARE twice(int) AS SELECT $1 * 2 + {k}")
        got = []
        for i in range(ROUNDS):
            got.append(c.execute(f"EXECUTE twice({i})").fetchone()[0])
            time.sleep(0.01)
        c.execute("DEALLOCATE twice")
        return f"SQL PREPARE client {k}: {got}"


def listen_fan_out(listening):
    """CLIENTS listeners on one channel; a notifier sends ROUNDS notifications."""
    got = {}
    conns = []
    for k in range(CLIENTS):
        c = connect()
        c.execute("LISTEN scenario_jobs")
        conns.append(c)

    def listen(k, c):
        got[k] = []
        for n in c.notifies(timeout=15):
            got[k].append(n.payload)
            if n.payload == "last":
                break

    threads = [threading.Thread(target=listen, args=(k, c)) for k, c in enumerate(conns)]
    for t in threads:
        t.start()
    listening.set()
    with connect() as n:
        for i in range(ROUNDS):
            n.execute(f"NOTIFY scenario_jobs, 'job {i}'")
            time.sleep(0.01)
        n.execute("NOTIFY scenario_jobs, 'last'")
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return [f"LISTEN client {k}: {got[k]}" for k in range(CLIENTS)]


setup()
listening = threading.Event()
with concurrent.futures.ThreadPoolExecutor(max_workers=64) as ex:
    fan_out = ex.submit(listen_fan_out, listening)
    listening.wait(30)
    jobs = {
        name: [ex.submit(f, k) for k in range(CLIENTS)]
        for name, f in [
            ("search_path", search_path),
            ("statement_timeout", statement_timeout),
            ("application_name", application_name),
            ("time_zone", time_zone),
            ("job_queue", job_queue),
            ("temp_tables", temp_tables),
            ("hold_cursor", hold_cursor),
            ("sql_prepare", sql_prepare),
        ]
    }
    lines = []
    for name, futures in jobs.items():
        results = [f.result() for f in futures]
        if name == "job_queue":
            lines.append(f"job queue: {sum(results)} jobs taken by {CLIENTS} workers")
        else:
            lines += results
    lines += fan_out.result()
with connect() as c:
    per_job = c.execute(
        "SELECT count(*), count(DISTINCT id), count(done_by) FROM scenario_jobs").fetchone()
    lines.append(f"job queue: {per_job[0]} jobs, {per_job[2]} done, each once")
    leftover = c.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()[0]
    lines.append(f"advisory locks left: {leftover}")
for line in lines:
    print(line)
