"""Registry client benchmark: 10,000 concurrent checks of distinct IMEIs against the reference server.

Method. The reference registry (``registry_client.server``, SQLite seeded with
``config/registry-declarations.json``) runs in a child process on 127.0.0.1 (port chosen by the
kernel), so server and client do not share an event loop or a core. In this process one
``HttpRegistryClient`` (batch_window 2 ms, batch_max 1000, budget ``--budget``) then:

1. cold: ``--checks`` concurrent ``check()`` calls of distinct IMEIs (spread over the three
   declared TACs and an undeclared one) -> wall time, how many verdicts arrived within the budget
   (the rest are RegistryUnavailable), HTTP requests counted on the server (after waiting, at most
   request_timeout, for answers that arrive past the budget: they still fill the cache);
2. warm: the checks that got a verdict, again, all answered from the cache, ``--rounds`` times
   -> checks per second through ``await check()`` (all concurrent) and through ``cached()``.

Best and median of the warm rounds are reported. The whole run is bounded by ``--timeout``.

Run: ``.venv/bin/python bench/registry.py [--checks 10000] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from registry_client.client import HttpRegistryClient
from registry_client.model import RegistryUnavailable
from registry_client.settings import RegistrySettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_process import TOKEN, RegistryProcess

TACS = ("35209900", "35332011", "86000001", "99000001")


def imeis(count: int) -> list[str]:
    return [f"{TACS[n % len(TACS)]}{n // len(TACS):06d}" for n in range(count)]


async def run(args: argparse.Namespace, port: int, counts: Any) -> dict[str, Any]:
    settings = RegistrySettings(
        backend="http",
        url=f"http://127.0.0.1:{port}",
        token=TOKEN,
        budget=args.budget,
        request_timeout=max(2.0, args.budget),
        batch_window=0.002,
        batch_max=1000,
        cache_size=max(100_000, args.checks),
    )
    client = HttpRegistryClient(settings, metrics_registry=CollectorRegistry())
    batch = imeis(args.checks)
    try:
        await client.start()
        before = counts()
        start = time.perf_counter()
        results = await asyncio.gather(*(client.check(i) for i in batch), return_exceptions=True)
        cold = time.perf_counter() - start
        failed = sum(isinstance(r, RegistryUnavailable) for r in results)
        other = [r for r in results if isinstance(r, BaseException)]
        if len(other) != failed:
            raise RuntimeError(f"unexpected errors: {other[:3]}")
        # Answers arriving after the budget still fill the cache: wait for them (bounded).
        late_deadline = time.perf_counter() + settings.request_timeout
        while time.perf_counter() < late_deadline:
            if all(client.cached(i) is not None for i in batch):
                break
            await asyncio.sleep(0.01)
        after = counts()
        requests = {k: after.get(k, 0) - before.get(k, 0) for k in after}

        # Warm: the IMEIs now cached (all of them unless the registry failed).
        warm = [i for i in batch if client.cached(i) is not None]
        warm_async: list[float] = []
        warm_sync: list[float] = []
        for _ in range(args.rounds if warm else 0):
            start = time.perf_counter()
            await asyncio.gather(*(client.check(i) for i in warm))
            warm_async.append(len(warm) / (time.perf_counter() - start))
            start = time.perf_counter()
            hits = sum(client.cached(i) is not None for i in warm)
            warm_sync.append(len(warm) / (time.perf_counter() - start))
            if hits != len(warm):
                raise RuntimeError(f"only {hits} of {len(warm)} cached")
    finally:
        await client.close()
    return {
        "benchmark": "registry client, concurrent checks of distinct IMEIs",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "checks": args.checks,
        "budget_s": args.budget,
        "cold": {
            "wall_s": round(cold, 4),
            "checks_per_s": round(args.checks / cold),
            "verdicts": args.checks - failed,
            "unavailable": failed,
            "http_requests": sum(requests.values()),
            "http_requests_by_path": requests,
        },
        "warm_checks": len(warm),
        "warm_await_check_per_s": _summary(warm_async),
        "warm_cached_per_s": _summary(warm_sync),
        "rounds": args.rounds,
    }


def _summary(rates: list[float]) -> dict[str, int]:
    if not rates:
        return {"best": 0, "median": 0}
    return {"best": round(max(rates)), "median": round(statistics.median(rates))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="warm rounds")
    parser.add_argument("--budget", type=float, default=5.0, help="per-check budget, seconds")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on the whole run")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()

    with RegistryProcess() as registry:

        def counts() -> dict[str, int]:
            result: dict[str, int] = registry.call("counts")
            return result

        results = asyncio.run(asyncio.wait_for(run(args, registry.port, counts), args.timeout))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    cold = results["cold"]
    print(f"{results['benchmark']}  (Python {results['python']}, {results['platform']})")
    print(
        f"cold: {results['checks']} checks in {cold['wall_s']} s ({cold['checks_per_s']}/s),"
        f" {cold['http_requests']} HTTP requests {cold['http_requests_by_path']},"
        f" {cold['verdicts']} verdicts, {cold['unavailable']} unavailable"
        f" (budget {results['budget_s']} s)"
    )
    print(
        f"warm await check(): best {results['warm_await_check_per_s']['best']}/s,"
        f" median {results['warm_await_check_per_s']['median']}/s"
        f" ({results['warm_checks']} checks, {results['rounds']} rounds)"
    )
    print(
        f"warm cached():      best {results['warm_cached_per_s']['best']}/s,"
        f" median {results['warm_cached_per_s']['median']}/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
