"""psycopg 3 through pgmux: prepared statements, executemany and pipeline mode.

With prepare_threshold=0 psycopg prepares every query as a named statement (`_pg3_N`) on its
first execution and afterwards sends only Bind/Execute. Three autocommit connections are used
in turn, statement by statement, so behind a pooler in transaction mode with a smaller pool a
connection's statements run on different servers.

Covered: distinct and repeated statements, text and binary results, cursor.executemany (which
psycopg pipelines), executemany with RETURNING, pipeline mode with several statements, an error
in the middle of a pipeline (the rest of it is aborted; the connection recovers), both when the
rest was sent before the error came back and when it was not, transaction blocks (one
committed, one that fails and rolls back, after which psycopg sends DEALLOCATE ALL since a
ROLLBACK may invalidate prepared statements), a named (server-side) cursor, and more distinct
texts than psycopg keeps prepared (prepared_max, default 100), so it closes evicted statements
(Close messages).

Usage: psycopg_check.py [HOST PORT USER PASSWORD DBNAME] (else PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE). Prints a summary that depends only on the results, so runs against
Postgres directly and through pgmux print the same; exits non-zero on any error.
"""

import hashlib
import logging
import sys
import time

import psycopg
from psycopg import errors

CONNECTIONS = 3
DISTINCT = 30
REPEAT = 5
EVICT = 110  # distinct texts past prepared_max (100)


def connect(argv):
    if len(argv) == 6:
        host, port, user, password, dbname = argv[1:]
        kw = dict(host=host, port=port, user=user, password=password, dbname=dbname)
    elif len(argv) == 1:
        kw = {}  # libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE
    else:
        sys.exit("usage: psycopg_check.py [HOST PORT USER PASSWORD DBNAME]")
    return lambda: psycopg.connect(
        autocommit=True, prepare_threshold=0, connect_timeout=10, **kw)


def setup(conn):
    conn.execute("DROP TABLE IF EXISTS pc_items, pc_log")
    conn.execute("CREATE TABLE pc_items (id int PRIMARY KEY, grp int NOT NULL, name text NOT NULL)")
    conn.execute("INSERT INTO pc_items SELECT g, g % 10, 'item-' || g "
                 "FROM generate_series(1, 500) g")
    conn.execute("CREATE TABLE pc_log (conn int, step int, v bigint, PRIMARY KEY (conn, step))")


def pipeline_error(c, i, slow, out):
    """A pipeline whose second part fails, then the connection used again.

    psycopg raises the error as soon as it reads it: at an execute() after the failed statement
    if the error is already there (the later statements are then never sent), else at the
    pipeline's end. A `slow` failing statement takes 10 ms, so the statement after it is sent
    first; otherwise psycopg waits 20 ms before the next execute(), so it reads the error first.
    """
    before = after = None
    try:
        with c.pipeline() as p:
            before = c.execute("SELECT %s::int + 1", (i,))
            p.sync()
            c.execute("INSERT INTO pc_log (conn, step, v) VALUES (%s, %s, %s)",
                      (i, 900, 1))
            if slow:
                c.execute("SELECT 1 / (%s::int - (SELECT count(*) FROM pg_sleep(0.01)))", (1,))
            else:
                c.execute("SELECT 1 / %s::int", (0,))
                time.sleep(0.02)
            after = c.execute("SELECT %s::int + 2", (i,))
    except errors.DivisionByZero:
        out.append("division-by-zero")
    out.append(before.fetchone()[0])
    # Either way the statement after the error gives no result.
    try:
        out.append(f"after the error: {after.fetchone()}" if after else "after the error: none")
    except psycopg.Error:
        out.append("after the error: none")
    # The insert before the error was in the failed implicit transaction.
    out.append(c.execute("SELECT count(*) FROM pc_log WHERE conn = %s AND step = 900",
                         (i,)).fetchone()[0])
    # The connection works again, pipeline and not.
    with c.pipeline():
        again = c.execute("SELECT %s::int + 1", (i,))
    out.append(again.fetchone()[0])
    out.append(c.execute("SELECT 1 / %s::int", (1,)).fetchone()[0])


