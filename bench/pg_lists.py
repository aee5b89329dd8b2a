"""Operator lists in PostgreSQL at scale (not a test; prints figures): how far toward 100 million
entries, and what a worker pays per entry.

Method: a throwaway PostgreSQL on a free loopback port (tests/postgres_server.py: initdb +
postgres, fsync and synchronous_commit off: the load is CPU- and disk-bandwidth-bound here, not
bound by WAL flushes), or ``--dsn`` of an existing one. ``--entries`` exact IMEIs (one colour)
are loaded in one transaction through ``PgListStore.bulk_add_imeis`` (COPY into a staging
table, then one INSERT ... ON CONFLICT into ``entries``); then:

* COPY rate (entries per second, wall and this process's CPU) and the database's size per
  entry (``pg_total_relation_size('entries')``: heap and primary key);
* a worker's full load (``PgListStore.load``: binary COPY TO of the sorted IMEIs straight
  into an ``array('Q')``): entries per second, and the snapshot's memory per entry (the
  array's buffer, plus what tracemalloc sees allocated beside it);
* the same with ``lists.shared_snapshot`` (the IMEIs written once to a file of the state
  directory, then mapped): the first worker's load (writes the file), then ``--workers``
  worker processes each loading (mapping) it and looking up 200,000 IMEIs, with each one's
  resident memory (``VmRSS``: its own ``RssAnon`` and the mapped file's ``RssFile``, which
  the page cache holds once for all of them), against a worker holding the array itself;
* one list change brought to a worker (``OperatorLists.poll``: read the version and the
  change rows, apply them to the snapshot) vs that full load;
* the hot-path lookup (``ListSnapshot.match``) on 200,000 IMEIs, one in seven listed, with no
  overlay and with 1,000 changed IMEIs in the overlay.

Run: ``.venv/bin/python bench/pg_lists.py --entries 10000000`` (needs PostgreSQL, Debian
postgresql, and asyncpg); ``df -h`` first: the table takes about 100 bytes per entry.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.list_lookup import look_ups  # noqa: E402
from gateway.lists import EntryKind, ListColour, ListEntry, OperatorLists  # noqa: E402
from gateway.pg.database import Database  # noqa: E402
from gateway.pg.lists import PgListStore  # noqa: E402
from tests.postgres_server import PostgresServer, _binaries  # noqa: E402

BASE = 35209900000000
STEP = 7  # listed IMEIs are every 7th body: one lookup in seven below finds one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dsn", help="an existing, empty database (default: a throwaway one)")
    parser.add_argument("--workers", type=int, default=2, help="processes mapping the file")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # DSN DIRECTORY shared?
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    print(f"# Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    # Sized for a bulk load, as a production server would be (the tests' is tiny).
    with postgres(args.dsn, {"shared_buffers": "2GB", "maintenance_work_mem": "1GB",
                             "work_mem": "256MB", "max_wal_size": "16GB",
                             "checkpoint_timeout": "30min"}) as (dsn, pid):
        run(dsn, args.entries, pid, args.workers)


@contextlib.contextmanager
def postgres(dsn: str | None, settings: dict[str, str]) -> Iterator[tuple[str, int | None]]:
    """(DSN, postmaster pid): ``dsn`` as given (pid None), or a throwaway server with
    ``settings`` on a free loopback port, removed afterwards."""
    if dsn is not None:
        yield dsn, None
        return
    binaries = _binaries()
    if binaries is None:
        sys.exit("PostgreSQL is not installed (Debian postgresql), or give --dsn")
    directory = Path(tempfile.mkdtemp(prefix="eir-pg-bench-", dir=os.environ.get("TMPDIR")))
    server = PostgresServer(*binaries, directory, settings)
    try:
        server.start()
        assert server.process is not None
        yield server.dsn(), server.process.pid
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def server_cpu(pid: int | None) -> float:
    """CPU seconds of the postmaster and its backends (live and reaped); 0 without a server."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")

    def fields(p: int) -> list[str]:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    total = sum(int(x) for x in fields(pid)[11:15])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                f = fields(int(entry))
            except OSError:
                continue
            if int(f[1]) == pid:
                total += int(f[11]) + int(f[12])
    return total / tick


