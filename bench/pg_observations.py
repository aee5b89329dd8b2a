"""The IMEI-IMSI observation log in PostgreSQL (``[state] backend = "postgresql"``): how many
pairs per second its writer keeps up with (not a test; prints figures). Target: 10,000 fresh
pairs per second from one gateway, with room to spare.

Method: a throwaway PostgreSQL on a free loopback port (tests/postgres_server.py), with fsync
and synchronous_commit on (as in production; one commit per batch), or ``--dsn``.

* Writer capacity: :class:`gateway.pg.observations.PgObservationLog`'s batch write (the writer
  thread's ``_write``), called back to back on aggregates of ``--batch`` pairs, first with
  ``--pairs`` pairs never seen (INSERT), then the same pairs again (ON CONFLICT DO UPDATE):
  pairs per second (wall), this process's CPU and PostgreSQL's (postmaster and backends) per
  pair.
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

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from pg_lists import postgres, server_cpu  # noqa: E402

from gateway.observations import Aggregate  # noqa: E402
from gateway.pg.observations import PgObservationLog  # noqa: E402

BASE = 35209900000000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dsn", help="an existing, empty database (default: a throwaway one)")
    args = parser.parse_args()
    print(f"# Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    settings = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                "shared_buffers": "256MB"}
    with postgres(args.dsn, settings) as (dsn, pid):
        capacity(dsn, args.pairs, args.batch, pid)
        paced(dsn, args.rate, args.seconds, args.batch, pid)


def _aggregates(first: int, count: int, batch: int, seen: float) -> list[Aggregate]:
    return [{(str(BASE + n), f"00101{n:010d}"): (seen, seen, 1)
             for n in range(start, min(first + count, start + batch))}
            for start in range(first, first + count, batch)]


def capacity(dsn: str, pairs: int, batch: int, pid: int | None) -> None:
    log = PgObservationLog(dsn)
    log._open()
    try:
        for label, seen in (("fresh pairs (INSERT)", 1.0), ("seen again (ON CONFLICT UPDATE)", 2.0)):
            aggregates = _aggregates(0, pairs, batch, seen)
            wall, cpu, sql = time.perf_counter(), time.process_time(), server_cpu(pid)
            for aggregate in aggregates:
                assert log._write([aggregate]) == len(aggregate), "a write was refused"
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            sql = server_cpu(pid) - sql
            print(f"writer, {label}, {batch:,} per transaction: {pairs / wall:,.0f} pairs/s; "
                  f"client CPU {cpu / pairs * 1e6:.1f} µs/pair"
                  + (f", PostgreSQL CPU {sql / pairs * 1e6:.1f} µs/pair" if pid else ""))
    finally:
        log._close_store()


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
