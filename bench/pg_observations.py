"""The IMEI-IMSI observation log in PostgreSQL (``[state] backend = "postgresql"``): how many
pairs per second its writer keeps up with (not a test; prints figures). Target: 10,000 fresh
pairs per second from one gateway, with room to spare.

Method: a throwaway PostgreSQL on a free loopback port (tests/postgres_server.py), with fsync
and synchronous_commit on (as in production; one commit per batch), or ``--dsn``.

* Writer capacity: batches of ``--batch`` pairs written back to back, first ``--pairs`` pairs
  never seen (INSERT), then the same pairs again (ON CONFLICT DO UPDATE): pairs per second
  (wall), this process's CPU and PostgreSQL's (postmaster and backends) per pair; for each of
  ``--methods``: ``unnest`` (shipped, gateway.pg.observations.upsert: one statement, the rows
  as five arrays), ``rows`` (the statement per row through ``executemany``, as before session
  9) and ``copy`` (COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT).
  Each method on a fresh database.
* The log as the gateway runs it: an event loop records ``--rate`` fresh pairs per second
  (every millisecond its share) for ``--seconds``, the writer thread writing meanwhile;
  written, dropped, the most pairs waiting, and how long the last were waiting after the
  recording stopped.

Run: ``.venv/bin/python bench/pg_observations.py`` (needs PostgreSQL, Debian postgresql, and
asyncpg).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import asyncpg  # noqa: E402
from pg_lists import postgres, server_cpu  # noqa: E402

from gateway.observations import Aggregate  # noqa: E402
from gateway.pg.database import Database  # noqa: E402
from gateway.pg.observations import PgObservationLog, upsert  # noqa: E402

BASE = 35209900000000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dsn", help="an existing server's database, whose user may create "
                        "databases (default: a throwaway server)")
    parser.add_argument("--methods", default="unnest,rows,copy",
                        help="batch statements to compare (unnest, rows, copy)")
    parser.add_argument("--no-paced", action="store_true", help="the capacity figures only")
    args = parser.parse_args()
    print(f"# Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    settings = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                "shared_buffers": "256MB"}
    with postgres(args.dsn, settings) as (dsn, pid):
        capacity(dsn, args.pairs, args.batch, pid, args.methods.split(","))
        if not args.no_paced:
            paced(_fresh_database(dsn), args.rate, args.seconds, args.batch, pid)


def _aggregates(first: int, count: int, batch: int, seen: float) -> list[Aggregate]:
    return [{(str(BASE + n), f"00101{n:010d}"): (seen, seen, 1)
             for n in range(start, min(first + count, start + batch))}
            for start in range(first, first + count, batch)]


_ROW_UPSERT = """
INSERT INTO observations (imei, imsi, first_seen, last_seen, count) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (imei, imsi) DO UPDATE SET
    first_seen = LEAST(observations.first_seen, excluded.first_seen),
    last_seen = GREATEST(observations.last_seen, excluded.last_seen),
    count = observations.count + excluded.count
"""
_FROM_TEMPORARY = """
INSERT INTO observations AS o (imei, imsi, first_seen, last_seen, count)
SELECT imei, imsi, min(first_seen), max(last_seen), sum(count) FROM incoming GROUP BY imei, imsi
ON CONFLICT (imei, imsi) DO UPDATE SET
    first_seen = LEAST(o.first_seen, excluded.first_seen),
    last_seen = GREATEST(o.last_seen, excluded.last_seen),
    count = o.count + excluded.count
"""


def _write(method: str, db: Database, aggregate: Aggregate) -> None:
    rows = [(imei, imsi, a[0], a[1], a[2]) for (imei, imsi), a in aggregate.items()]
    if method == "unnest":
        upsert(db, rows)
    elif method == "rows":
        db.run(lambda conn: conn.executemany(_ROW_UPSERT, rows))
    else:
        async def copied(conn: Any) -> None:
            await conn.execute("CREATE TEMPORARY TABLE IF NOT EXISTS incoming (imei text, "
                               "imsi text, first_seen float8, last_seen float8, count bigint) "
                               "ON COMMIT DELETE ROWS")
            await conn.copy_records_to_table("incoming", records=rows)
            await conn.execute(_FROM_TEMPORARY)

        db.run(copied)


def capacity(server: str, pairs: int, batch: int, pid: int | None, methods: list[str]) -> None:
    for method in methods:
        dsn = _fresh_database(server)
        db = Database(dsn, max_connections=1)
        try:
            for label, seen in (("fresh pairs (INSERT)", 1.0), ("seen again (UPDATE)", 2.0)):
                aggregates = _aggregates(0, pairs, batch, seen)
                wall, cpu, sql = time.perf_counter(), time.process_time(), server_cpu(pid)
                for aggregate in aggregates:
                    _write(method, db, aggregate)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                sql = server_cpu(pid) - sql
                print(f"{method:6} {label}, {batch:,} per transaction: {pairs / wall:,.0f} "
                      f"pairs/s; client CPU {cpu / pairs * 1e6:.1f} µs/pair"
                      + (f", PostgreSQL CPU {sql / pairs * 1e6:.1f} µs/pair" if pid else ""))
            count = db.run(lambda conn: conn.fetchval("SELECT sum(count) FROM observations"))
            assert count == 2 * pairs, f"{method}: {count} observations stored"
        finally:
            db.close()


def _fresh_database(dsn: str) -> str:
    """A new database on the server of ``dsn`` (each method starts from an empty table)."""
    name = f"bench_{time.monotonic_ns()}"

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(create())
    return dsn.rsplit("/", 1)[0] + "/" + name


def paced(dsn: str, rate: int, seconds: float, batch: int, pid: int | None) -> None:
    log = PgObservationLog(dsn, batch_size=batch)

    async def record() -> tuple[int, float]:
        log.start()
        most = 0
        started = time.monotonic()
        sent = 0
        n = 10_000_000  # above capacity()'s pairs: fresh
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                log.record(str(BASE + n + sent), f"00101{n + sent:010d}")
                sent += 1
            most = max(most, log.waiting)
            await asyncio.sleep(0.001)
        stopped = time.monotonic()
        log._hand_over()
        while log.waiting and time.monotonic() - stopped < 60:
            await asyncio.sleep(0.01)
        return most, time.monotonic() - stopped

    cpu, sql = time.process_time(), server_cpu(pid)
    most, drained = asyncio.run(record())
    cpu, sql = time.process_time() - cpu, server_cpu(pid) - sql
    stats = log.stats
    log.close()
    print(f"log at {rate:,} fresh pairs/s for {seconds:g} s: recorded {stats.recorded:,}, "
          f"written {stats.written:,}, dropped {stats.dropped:,}, errors {stats.errors}; "
          f"at most {most:,} waiting; the last written {drained:.2f} s after recording stopped; "
          f"process CPU {cpu / seconds * 100:.0f} % of a core"
          + (f", PostgreSQL {sql / seconds * 100:.0f} %" if pid else ""))


if __name__ == "__main__":
    main()
