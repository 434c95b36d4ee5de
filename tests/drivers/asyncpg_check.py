"""asyncpg through pgmux: protocol-level prepared statements from 50 concurrent connections.

asyncpg prepares every parameterised query as a named statement (`__asyncpg_stmt_N__`) and
keeps it in a per-connection cache (default size 100), so later executions send only Bind and
Execute for a statement the connection believes its server already has. Behind a pooler in
transaction mode each of those may run on a different server.

Each of 50 connections runs: 30 distinct query texts, each repeated; queries against a table; a
transaction block with a savepoint that fails and is rolled back; conn.prepare() and fetches on
the prepared statement; executemany, and one that fails in the middle; an error on a cached
statement, then the same statement again; a cursor in a transaction; and 120 further distinct
texts, more than the cache holds, so asyncpg closes evicted statements (Close messages).

Usage: asyncpg_check.py [HOST PORT USER PASSWORD DBNAME] (else PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE). Prints a summary that depends only on the results, so runs against
Postgres directly and through pgmux print the same; exits non-zero on any error.
"""

import asyncio
import hashlib
import os
import sys

import asyncpg

CONNECTIONS = 50
DISTINCT = 30
REPEAT = 4
EVICT = 120  # distinct texts past the default statement cache (100)
TIMEOUT = 90


def params():
    names = ["host", "port", "user", "password", "database"]
    if len(sys.argv) == 6:
        p = dict(zip(names, sys.argv[1:]))
    elif len(sys.argv) == 1:
        env = ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"]
        p = {n: os.environ[e] for n, e in zip(names, env)}
    else:
        sys.exit("usage: asyncpg_check.py [HOST PORT USER PASSWORD DBNAME]")
    p["port"] = int(p["port"])
    return p


async def setup(p):
    conn = await asyncpg.connect(**p)
    try:
        await conn.execute(
            """
            DROP TABLE IF EXISTS ap_items, ap_log;
            CREATE TABLE ap_items (id int PRIMARY KEY, grp int NOT NULL, name text NOT NULL);
            INSERT INTO ap_items SELECT g, g % 10, 'item-' || g FROM generate_series(1, 1000) g;
            CREATE TABLE ap_log (conn int, step int, v bigint, PRIMARY KEY (conn, step));
            """
        )
    finally:
        await conn.close()


async def worker(p, i):
    """One connection's work; returns the list of everything it read, in order."""
    out = []
    conn = await asyncpg.connect(**p)
    try:
        # Distinct texts, each repeated: the later rounds use the cached statements.
        for rep in range(REPEAT):
            for k in range(DISTINCT):
                out.append(await conn.fetchval(f"SELECT $1::int + {k}", i * 1000 + rep))

        # A few shapes against the table, with other types.
        for rep in range(3):
            g = (i + rep) % 10
            out.append(tuple(await conn.fetchrow(
                "SELECT count(*), sum(id) FROM ap_items WHERE grp = $1", g)))
            out.append(await conn.fetchval("SELECT name FROM ap_items WHERE id = $1", i + rep + 1))
            rows = await conn.fetch(
                "SELECT id, name FROM ap_items WHERE id BETWEEN $1 AND $2 ORDER BY id",
                i * 10 + 1, i * 10 + 5)
            out.append([tuple(r) for r in rows])
            out.append(await conn.fetchval("SELECT $1::text || '/' || $2::text", f"c{i}", str(rep)))
            out.append(str(await conn.fetchval("SELECT $1::numeric * 2.5", i + rep)))
            out.append(await conn.fetchval("SELECT $1::int[] || $2::int", [i, rep], i + rep))

        # A transaction block: several statements, and a savepoint whose insert fails.
        async with conn.transaction():
            for step in range(5):
                await conn.execute(
                    "INSERT INTO ap_log (conn, step, v) VALUES ($1, $2, $3)", i, step, i * step)
            await conn.execute("UPDATE ap_log SET v = v + $2 WHERE conn = $1", i, 7)
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO ap_log (conn, step, v) VALUES ($1, $2, $3)", i, 0, -1)
            except asyncpg.UniqueViolationError:
                out.append("unique-violation")
            out.append(await conn.fetchval("SELECT sum(v) FROM ap_log WHERE conn = $1", i))

        # An explicitly prepared statement, used many times.
        stmt = await conn.prepare(
            "SELECT id, name FROM ap_items WHERE grp = $1 AND id > $2 ORDER BY id LIMIT $3")
        for rep in range(8):
            rows = await stmt.fetch((i + rep) % 10, i, 3)
            out.append([tuple(r) for r in rows])
            out.append(tuple(await stmt.fetchrow(rep % 10, 500, 1)))

        # executemany: many Bind/Execute pairs in one go.
        await conn.executemany(
            "INSERT INTO ap_log (conn, step, v) VALUES ($1, $2, $3)",
            [(i, 100 + j, i + j) for j in range(10)])
        out.append(await conn.fetchval("SELECT count(*) FROM ap_log WHERE conn = $1", i))
        # executemany failing in the middle (a duplicate key): nothing of it stays.
        try:
            await conn.executemany(
                "INSERT INTO ap_log (conn, step, v) VALUES ($1, $2, $3)",
                [(i, 200 + j, 1) for j in range(5)] + [(i, 200, 2)]
                + [(i, 300 + j, 1) for j in range(5)])
        except asyncpg.UniqueViolationError:
            out.append("executemany-unique-violation")
        out.append(await conn.fetchval("SELECT count(*) FROM ap_log WHERE conn = $1", i))

        # An error on a cached statement, then the same statement again.
        for d in (1, 0, 2):
            try:
                out.append(await conn.fetchval("SELECT 100 / $1::int", d))
            except asyncpg.DivisionByZeroError:
                out.append("division-by-zero")

        # A cursor (a portal fetched in pieces) in a transaction.
        async with conn.transaction():
            total = 0
            async for r in conn.cursor("SELECT g FROM generate_series(1, $1) g", 40 + i,
                                       prefetch=7):
                total += r[0]
            out.append(total)

        # More distinct texts than the cache holds: evicted statements get closed.
        evict = 0
        for k in range(EVICT):
            evict += await conn.fetchval(f"SELECT $1::int * {k} + 1", i)
        out.append(evict)
        # The first texts again (evicted by now: prepared anew).
        for k in range(5):
            out.append(await conn.fetchval(f"SELECT $1::int + {k}", i))
    finally:
        await conn.close()
    return out


async def main():
    p = params()
    await setup(p)
    results = await asyncio.wait_for(
        asyncio.gather(*(worker(p, i) for i in range(CONNECTIONS))), TIMEOUT)

    conn = await asyncpg.connect(**p)
    try:
        log = tuple(await conn.fetchrow("SELECT count(*), sum(v)::bigint FROM ap_log"))
    finally:
        await conn.close()

    digest = hashlib.sha256()
    for i, out in enumerate(results):
        digest.update(f"{i}:{out!r}\n".encode())
    print(f"connections: {len(results)}")
    print(f"results per connection: {sorted(set(len(o) for o in results))}")
    print(f"distinct-text sum: {sum(sum(o[:DISTINCT * REPEAT]) for o in results)}")
    print(f"unique violations: {sum(o.count('unique-violation') for o in results)}")
    print(f"divisions by zero: {sum(o.count('division-by-zero') for o in results)}")
    print(f"ap_log rows, sum: {log}")
    print(f"sha256 of all results: {digest.hexdigest()}")


if __name__ == "__main__":
    asyncio.run(main())