def run(dsn: str, n: int, pid: int | None, workers: int) -> None:
    store = PgListStore(Database(dsn))
    try:
        bodies = range(BASE, BASE + n * STEP, STEP)
        wall, cpu, sql = time.perf_counter(), time.process_time(), server_cpu(pid)
        store.bulk_add_imeis(ListColour.BLACK, bodies, "bench")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sql = server_cpu(pid) - sql
        size = store.db.run(lambda c: c.fetchval("SELECT pg_total_relation_size('entries')"))
        print(f"COPY load of {n:,} entries: {wall:.1f} s, {n / wall:,.0f} entries/s; "
              f"client CPU {cpu:.1f} s ({n / max(cpu, 1e-9):,.0f} entries per CPU-second)"
              + (f", server CPU {sql:.1f} s ({n / max(sql, 1e-9):,.0f} entries per CPU-second)"
                 if pid else ""))
        print(f"PostgreSQL table + primary key: {size / 2**20:,.0f} MiB, "
              f"{size / n:.0f} bytes per entry")

        tracemalloc.start()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        wall, cpu, sql = time.perf_counter(), time.process_time(), server_cpu(pid)
        snapshot = store.load()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sql = server_cpu(pid) - sql
        traced, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        counted = snapshot.counts()["black.imei"]
        assert counted == n, (counted, n)
        print(f"full load into a snapshot: {wall:.1f} s, {n / wall:,.0f} entries/s; client CPU "
              f"{cpu:.1f} s, server CPU {sql:.1f} s; memory {traced / n:.1f} bytes per entry "
              f"(tracemalloc), peak RSS grew {(rss1 - rss0) / 1024:,.0f} MiB")

        shared_load(dsn, n, pid, workers)

        lists = OperatorLists(store)
        lists.snapshot = snapshot
        entry = ListEntry(ListColour.BLACK, EntryKind.IMEI, BASE + 1, BASE + 1)
        store.put(entry, "bench")
        wall = time.perf_counter()
        assert lists.poll()
        wall = time.perf_counter() - wall
        assert lists.snapshot.match(BASE + 1)
        print(f"one change brought to the worker (poll: version, change rows, apply): "
              f"{wall * 1e3:.1f} ms")

        rng = random.Random(1)
        probes = [BASE + rng.randrange(n * STEP) for _ in range(200_000)]
        for label, snap in (("no overlay", snapshot), ("1,000 IMEIs in the overlay",
                                                      _with_overlay(snapshot, 1_000))):
            # CPU time, the least of 5 passes: the figure a loaded machine moves least.
            cpu, hits = min(look_ups(snap.match, probes) for _ in range(5))
            print(f"lookup, {label}: {cpu / len(probes) * 1e9:,.0f} ns of CPU per IMEI "
                  f"(least of 5 passes; {hits:,} of {len(probes):,} listed)")
    finally:
        store.close()


def shared_load(dsn: str, n: int, pid: int | None, workers: int) -> None:
    """The full load through a snapshot file, then ``workers`` processes mapping it."""
    with tempfile.TemporaryDirectory(prefix="eir-snapshot-") as directory:
        shared = PgListStore(Database(dsn), Path(directory))
        try:
            wall, cpu, sql = time.perf_counter(), time.process_time(), server_cpu(pid)
            snapshot = shared.load()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            sql = server_cpu(pid) - sql
            assert snapshot.counts()["black.imei"] == n
            size = sum(p.stat().st_size for p in Path(directory).glob("*.imeis"))
            print(f"shared snapshot, first worker (writes the file, {size / 2**20:,.0f} MiB): "
                  f"{wall:.1f} s, {n / wall:,.0f} entries/s; client CPU {cpu:.1f} s, "
                  f"server CPU {sql:.1f} s")
            for mode in ("shared", "own"):
                processes = [
                    subprocess.Popen([sys.executable, __file__, "--worker", dsn, directory,
                                      mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
                    for _ in range(workers if mode == "shared" else 1)
                ]
                lines = [p.stdout.readline().strip() for p in processes if p.stdout]
                for p in processes:
                    p.communicate("\n", timeout=600)
                label = (f"{workers} workers mapping the file" if mode == "shared"
                         else "a worker holding its own array")
                print(f"{label}: " + "; ".join(lines))
        finally:
            shared.close()


def worker(dsn: str, directory: str, mode: str) -> None:
    """One worker process: load (map the file, or read its own array), look up, report its
    memory, wait for the parent (so that the others map the file at the same time)."""
    store = PgListStore(Database(dsn), Path(directory) if mode == "shared" else None)
    try:
        wall = time.perf_counter()
        snapshot = store.load()
        wall = time.perf_counter() - wall
        rng = random.Random(os.getpid())
        n = snapshot.counts()["black.imei"]
        probes = [BASE + rng.randrange(n * STEP) for _ in range(200_000)]
        cpu, _ = look_ups(snapshot.match, probes)
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                      .splitlines() if line.startswith(("VmRSS", "RssAnon", "RssFile")))
        print(f"load {wall:.2f} s, lookup {cpu / len(probes) * 1e9:,.0f} ns, "
              + ", ".join(f"{k} {int(v.split()[0]) / 1024:,.0f} MiB" for k, v in status.items()),
              flush=True)
        sys.stdin.readline()
    finally:
        store.close()


def _with_overlay(snapshot: object, count: int) -> object:
    from gateway.lists import ListChange, ListSnapshot

    assert isinstance(snapshot, ListSnapshot)
    changes = [ListChange(snapshot.version + 1,
                          ListEntry(ListColour.BLACK, EntryKind.IMEI, BASE + 1 + i * STEP * 3,
                                    BASE + 1 + i * STEP * 3)) for i in range(count)]
    applied = snapshot.apply(changes)
    assert applied is not None
    return applied


if __name__ == "__main__":
    main()
