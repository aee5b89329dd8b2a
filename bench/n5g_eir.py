"""N5g-eir benchmark: GetEquipmentStatus over h2c, driven by h2load, beside S13 in one process.

Method.

* On loopback, two server processes: (1) the gateway, ``python -m gateway.cli run`` on its
  embedded default configuration (N5g-eir and S13 listeners, metrics port and state directory
  overridden); (2) the "ceiling": this script with ``--serve-ceiling``, the same HTTP/2 stack
  (``gateway.n5g_eir.server`` over h2) answering every request with a pre-built 200
  EirResponseData without parsing or classifying anything: the best this HTTP/2 server can do.
* Load: ``h2load`` (Debian ``nghttp2-client``), h2c with prior knowledge, its URIs taken in turn
  from a file of ``--pool`` distinct checks: the S13 simulator's generator (known and unknown
  TACs, list hits, bad check digits, registry verdicts of the default config) turned into PEIs
  (``imei-`` 15 digits, or ``imeisv-`` 16 digits for one check in two) with a SUPI ``imsi-``.
  Latency per request comes from h2load's ``--log-file``; p50/p99/p99.9/max are computed here.
* Warm-up: the gateway gets the whole pool twice first, so registry verdicts and decisions
  come from the caches (re-checks of known handsets, as in bench/e2e.py); ``--fresh`` turns the
  decision cache off so that every check is classified afresh.
* Scenarios: closed loop (``-c`` connections x ``-m`` streams, ``--count`` requests) against
  the gateway and the ceiling; open loop at ``--rate`` requests/s for ``--seconds`` while the S13
  simulator (``eir-gateway simulate --rate``) sends the same rate of MICRs to the same process.
  h2load's ``--rps`` schedules requests per connection; latency is measured from when h2load
  sent each request.

Run: ``.venv/bin/python bench/n5g_eir.py [--quick] [--json]``. Needs h2load on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e import _wait_port, _wait_ready, free_port  # noqa: E402

from gateway.config import load_config  # noqa: E402
from gateway.n5g_eir.problem import STATUS_RESPONSES, Response  # noqa: E402
from gateway.n5g_eir.server import N5gEirServer  # noqa: E402
from gateway.n5g_eir.settings import HttpEndpoint, N5gEirSettings  # noqa: E402
from gateway.policy import EquipmentStatus  # noqa: E402
from gateway.simulator.amf import query_of  # noqa: E402
from gateway.simulator.traffic import GatewayData, ImeiGenerator  # noqa: E402

# The simulator's mix without malformed IMEIs, which no PEI can carry.
MIX = {"valid": 75, "bad_check_digit": 5, "unknown_tac": 10, "listed": 10}


# --- the ceiling ------------------------------------------------------------------------------

class PrebuiltAnswer:
    """Answers every request with the same 200 EirResponseData: no parsing, no classifier."""

    answer: Response = STATUS_RESPONSES[EquipmentStatus.WHITELISTED]

    def handle(self, method: bytes, path: bytes, connection_in_flight: int = 0,
               authorization: bytes | None = None) -> Response:
        return self.answer


async def serve_ceiling(port: int) -> None:
    settings = N5gEirSettings(listen=(HttpEndpoint("http", "127.0.0.1", port),))
    server = N5gEirServer(PrebuiltAnswer(), settings)  # type: ignore[arg-type]
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", server.sockets[0][2], flush=True)
    await stop.wait()
    await server.stop()


# --- traffic ----------------------------------------------------------------------------------

def pei_uris(base: str, pool: int, seed: int) -> list[str]:
    """The simulator's PEIs (gateway.simulator.amf): one check in two an ``imeisv-`` with a
    Software Version."""
    config = load_config(None)
    generator = ImeiGenerator(GatewayData.from_config(config), config.policy, MIX, imsi=True,
                              seed=seed)
    return [f"{base}{query_of(replace(c, sv=f'{n % 100:02d}') if n % 2 else c)}"
            for n, c in enumerate(generator.take(pool))]


# --- h2load ---------------------------------------------------------------------------------

def h2load(args: list[str], uri_file: Path, log_file: Path, timeout: float) -> dict[str, Any]:
    log_file.unlink(missing_ok=True)  # h2load appends to an existing log
    command = ["h2load", *args, "-i", str(uri_file), "--log-file", str(log_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    text = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed: {done.stderr or text}")
    match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    assert match and codes, text
    latencies, first, last = [], None, None
    for line in log_file.read_text().splitlines():
        start_us, _status, duration_us = line.split("\t")[:3]
        start, duration = int(start_us), int(duration_us)
        latencies.append(duration / 1000.0)
        first = start if first is None else min(first, start)
        last = start + duration if last is None else max(last, start + duration)
    latencies.sort()
    elapsed = ((last or 0) - (first or 0)) / 1e6 or 1e-9
    return {
        "requests": int(match.group(2)),
        "succeeded": int(match.group(3)),
        "failed": int(match.group(4)) + int(match.group(5)),
        "status_2xx": int(codes.group(1)),
        "status_4xx": int(codes.group(3)),
        "status_5xx": int(codes.group(4)),
        "per_second": round(len(latencies) / elapsed),
        "latency_ms": percentiles(latencies),
    }


def percentiles(sorted_ms: list[float]) -> dict[str, float]:
    if not sorted_ms:
        return {}

    def at(q: float) -> float:
        return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 3)

    return {"p50": at(0.50), "p99": at(0.99), "p99.9": at(0.999), "max": round(sorted_ms[-1], 3)}


# --- processes --------------------------------------------------------------------------------

def start(state: str, fresh: bool) -> tuple[list[subprocess.Popen[bytes]], dict[str, int]]:
    ports = {name: free_port() for name in ("s13", "n5g", "metrics", "ceiling")}
    env = dict(os.environ)
    env.update(
        EIR_DIAMETER_LISTEN=f"tcp://127.0.0.1:{ports['s13']}",
        EIR_N5G_EIR_LISTEN=f"http://127.0.0.1:{ports['n5g']}",
        EIR_METRICS_LISTEN=f"127.0.0.1:{ports['metrics']}",
        EIR_STATE_DIRECTORY=state,
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    if fresh:
        env["EIR_POLICY_DECISION_CACHE_SIZE"] = "0"
    with open(Path(state) / "servers.log", "wb") as log:  # the children keep their copies
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run"], env=env,
                                   cwd=state, stdout=log, stderr=log)
        ceiling = subprocess.Popen(
            [sys.executable, __file__, "--serve-ceiling", str(ports["ceiling"])],
            env=env, stdout=log, stderr=log,
        )
    deadline = time.monotonic() + 60
    try:
        _wait_port(ports["n5g"], gateway, deadline)
        _wait_ready(ports["metrics"], deadline)
        _wait_port(ports["ceiling"], ceiling, deadline)
    except BaseException:
        stop([gateway, ceiling])
        raise
    return [gateway, ceiling], ports


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def s13_simulator(port: int, rate: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", "--port", str(port), "--rate",
         str(rate), "--duration", str(seconds), "--imsi", "--connections", "2", "--json",
         "--progress", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def simulator_summary(simulator: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    out, err = simulator.communicate(timeout=seconds + 120)
    s13 = json.loads(out) if out.strip().startswith("{") else {"error": err[-500:]}
    return {k: s13[k] for k in ("answered", "latency_ms", "errors", "timeouts", "sent")
            if k in s13} or s13


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "pool": args.pool,
        "decision_cache": "off" if args.fresh else "on",
    }
    with tempfile.TemporaryDirectory() as state:
        processes, ports = start(state, args.fresh)
        try:
            work = Path(state)
            uri_file = work / "uris.txt"
            uri_file.write_text("\n".join(pei_uris(f"http://127.0.0.1:{ports['n5g']}", args.pool,
                                                   args.seed)) + "\n")
            ceiling_file = work / "ceiling-uris.txt"
            ceiling_file.write_text(uri_file.read_text().replace(
                f":{ports['n5g']}/", f":{ports['ceiling']}/"))
            log = work / "h2load.log"
            closed = ["-c", str(args.connections), "-m", str(args.streams), "-n", str(args.count)]
            # Warm-up: the pool twice (registry verdicts cached; decisions cached unless fresh).
            h2load(["-c", "4", "-m", "10", "-n", str(2 * args.pool)], uri_file, log, 600)
            h2load(["-c", "4", "-m", "10", "-n", str(args.pool)], ceiling_file, log, 600)
            for _ in range(args.rounds):
                results.setdefault("closed_loop_gateway", []).append(
                    h2load(closed, uri_file, log, 600))
                results.setdefault("closed_loop_ceiling", []).append(
                    h2load(closed, ceiling_file, log, 600))
            clients = max(1, args.rate // 500)
            open_loop = ["-c", str(clients), "-m", "100", "--rps", str(args.rate // clients),
                         "-D", str(args.seconds)]
            results["open_loop_rate"] = args.rate
            results["open_loop_gateway_alone"] = h2load(open_loop, uri_file, log, 600)
            alone = s13_simulator(ports["s13"], args.rate, args.seconds)
            results["s13_alone"] = simulator_summary(alone, args.seconds)
            simulator = s13_simulator(ports["s13"], args.rate, args.seconds + 1)
            results["open_loop_gateway_beside_s13"] = h2load(open_loop, uri_file, log, 600)
            results["s13_beside"] = simulator_summary(simulator, args.seconds)
        finally:
            stop(processes)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve-ceiling", type=int, metavar="PORT")
    parser.add_argument("--quick", action="store_true", help="short run (smoke)")
    parser.add_argument("--fresh", action="store_true", help="decision cache off")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--count", type=int, default=60_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.serve_ceiling is not None:
        from gateway.aio import run as aio_run

        aio_run(serve_ceiling(args.serve_ceiling))
        return
    if shutil.which("h2load") is None:
        sys.exit("h2load not found: install Debian's nghttp2-client")
    if args.quick:
        args.pool, args.count, args.seconds, args.rounds, args.rate = 2000, 10_000, 3, 1, 2000
    results = run(args)
    if args.json:
        print(json.dumps(results))
        return
    print(f"N5g-eir over h2c, h2load; pool {args.pool} PEIs with SUPIs, decision cache "
          f"{results['decision_cache']}; Python {results['python']}, {results['machine']}")
    for key in ("closed_loop_gateway", "closed_loop_ceiling"):
        for r in results[key]:
            print(f"  {key:32} {r['per_second']:>7,}/s  latency ms {r['latency_ms']}  "
                  f"failed {r['failed']}")
    for key in ("open_loop_gateway_alone", "open_loop_gateway_beside_s13"):
        r = results[key]
        print(f"  {key:32} {r['per_second']:>7,}/s  latency ms {r['latency_ms']}  "
              f"failed {r['failed']}")
    print(f"  S13 alone at the same rate: {results['s13_alone']}")
    print(f"  S13 beside the open loop: {results['s13_beside']}")


if __name__ == "__main__":
    main()
