"""Issue 11: a psycopg 3 client runs COPY FROM STDIN with cursor.execute (psycopg refuses it and
leaves the server in COPY IN), then closes its connection. A new connection must then lock the
table at once, as it does directly against Postgres.

Usage: psycopg_copy_abandon.py HOST PORT USER PASSWORD DBNAME   (prints what it saw; exit 1 if
the lock cannot be taken within 5 s)
"""
import sys
import time

import psycopg

host, port, user, password, dbname = sys.argv[1:6]
dsn = f"host={host} port={port} user={user} password={password} dbname={dbname}"

with psycopg.connect(dsn, autocommit=True) as c:
    c.execute("CREATE TABLE IF NOT EXISTS copy_abandon (a int)")

for round_ in range(3):
    conn = psycopg.connect(dsn)
    cur = conn.cursor()
    try:
        cur.execute("COPY copy_abandon FROM STDIN")
        print("COPY via execute was accepted?")
    except psycopg.ProgrammingError as e:
        print(f"round {round_}: ProgrammingError: {e}")
    conn.close()

    c = psycopg.connect(dsn)
    c.execute("SET lock_timeout = '5s'")
    start = time.time()
    try:
        c.execute("LOCK TABLE copy_abandon")
        c.commit()
        print(f"round {round_}: lock taken")
    except psycopg.Error as e:
        print(f"round {round_}: lock not taken after {time.time() - start:.1f} s: {e}")
        sys.exit(1)
    finally:
        c.close()
