"""A real ``eir-gateway run --workers N`` serving PostgreSQL state of whatever size the database
holds (not a test; prints figures): start-up, each worker's memory, a list change reaching
every worker, and checks answered from the lists.

Method: the embedded config with ``[state] backend = "postgresql"``, ``dsn`` the database given
(loaded beforehand, e.g. by ``bench/pg_lists.py --dsn DSN --entries 100000000``, whose exact
IMEIs are every 7th body from 35209900000000), ``lists.shared_snapshot`` on, a fresh state
directory (so the first worker writes the snapshot file and the others map it), loopback
ports. Figures:

* start-up: from the supervisor's spawn to its "N workers serving" line, and to each
  worker's "ready" line;
* memory: ``RssAnon`` (the worker's own) and ``RssFile`` (mapped file pages, which the page
  cache holds once for every worker) of the supervisor and each worker, after the checks
  (a worker's ``RssFile`` counts only the pages its look-ups have touched);
* a list change: one exact IMEI written by another process (``PgListStore.put``), then each
  worker's own ``/metrics`` read every 5 ms until its ``eir_lists_version`` shows the new
  version; ``--changes`` times, each figure the time to the last worker;
* a worker killed with SIGKILL: the time until its successor is ready (it maps the file);
* checks: ``--checks`` MICRs over 16 MME connections (spread over the workers), of IMEIs on
  the list and beside it, each answer's Equipment-Status checked.

Run: ``.venv/bin/python bench/pg_gateway.py --dsn postgresql://eir@127.0.0.1:PORT/DB``; stops
the gateway with SIGTERM at the end and removes its state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from gateway.lists import EntryKind, ListColour, ListEntry  # noqa: E402
from gateway.pg.database import Database  # noqa: E402
from gateway.pg.lists import PgListStore  # noqa: E402
from tests.e2e.test_workers import connect, scrape, value  # noqa: E402

BASE = 35209900000000
STEP = 7
WHITELISTED, BLACKLISTED = 0, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="a database holding the lists")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--checks", type=int, default=2_000)
    parser.add_argument("--start-timeout", type=float, default=900.0)
    args = parser.parse_args()
    print(f"# Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    store = PgListStore(Database(args.dsn))
    try:
        counts = store.db.run(lambda c: c.fetchval(
            "SELECT count(*) FROM entries WHERE kind = 'imei' AND colour = 'black'"))
        print(f"black exact IMEIs in the database: {counts:,}", flush=True)
        with tempfile.TemporaryDirectory(prefix="eir-pg-gateway-") as directory:
            run(Path(directory), args, store, int(counts))
    finally:
        store.close()


def run(directory: Path, args: argparse.Namespace, store: PgListStore, listed: int) -> None:
    for name in ("gateway.toml", "tac-sample.txt", "lists-sample.csv",
                 "registry-declarations.json"):
        shutil.copy(ROOT / "config" / name, directory / name)
    env = dict(os.environ, EIR_DIAMETER_LISTEN="tcp://127.0.0.1:0",
               EIR_METRICS_LISTEN="127.0.0.1:0", EIR_N5G_EIR_LISTEN="http://127.0.0.1:0",
               EIR_STATE_DIRECTORY=str(directory / "var"), EIR_STATE_BACKEND="postgresql",
               EIR_STATE_DSN=args.dsn, EIR_LISTS_SHARED_SNAPSHOT="true",
               # The bench list spans TACs the sample TAC database and registry do not know:
               # the lists alone decide.
               EIR_REGISTRY_BACKEND="none", EIR_POLICY_STATUS_TAC_UNKNOWN="WHITELISTED")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(directory / "gateway.toml"),
         "--workers", str(args.workers)], cwd=directory, env=env, stderr=subprocess.PIPE,
        text=True)
    log = Log(process, started)
    try:
        serving = log.wait_for(rf"{args.workers} workers serving S13 on tcp://127\.0\.0\.1:(\d+)",
                               args.start_timeout)
        ready = {int(m.group(1)): (int(m.group(2)), m.group(3), at) for m, at in log.all(
            r"worker (\d+) \(pid (\d+)\) ready; its own metrics on (\S+)")}
        print(f"start-up: every worker serving after {serving[1]:.1f} s; workers ready at "
              + ", ".join(f"{at:.1f} s" for _, _, at in sorted(ready.values())), flush=True)
        asyncio.run(serve(int(serving[0].group(1)), ready, args, store, listed, process.pid))
        # A worker killed and restarted maps the file of the current version again.
        pid = ready[0][0]
        killed = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        pattern = r"worker 0 \(pid (\d+)\) ready"
        while len(log.all(pattern)) < 2:
            if time.perf_counter() - killed > args.start_timeout or process.poll() is not None:
                raise SystemExit("worker 0 was not restarted:\n" + "".join(log.lines[-40:]))
            time.sleep(0.01)
        again = int(log.all(pattern)[1][0].group(1))
        print(f"worker 0 killed (SIGKILL) and ready again after "
              f"{time.perf_counter() - killed:.2f} s; then {memory(again)}", flush=True)
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        files = sorted((directory / "var").glob("lists-*.imeis"))
        print("snapshot files at the end: " + ", ".join(
            f"{p.name} {p.stat().st_size / 2**20:,.0f} MiB" for p in files), flush=True)
        errors = [line for line in log.lines if "Traceback" in line or " ERROR " in line]
        if errors:
            print("errors in the gateway's log:\n" + "".join(errors[:20]))


async def serve(port: int, ready: dict[int, tuple[int, str, float]], args: argparse.Namespace,
                store: PgListStore, listed: int, supervisor: int) -> None:
    mmes = [await connect(port, f"mme{i}.bench") for i in range(16)]
    try:
        wrong: Counter[tuple[int, object]] = Counter()
        wall = time.perf_counter()
        for i in range(args.checks):
            k = (i * 7_919_993) % max(listed, 1)
            body = BASE + k * STEP + (i % 2)  # on the list, or the body after it (not listed)
            answer = await mmes[i % len(mmes)].check(str(body), sv="01")
            expected = BLACKLISTED if i % 2 == 0 and listed else WHITELISTED
            got = answer.get("Equipment-Status")
            if got != expected:
                wrong[(expected, got)] += 1
        wall = time.perf_counter() - wall
        print(f"checks: {args.checks:,} over 16 connections, one at a time, {wall:.1f} s; "
              f"unexpected Equipment-Status (expected, got): {dict(wrong) or 'none'}", flush=True)
        for name, pid in [("supervisor", supervisor)] + [
                (f"worker {w}", p) for w, (p, _, _) in sorted(ready.items())]:
            print(f"{name}: {memory(pid)}", flush=True)
        async with aiohttp.ClientSession() as session:
            delays = []
            for n in range(args.changes):
                entry = ListEntry(ListColour.BLACK, EntryKind.IMEI, BASE + 3 + n * STEP,
                                  BASE + 3 + n * STEP, reason="bench")
                wall = time.perf_counter()
                await asyncio.to_thread(store.put, entry, "bench")
                version = await asyncio.to_thread(store.version)
                pending = {url for _, url, _ in ready.values()}
                while pending:
                    for url in list(pending):
                        samples = await scrape(session, url)
                        if value(samples, "eir_lists_version") >= version:
                            pending.discard(url)
                    await asyncio.sleep(0.005)
                delays.append(time.perf_counter() - wall)
                await asyncio.sleep(0.5)
            print("a list change reaching every worker: "
                  + ", ".join(f"{d * 1e3:.0f}" for d in delays) + " ms", flush=True)
            for n in range(args.changes):
                await asyncio.to_thread(store.delete, ListEntry(
                    ListColour.BLACK, EntryKind.IMEI, BASE + 3 + n * STEP, BASE + 3 + n * STEP),
                    "bench")
    finally:
        for mme in mmes:
            await mme.close()


def memory(pid: int) -> str:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if line.startswith(("VmRSS", "RssAnon", "RssFile")))
    return ", ".join(f"{k} {int(v.split()[0]) / 1024:,.0f} MiB" for k, v in fields.items())


class Log:
    """The supervisor's stderr, read by a thread; each line with its time since the start."""

    def __init__(self, process: subprocess.Popen[str], started: float) -> None:
        self.process = process
        self.started = started
        self.lines: list[str] = []
        self.times: list[float] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.times.append(time.perf_counter() - self.started)
            self.lines.append(line)

    def all(self, pattern: str) -> list[tuple[re.Match[str], float]]:
        out = []
        for line, at in zip(list(self.lines), list(self.times), strict=False):
            found = re.search(pattern, line)
            if found:
                out.append((found, at))
        return out

    def wait_for(self, pattern: str, timeout: float) -> tuple[re.Match[str], float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.all(pattern)
            if found:
                return found[0]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"no {pattern!r} in the gateway's log:\n{''.join(self.lines[-40:])}")


if __name__ == "__main__":
    main()
