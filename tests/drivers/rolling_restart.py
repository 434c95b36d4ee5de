"""Requests through reconnecting connection pools while pgmux replicas restart behind a load
balancer (tests/it/fleet.rs), every request a short transaction, four connections per pool:
- psycopg_pool with its connection check, four workers with no pause between requests (the
  pool checks each connection it hands out: a draining replica answers the check with 57P01);
- asyncpg's pool, two workers pausing 3 s between requests (it checks nothing, but reads
  ahead: a connection resting in the pool sees the replica close it).
Runs for SECS seconds, then prints one line per pool: "<pool> ok=N failed=M", and the first
few errors.

Usage: rolling_restart.py URL SECS   (URL: postgresql://..., which asyncpg wants)
"""
import asyncio
import sys
import threading
import time

import asyncpg
from psycopg_pool import ConnectionPool

DSN, SECS = sys.argv[1], float(sys.argv[2])
WORKERS = 4
ASYNCPG_PAUSE = 3.0


class Tally:
    def __init__(self, name):
        self.name, self.ok, self.failed, self.errors = name, 0, 0, []
        self.lock = threading.Lock()

    def add(self, err=None):
        with self.lock:
            if err is None:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{type(err).__name__}: {err}".replace("\n", " "))

    def report(self):
        print(f"{self.name} ok={self.ok} failed={self.failed}")
        for e in self.errors:
            print(f"  {self.name} error: {e}")


def psycopg_pool_run(end, tally):
    pool = ConnectionPool(
        DSN, min_size=WORKERS, max_size=WORKERS, check=ConnectionPool.check_connection,
        open=True, timeout=30,
    )

    def worker():
        while time.monotonic() < end:
            try:
                with pool.connection() as conn:
                    with conn.transaction():
                        n = conn.execute("SELECT 1 + 1").fetchone()[0]
                        conn.execute("SELECT pg_sleep(0.005)")
                    assert n == 2
                tally.add()
            except Exception as e:  # noqa: BLE001 - every failure counts
                tally.add(e)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()


async def asyncpg_run(end, tally):
    pool = await asyncpg.create_pool(DSN, min_size=WORKERS, max_size=WORKERS)

    async def worker(start):
        await asyncio.sleep(start)
        while time.monotonic() < end:
            try:
                async with pool.acquire() as conn:
                    async with conn.transaction():
                        n = await conn.fetchval("SELECT 1 + 1")
                        await conn.execute("SELECT pg_sleep(0.005)")
                    assert n == 2
                tally.add()
            except Exception as e:  # noqa: BLE001
                tally.add(e)
            await asyncio.sleep(ASYNCPG_PAUSE)

    await asyncio.gather(worker(0), worker(ASYNCPG_PAUSE / 2))
    await pool.close()


def main():
    end = time.monotonic() + SECS
    psy, apg = Tally("psycopg_pool"), Tally("asyncpg")
    t = threading.Thread(target=psycopg_pool_run, args=(end, psy))
    t.start()
    asyncio.run(asyncpg_run(end, apg))
    t.join()
    psy.report()
    apg.report()


if __name__ == "__main__":
    main()
