"""LISTEN/NOTIFY through psycopg 3 (conn.notifies()) and asyncpg (add_listener): six
listeners of each on two channels, a notifier sending NOTIFY and pg_notify (one of them in a
transaction that rolls back), the asyncpg listeners running queries meanwhile. Prints what each
listener received, for comparison with a direct run: through a transaction pooler that
does not serve LISTEN, nothing (or the wrong client's) arrives.

Usage: listen_notify.py HOST PORT USER PASSWORD DBNAME
"""
import asyncio
import sys
import threading

import asyncpg
import psycopg

host, port, user, password, dbname = sys.argv[1:6]
conninfo = f"host={host} port={port} user={user} password={password} dbname={dbname}"
N = 6


def notify_all(execute):
    """The notifications every listener expects, then 'end' on both channels."""
    for k in range(10):
        execute(f"NOTIFY chan_a, 'a{k}'")
        execute(f"SELECT pg_notify('chan_b', 'b{k}')")
    execute("BEGIN; NOTIFY chan_a, 'rolled back'; ROLLBACK")
    execute("NOTIFY chan_a, 'end'; NOTIFY chan_b, 'end'")


def psycopg_part():
    got = {}
    conns = []
    for i in range(N):
        c = psycopg.connect(conninfo, autocommit=True)
        c.execute(f"LISTEN chan_{'ab'[i % 2]}")
        conns.append(c)

    def listen(i, c):
        got[i] = []
        for n in c.notifies(timeout=15):
            got[i].append(f"{n.channel}:{n.payload}")
            if n.payload == "end":
                break

    threads = [threading.Thread(target=listen, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    with psycopg.connect(conninfo, autocommit=True) as n:
        notify_all(n.execute)
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    for i in range(N):
        print(f"psycopg listener {i}: {' '.join(got[i])}")


async def asyncpg_part():
    got = {i: [] for i in range(N)}
    ends = {i: asyncio.Event() for i in range(N)}
    conns = []

    def callback(i):
        def on(conn, pid, channel, payload):
            got[i].append(f"{channel}:{payload}")
            if payload == "end":
                ends[i].set()
        return on

    for i in range(N):
        c = await asyncpg.connect(host=host, port=int(port), user=user, password=password,
                                  database=dbname)
        await c.add_listener(f"chan_{'ab'[i % 2]}", callback(i))
        conns.append(c)
    n = await asyncpg.connect(host=host, port=int(port), user=user, password=password,
                              database=dbname)

    async def busy(c):
        for _ in range(20):
            assert await c.fetchval("SELECT 1") == 1

    async def notifier():
        for k in range(10):
            await n.execute(f"NOTIFY chan_a, 'a{k}'")
            await n.execute(f"SELECT pg_notify('chan_b', 'b{k}')")
        await n.execute("BEGIN; NOTIFY chan_a, 'rolled back'; ROLLBACK")
        await n.execute("NOTIFY chan_a, 'end'; NOTIFY chan_b, 'end'")

    await asyncio.gather(notifier(), *(busy(c) for c in conns))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ends.values())), 15)
    for c in conns:
        await c.close()
    await n.close()
    for i in range(N):
        print(f"asyncpg listener {i}: {' '.join(got[i])}")


psycopg_part()
asyncio.run(asyncpg_part())
