"""What the observation log's writer costs the event loop: a writer thread vs a writer process.

Method.

* One process, one event loop (uvloop when installed, as the gateway), pinned to one CPU
  (``--cpu``, default 1) as bench/e2e.py pins the gateway; a writer process inherits the pin
  unless ``--unpinned-writer`` (a production gateway is not pinned: its writer may use another
  core).
* The loop records ``--rate`` fresh (IMEI, IMSI) pairs per second (every pair new, as real
  traffic's first sightings are) in ticks of 1 ms, for ``--seconds``, through
  ``ObservationLog`` (writer thread, niceness 19) and ``ObservationProcessLog`` (writer
  process, niceness 19), alternating ``--rounds`` times, each round on a fresh database. The
  loop does nothing else: what it measures is the writer's doing (and the machine's).
* Each tick's lag (how late the 1 ms timer fired) is split with the loop thread's
  ``/proc/self/task/TID/schedstat`` over the interval: its own CPU, its time runnable but not
  running (another thread or process had the core) and the rest, time it slept while late:
  waiting for the GIL (nothing else makes a loop thread with an overdue timer sleep).

Printed per round: lag p50 / p99 / p99.9 / max, and over the ticks later than 1 ms: the total
lag, of which own CPU, run-queue wait and sleep (GIL); pairs written and dropped.

``--shared-file N`` measures instead whether the workers of ``--workers N`` should each have a
writer or share one: N writer processes writing ``--pairs`` fresh pairs between them into one
SQLite file (WAL: one writer at a time), against one writer writing them all, unpinned.

Run: ``.venv/bin/python bench/observation_writer.py [--rate 10000] [--seconds 10] [--rounds 2]
[--unpinned-writer] [--shared-file N [--pairs 200000]] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.observation_process import ObservationProcessLog  # noqa: E402
from gateway.observations import ObservationLog  # noqa: E402

TICK = 0.001  # seconds
LATE = 0.001  # a tick this late (beyond TICK) counts in the split


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def one_round(kind: str, rate: float, seconds: float, unpinned_writer: bool,
                    first_imei: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="obs-bench-") as tmp:
        db = Path(tmp) / "observations.sqlite"
        log = ObservationLog(db) if kind == "thread" else ObservationProcessLog(db)
        log.start(loop)
        process = getattr(log, "_process", None)
        if unpinned_writer and process is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(process.pid, range(os.cpu_count() or 1))
        await asyncio.sleep(0.2)  # attached, warm
        schedstat = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat",
                            os.O_RDONLY)

        def waited() -> float:
            return int(os.pread(schedstat, 128, 0).split()[1]) / 1e9

        ticks: list[tuple[float, float, float]] = []  # (lag, own CPU, run-queue wait)
        done = asyncio.Event()
        state = {"owed": 0.0, "imei": first_imei, "cpu": time.thread_time(), "wait": waited(),
                 "last": time.perf_counter()}
        end = time.perf_counter() + seconds

        def tick(due: float) -> None:
            now = time.perf_counter()
            cpu, wait = time.thread_time(), waited()
            ticks.append((now - due, cpu - state["cpu"], wait - state["wait"]))
            # Pairs owed since the last tick: a late tick records what the lost time owes.
            state["owed"] += rate * (now - state["last"])
            state["last"] = now
            while state["owed"] >= 1:
                imei = int(state["imei"])
                log.record(f"{imei:014d}", f"001010{imei:09d}", now=time.time())
                state["imei"] += 1
                state["owed"] -= 1
            state["cpu"], state["wait"] = time.thread_time(), waited()
            if now >= end:
                done.set()
                return
            loop.call_at(loop.time() + TICK, tick, time.perf_counter() + TICK)

        loop.call_at(loop.time() + TICK, tick, time.perf_counter() + TICK)
        await done.wait()
        os.close(schedstat)
        started = time.perf_counter()
        await asyncio.to_thread(log.close)
        close_s = time.perf_counter() - started
    lags = [lag for lag, _, _ in ticks]
    late = [(lag, cpu, wait) for lag, cpu, wait in ticks if lag > LATE]
    late_ms = sum(lag for lag, _, _ in late) * 1e3
    cpu_ms = sum(min(cpu, lag) for lag, cpu, _ in late) * 1e3
    wait_ms = sum(min(wait, lag) for lag, _, wait in late) * 1e3
    return {
        "writer": kind,
        "pairs": int(state["imei"]) - first_imei,
        "written": log.stats.written,
        "dropped": log.stats.dropped,
        "lag_ms": {
            "p50": percentile(lags, 0.5) * 1e3, "p99": percentile(lags, 0.99) * 1e3,
            "p99.9": percentile(lags, 0.999) * 1e3, "max": max(lags, default=0.0) * 1e3,
        },
        "late_ticks": len(late),
        "late_ms": late_ms,
        "late_own_cpu_ms": cpu_ms,
        "late_run_queue_ms": wait_ms,
        "late_sleeping_ms": max(0.0, late_ms - cpu_ms - wait_ms),
        "close_s": close_s,
    }


async def shared_file(writers: int, pairs: int, first_imei: int) -> float:
    """Seconds for ``writers`` writer processes (one per gateway worker) to write ``pairs``
    fresh pairs between them into one SQLite file, fed as fast as the loop can."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="obs-bench-") as tmp:
        db = Path(tmp) / "observations.sqlite"
        logs = [ObservationProcessLog(db, queue_size=pairs) for _ in range(writers)]
        for log in logs:
            log.start(loop)
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        for i in range(pairs):
            imei = first_imei + i
            logs[i % writers].record(f"{imei:014d}", f"001010{imei:09d}", now=time.time())
            if i % 1_000 == 0:
                await asyncio.sleep(0)
        for log in logs:
            log._hand_over()
        while any(log.waiting for log in logs):
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        for log in logs:
            await asyncio.to_thread(log.close)
        assert sum(log.stats.written for log in logs) == pairs
    return elapsed


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.shared_file:
        results = []
        first = 36_000_000_000_000
        for _ in range(args.rounds):
            for writers in (1, args.shared_file):
                seconds = await shared_file(writers, args.pairs, first)
                first += args.pairs
                results.append({"writers": writers, "pairs": args.pairs, "seconds": seconds,
                                "pairs_per_s": args.pairs / seconds})
                if not args.json:
                    print(f"{writers} writer process(es), one file: {args.pairs:,} pairs in "
                          f"{seconds:.2f} s, {args.pairs / seconds:,.0f} pairs/s", flush=True)
        return results
    results = []
    first = 35_000_000_000_000
    for _ in range(args.rounds):
        for kind in ("thread", "process"):
            result = await one_round(kind, args.rate, args.seconds, args.unpinned_writer, first)
            first += result["pairs"]
            results.append(result)
            if not args.json:
                lag = result["lag_ms"]
                print(
                    f"{kind:8s} lag ms p50 {lag['p50']:.3f} p99 {lag['p99']:.3f} "
                    f"p99.9 {lag['p99.9']:.3f} max {lag['max']:.3f} | ticks late > 1 ms: "
                    f"{result['late_ticks']}, {result['late_ms']:.0f} ms late: own CPU "
                    f"{result['late_own_cpu_ms']:.0f}, run queue "
                    f"{result['late_run_queue_ms']:.0f}, sleeping (GIL) "
                    f"{result['late_sleeping_ms']:.0f} | written {result['written']:,} "
                    f"dropped {result['dropped']:,} | close {result['close_s']:.2f} s",
                    flush=True,
                )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10_000.0, help="pairs per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=1, help="CPU the loop is pinned to")
    parser.add_argument("--unpinned-writer", action="store_true",
                        help="let the writer process use every CPU")
    parser.add_argument("--shared-file", type=int, metavar="N", default=0,
                        help="instead: N writer processes (one per worker) into one file, "
                        "against one, fed --pairs flat out")
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.shared_file:
        args.cpu = -1  # writers of several workers run wherever they can
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    method = {
        "command": "python bench/observation_writer.py " + " ".join(sys.argv[1:]),
        "python": sys.version.split()[0], "pinned_cpu": args.cpu,
        "unpinned_writer": args.unpinned_writer, "rate": args.rate, "seconds": args.seconds,
        "load_average": os.getloadavg(),
    }
    if not args.json:
        print(json.dumps(method))
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps({"method": method, "rounds": results}, indent=1))
    else:
        print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
