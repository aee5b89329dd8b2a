"""new_imsi backed by the observation log: what a check that misses the detector's memory costs.

    .venv/bin/python bench/new_imsi.py [--imeis 1000000] [--checks 100000] [--rate 10000]

Method (printed with the results): an SQLite observation log holding ``--imeis`` IMEIs, each
with one IMSI (written directly, once, before timing). Then ``--checks`` checks of distinct
IMEIs from that set (so every one misses the detector's empty memory and is asked of the log;
every other one comes with a new IMSI and raises an event) are fed at ``--rate`` per second on
the event loop, as the S13 handler does (detection, then the observation recorded). Reported:
the event loop's CPU per check in ``observe`` + ``record``; lookups answered per second; the
delay from a check to its event (p50/p99/max); the event loop's lag, sampled every 1 ms by a
timer (p99/max). The same run with memory alone (no log asked; the observations still recorded)
follows as the baseline of the same machine at the same time. Bounded: the checks, and 120 s
at most for the answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.events.model import DecisionEvent, EventType
from gateway.events.new_imsi import LookupOutcome, NewImsiDetector
from gateway.observations import ObservationLog


def imei(n: int) -> str:
    return f"35{n:012d}"


def prepare(database: Path, imeis: int) -> None:
    log = ObservationLog(database)
    log.start()
    log.close()  # the schema
    conn = sqlite3.connect(database)
    with conn:
        conn.executemany(
            "INSERT INTO observations VALUES (?, ?, ?, ?, ?)",
            ((imei(n), f"00101{n:010d}", 1.0, 1.0, 1) for n in range(imeis)),
        )
    conn.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def run(
    database: Path, imeis: int, checks: int, rate: float, ask_log: bool
) -> dict[str, float]:
    log = ObservationLog(database)
    log.start()
    raised_at: dict[str, float] = {}
    delays: list[float] = []

    def emitted(event: DecisionEvent) -> None:
        delays.append(time.perf_counter() - raised_at[event.imei])

    detector = NewImsiDetector(emitted, memory=100_000, history=log if ask_log else None,
                               max_lookups=10_000)
    lags: list[float] = []
    stop = False

    async def probe() -> None:
        while not stop:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - before - 0.001)

    prober = asyncio.create_task(probe())
    step = max(1, imeis // checks)
    loop_cpu = 0.0
    started = time.perf_counter()
    for n in range(checks):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body = imei(n * step)
        imsi = f"00101{n * step:010d}" if n % 2 else f"00102{n:010d}"  # odd: same IMSI
        now = time.time()
        t0 = time.thread_time()
        raised_at[body] = time.perf_counter()
        detector.observe(DecisionEvent(EventType.NEW_IMSI, now, body, imsi, "WHITELISTED",
                                       "clean", None, "s13"))
        log.record(body, imsi, now)
        loop_cpu += time.thread_time() - t0
    fed = time.perf_counter()
    deadline = fed + 120
    while detector.in_flight and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    answered = time.perf_counter()
    stop = True
    await prober
    await asyncio.to_thread(log.close)
    looked_up = sum(detector.lookups[o] for o in LookupOutcome if o is not LookupOutcome.SKIPPED)
    return {
        "loop_cpu_per_check_us": loop_cpu / checks * 1e6,
        "lookups_answered": looked_up,
        "lookups_skipped": detector.lookups[LookupOutcome.SKIPPED],
        "lookups_per_second": looked_up / (answered - started),
        "events": len(delays),
        "event_delay_p50_ms": statistics.median(delays) * 1e3 if delays else 0.0,
        "event_delay_p99_ms": percentile(delays, 99) * 1e3,
        "event_delay_max_ms": max(delays, default=0.0) * 1e3,
        "loop_lag_p99_ms": percentile(lags, 99) * 1e3,
        "loop_lag_max_ms": max(lags, default=0.0) * 1e3,
        "unanswered_after_120s": detector.in_flight,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imeis", type=int, default=1_000_000)
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=10_000.0)
    args = parser.parse_args()
    print(f"# python {sys.version.split()[0]} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"# log of {args.imeis} IMEIs; {args.checks} checks of distinct IMEIs at "
          f"{args.rate:g}/s, each missing memory; half with a new IMSI")
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "observations.sqlite"
        prepare(database, args.imeis)
        for label, ask_log in (("log", True), ("memory_only", False)):
            results = asyncio.run(run(database, args.imeis, args.checks, args.rate, ask_log))
            for name, value in results.items():
                shown = f"{value:.3f}" if isinstance(value, float) else value
                print(f"{label}.{name} {shown}")


if __name__ == "__main__":
    main()
