"""Registry client through each fault mode at a steady rate: budget, load while down, recovery.

Method. The reference registry (``registry_client.server``, SQLite seeded with
``config/registry-declarations.json``) runs in a child process on 127.0.0.1 (port chosen by the
kernel) with a fault injector (``registry_client.faults``) switched over a pipe; it records the
arrival time (``time.monotonic()``, shared by both processes) of every request. In this process
one ``HttpRegistryClient`` with the embedded default settings (budget 50 ms, request timeout 2 s,
2 retries, breaker threshold 5) except ``--reset`` (breaker_reset_timeout) and
``--max-connections`` checks distinct IMEIs
(cache misses: every check asks the registry) open loop at ``--rate`` per second. For each fault
mode in turn:

1. healthy for 1 s (and until the circuit is closed, at most a reset interval more);
2. the fault for ``--down`` reset intervals;
3. healthy again, until a check started after healing gets a verdict, then 1 s more.

Reported per mode, against the targets of issue #10:

- check latency (start of ``check()`` to verdict or RegistryUnavailable) p50 / p99 / max over the
  whole phase; target p99 <= budget + 10 ms;
- requests the registry received in each reset interval while down, counted from the start of
  the fault: the first interval (it holds the detection) and the most in any later one;
  target <= breaker_failure_threshold + 1;
- time from the start of the fault to the circuit opening;
- time to recover: from healing to the first verdict of a check started after it;
  target <= reset interval + 1 s;
- the most requests the registry served at once (``max_connections``, 64 by default).

``flapping`` alternates 503 and right answers every 0.5 s, so "down" is only half true there.
Every loop is bounded by count and time; the whole run by ``--timeout``.

``--sequence``: the ``--faults`` one after another, ``--step`` seconds each, without healing in
between (issue #10's stuck-open report: slow, 503, 429, reset, garbage, wrong content type,
partial body, hang, flapping), then healed; reported as one row.

Run: ``.venv/bin/python bench/registry_faults.py [--reset 2] [--down 3.5] [--rate 300] [--json]``,
``.venv/bin/python bench/registry_faults.py --sequence --reset 10 --step 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from registry_client.breaker import BreakerState
from registry_client.client import HttpRegistryClient
from registry_client.faults import Fault
from registry_client.model import RegistryUnavailable
from registry_client.settings import RegistrySettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_process import TOKEN, RegistryProcess

FAULTS = [f for f in Fault if f is not Fault.OK]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Load:
    """Open-loop checks of distinct IMEIs at ``rate``/s; records (start, latency, verdict?)."""

    def __init__(self, client: HttpRegistryClient, rate: float, limit: int):
        self.client = client
        self.rate = rate
        self.limit = limit  # bound on checks started
        self.started = 0
        self.records: list[tuple[float, float, bool]] = []
        self.opened_at: float | None = None  # first time the circuit was seen open

    async def _one(self, imei: str) -> None:
        start = time.monotonic()
        try:
            await self.client.check(imei)
            ok = True
        except RegistryUnavailable:
            ok = False
        self.records.append((start, time.monotonic() - start, ok))

    async def run_until(self, end: float, stop_when_verdict_after: float | None = None) -> None:
        """Start checks on schedule until ``end`` (or a verdict of a check started after
        ``stop_when_verdict_after``, plus 1 s)."""
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        begin, n = time.monotonic(), 0
        while time.monotonic() < end and self.started < self.limit:
            n += 1
            self.started += 1
            task = loop.create_task(self._one(f"35209900{self.started % 1_000_000:06d}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if self.opened_at is None and self.client.breaker.state is BreakerState.OPEN:
                self.opened_at = time.monotonic()
            if stop_when_verdict_after is not None and any(
                ok and s >= stop_when_verdict_after for s, _, ok in self.records[-50:]
            ):
                end = min(end, time.monotonic() + 1.0)
                stop_when_verdict_after = None
            await asyncio.sleep(max(0.0, begin + n / self.rate - time.monotonic()))
        await asyncio.gather(*tasks)


async def run_mode(
    args: argparse.Namespace, faults: list[Fault], port: int, call: Any
) -> dict[str, Any]:
    """One fault for ``--down`` reset intervals or, given several, each for ``--step``
    seconds in turn (the sequence); then healed."""
    settings = RegistrySettings(
        backend="http",
        url=f"http://127.0.0.1:{port}",
        token=TOKEN,
        breaker_reset_timeout=args.reset,
        max_connections=args.max_connections,
    )
    client = HttpRegistryClient(settings, metrics_registry=CollectorRegistry())
    span = args.down * args.reset if len(faults) == 1 else len(faults) * args.step
    load = Load(client, args.rate, limit=int(args.rate * (span + args.reset + 10)))
    try:
        call("mode", Fault.OK.value)
        await load.run_until(time.monotonic() + 1.0)
        # A starved machine can open the circuit while healthy (answers later than the budget
        # are failures): start the fault from a closed circuit, waiting at most one probe.
        settle = time.monotonic() + args.reset + 2.0
        while client.breaker.state is not BreakerState.CLOSED and time.monotonic() < settle:
            await load.run_until(time.monotonic() + 0.5)
        load.opened_at = None
        fault_at = call("mode", faults[0].value)
        if len(faults) == 1:
            await load.run_until(fault_at + args.down * args.reset)
        else:
            for k, fault in enumerate(faults):
                if k:
                    call("mode", fault.value)
                await load.run_until(fault_at + (k + 1) * args.step)
        healed_at = call("mode", Fault.OK.value)
        await load.run_until(healed_at + args.reset + 5.0, stop_when_verdict_after=healed_at)
        arrivals, max_concurrent = call("stats", fault_at)
    finally:
        await client.close()
    budget = settings.budget
    latencies = [latency for start, latency, _ in load.records if start >= fault_at]
    windows = [
        sum(1 for t in arrivals if fault_at + k * args.reset <= t < fault_at + (k + 1) * args.reset)
        for k in range(int(span / args.reset))  # whole intervals only
    ]
    recovered = min(
        (s + latency for s, latency, ok in load.records if ok and s >= healed_at), default=None
    )
    opened = load.opened_at
    return {
        "fault": ",".join(f.value for f in faults),
        "checks": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
        "p99_within_budget_10ms": percentile(latencies, 0.99) <= budget + 0.010,
        "requests_first_interval": windows[0] if windows else 0,
        "requests_max_later_interval": max(windows[1:], default=0),
        "requests_per_interval_target": settings.breaker_failure_threshold + 1,
        "opened_after_s": None if opened is None or opened < fault_at else round(opened - fault_at, 3),
        "recovered_after_s": None if recovered is None else round(recovered - healed_at, 3),
        "recover_target_s": args.reset + 1.0,
        "max_concurrent_at_registry": max_concurrent,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0, help="checks per second")
    parser.add_argument("--reset", type=float, default=2.0, help="breaker_reset_timeout, seconds")
    parser.add_argument(
        "--down", type=float, default=3.5, help="fault length in reset intervals (healing mid-way"
        " through one: the next probe is up to a reset interval away)"
    )
    parser.add_argument("--faults", nargs="*", default=[f.value for f in FAULTS], choices=[f.value for f in FAULTS])
    parser.add_argument(
        "--sequence", action="store_true", help="the --faults one after another, each for --step"
        " seconds, then healed (issue #10's: slow server_error throttled reset garbage"
        " wrong_type partial_body hang flapping)"
    )
    parser.add_argument("--step", type=float, default=1.0, help="seconds per fault of --sequence")
    parser.add_argument("--max-connections", type=int, default=64, help="registry.max_connections")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on the whole run")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()

    with RegistryProcess() as registry:

        async def run_all() -> list[dict[str, Any]]:
            if args.sequence:
                faults = [Fault(f) for f in args.faults]
                return [await run_mode(args, faults, registry.port, registry.call)]
            return [await run_mode(args, [Fault(f)], registry.port, registry.call) for f in args.faults]

        rows = asyncio.run(asyncio.wait_for(run_all(), args.timeout))
    results = {
        "benchmark": "registry client through fault modes, open loop",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rate_per_s": args.rate,
        "budget_ms": 50,
        "reset_s": args.reset,
        "down_intervals": args.down,
        "max_connections": args.max_connections,
        "modes": rows,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{results['benchmark']}: {args.rate:g} checks/s, budget 50 ms, reset {args.reset:g} s,"
        f" down {args.down:g} intervals, max_connections {args.max_connections}  (Python {results['python']}, {results['platform']})"
    )
    print(
        f"{'fault':<13}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  {'req 1st/later interval':>22}"
        f"{'opened s':>10}{'recovered s':>12}{'max conc':>9}"
    )
    for row in rows:
        print(
            f"{row['fault']:<13}{row['p50_ms']:>8}{row['p99_ms']:>8}{row['max_ms']:>8}"
            f"  {row['requests_first_interval']:>14} / {row['requests_max_later_interval']:<5}"
            f"{row['opened_after_s']!s:>10}{row['recovered_after_s']!s:>12}"
            f"{row['max_concurrent_at_registry']:>9}"
        )
    print(
        f"targets: p99 <= 60 ms; <= {rows[0]['requests_per_interval_target'] if rows else 6}"
        f" requests per reset interval while down; recovered <= {args.reset + 1:g} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
