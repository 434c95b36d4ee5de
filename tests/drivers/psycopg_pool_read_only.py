"""Issue 16's scenario: a psycopg_pool whose `configure` callback makes its connections
read-only (SET default_transaction_read_only TO on), beside a pool of ordinary connections,
both busy at once. Every write through the ordinary pool must succeed and every write through
the read-only one must be refused (25006), as directly against Postgres; through a
transaction pooler that leaks the setting, ordinary writes fail on servers a read-only
connection used. Prints what happened, for comparison with a direct run.

Usage: psycopg_pool_read_only.py HOST PORT USER PASSWORD DBNAME
"""
import collections
import concurrent.futures
import sys

import psycopg
from psycopg_pool import ConnectionPool

host, port, user, password, dbname = sys.argv[1:6]
conninfo = f"host={host} port={port} user={user} password={password} dbname={dbname}"


def read_only(conn):
    conn.execute("SET default_transaction_read_only TO on")
    conn.commit()


with psycopg.connect(conninfo, autocommit=True) as c:
    c.execute("DROP TABLE IF EXISTS pool_read_only")
    c.execute("CREATE TABLE pool_read_only (x int)")

ro_pool = ConnectionPool(conninfo, min_size=4, max_size=4, configure=read_only, open=True)
rw_pool = ConnectionPool(conninfo, min_size=4, max_size=4, open=True)


def write(pool, i):
    with pool.connection() as c:
        try:
            c.execute("INSERT INTO pool_read_only VALUES (%s)", (i,))
            return "written"
        except psycopg.errors.ReadOnlySqlTransaction:
            return "refused (25006)"


outcomes = collections.Counter()
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    jobs = []
    for i in range(60):
        jobs.append(("read-only pool", ex.submit(write, ro_pool, i)))
        jobs.append(("ordinary pool", ex.submit(write, rw_pool, i)))
    for who, job in jobs:
        outcomes[(who, job.result())] += 1
ro_pool.close()
rw_pool.close()
for (who, what), n in sorted(outcomes.items()):
    print(f"{who}: {n} {what}")
with psycopg.connect(conninfo, autocommit=True) as c:
    print("rows:", c.execute("SELECT count(*) FROM pool_read_only").fetchone()[0])
    c.execute("DROP TABLE pool_read_only")