def run(conns, out):
    n = len(conns)

    # Distinct texts, each repeated, connections in turn (each text on every connection).
    for rep in range(REPEAT):
        for k in range(DISTINCT):
            c = conns[(rep + k) % n]
            out.append(c.execute(f"SELECT %s::int + {k}", (rep * 100,)).fetchone()[0])

    # Shapes against the table, named parameters, and binary results.
    for rep in range(6):
        c = conns[rep % n]
        g = rep % 10
        out.append(c.execute("SELECT count(*), sum(id) FROM pc_items WHERE grp = %(g)s",
                             {"g": g}).fetchone())
        out.append(c.execute("SELECT id, name FROM pc_items WHERE id BETWEEN %s AND %s "
                             "ORDER BY id", (rep * 10 + 1, rep * 10 + 4)).fetchall())
        with c.cursor(binary=True) as cur:
            out.append(cur.execute("SELECT %s::text || '-' || %s::int, %s::float8 * 2",
                                   (f"r{rep}", rep, rep + 0.25)).fetchone())

    # executemany (pipelined by psycopg), on each connection.
    for i, c in enumerate(conns):
        with c.cursor() as cur:
            cur.executemany("INSERT INTO pc_log (conn, step, v) VALUES (%s, %s, %s)",
                            [(i, step, i * 100 + step) for step in range(20)])
            out.append(cur.rowcount)
            cur.executemany("UPDATE pc_log SET v = v + %s WHERE conn = %s AND step = %s "
                            "RETURNING v", [(1000, i, step) for step in range(0, 20, 4)],
                            returning=True)
            returned = []
            while True:
                returned.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
            out.append(returned)

    # Pipeline mode: several statements, answers read after the sync.
    for i, c in enumerate(conns):
        with c.pipeline():
            curs = [c.execute(f"SELECT %s::int * {k}", (i + 1,)) for k in range(5)]
            curs.append(c.execute("SELECT count(*) FROM pc_log WHERE conn = %s", (i,)))
            curs.append(c.execute("SELECT name FROM pc_items WHERE id = %s", (i + 7,)))
        out.append([cur.fetchone()[0] for cur in curs])

    # An error in the middle of a pipeline: later statements are aborted; then recovery.
    # Several rounds: the first prepares the statements, the later ones find them prepared.
    for rnd in range(6):
        for i, c in enumerate(conns):
            pipeline_error(c, rnd * 10 + i, rnd % 2 == 1, out)

    # Transaction blocks: one committed, one rolled back by an error.
    for i, c in enumerate(conns):
        with c.transaction():
            c.execute("INSERT INTO pc_log (conn, step, v) VALUES (%s, %s, %s)", (i, 500, 5))
            c.execute("UPDATE pc_log SET v = v * 2 WHERE conn = %s AND step < %s", (i, 3))
            out.append(c.execute("SELECT sum(v) FROM pc_log WHERE conn = %s", (i,)).fetchone()[0])
            with c.cursor(name=f"cur{i}") as named:
                named.itersize = 7
                named.execute("SELECT g FROM generate_series(1, %s) g", (30 + i,))
                out.append(sum(r[0] for r in named))
        try:
            with c.transaction():
                c.execute("INSERT INTO pc_log (conn, step, v) VALUES (%s, %s, %s)", (i, 600, 6))
                c.execute("INSERT INTO pc_log (conn, step, v) VALUES (%s, %s, %s)", (i, 600, 6))
        except errors.UniqueViolation:
            out.append("unique-violation")
        # After the rollback (and psycopg's DEALLOCATE ALL) statements are prepared anew.
        out.append(c.execute("SELECT count(*) FROM pc_log WHERE conn = %s AND step = 600",
                             (i,)).fetchone()[0])
        out.append(c.execute("SELECT %s::int + 0", (i,)).fetchone()[0])

    # More distinct texts than psycopg keeps prepared: evicted ones are closed.
    for i, c in enumerate(conns):
        evict = 0
        for k in range(EVICT):
            evict += c.execute(f"SELECT %s::int * {k} + 1", (i,)).fetchone()[0]
        out.append(evict)
    for k in range(5):
        out.append(conns[k % n].execute(f"SELECT %s::int + {k}", (1,)).fetchone()[0])

    out.append(conns[0].execute("SELECT count(*), sum(v)::bigint FROM pc_log").fetchone())


def main():
    # psycopg logs a warning when a pipeline ends in the expected errors; keep stderr for real ones.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    new = connect(sys.argv)
    with new() as c:
        setup(c)
    conns = [new() for _ in range(CONNECTIONS)]
    out = []
    try:
        run(conns, out)
    finally:
        for c in conns:
            c.close()
    digest = hashlib.sha256()
    for x in out:
        digest.update(f"{x!r}\n".encode())
    print(f"results: {len(out)}")
    print(f"distinct-text sum: {sum(out[:DISTINCT * REPEAT])}")
    print(f"pc_log rows, sum: {out[-1]}")
    print(f"errors caught: {sum(1 for x in out if x in ('division-by-zero', 'unique-violation'))}")
    print(f"sha256 of all results: {digest.hexdigest()}")


if __name__ == "__main__":
    main()
