"""End-to-end benchmark: the gateway against the "ceiling" responder, driven by the simulator.

Method.

* On loopback, two server processes: (1) the gateway, ``python -m gateway.cli run`` on its
  embedded default configuration, with only the Diameter and metrics ports and the state
  directory overridden (``EIR_DIAMETER_LISTEN``, ``EIR_METRICS_LISTEN``,
  ``EIR_STATE_DIRECTORY``); its registry backend is the embedded local one; (2) bench/ceiling.py,
  which frames messages and answers with a pre-encoded ME-Identity-Check-Answer without decoding
  anything: the fastest a Python asyncio Diameter server can be on this machine.
* The simulator (gateway.simulator) runs in this process, on its own event loop; with two or more
  CPUs this process is pinned to CPU 0 and the servers to CPU 1, so the simulator and the server
  never share a core.
* IMEIs: the simulator's generator with its default mix (valid, bad check digit, malformed,
  unknown TAC, listed), a pool of ``--pool`` distinct checks sent in turn; every gateway answer
  is verified against the status the default configuration gives. Before measuring, each server
  gets the whole pool twice (warm-up), so every registry verdict is a cache hit afterwards, and
  the gateway's decision cache (``policy.decision_cache_size``, on by default) holds every check:
  what is measured is re-checks of known handsets. ``--decision-cache-size 0`` measures every
  check classified afresh.
* Scenarios, each run against the gateway and then the ceiling, back to back: closed loop
  (``window`` outstanding requests per connection, over 1 and 4 connections) and open loop
  (fixed rates, latency from the scheduled send time, so stalls are not hidden). Each runs
  ``--seconds`` seconds (``--quick``: 1 s and fewer scenarios).
* Each scenario runs ``--rounds`` times per server, alternating gateway and ceiling so both see
  the same disturbances (the machine may be shared); the least disturbed round is shown (highest
  rate in closed loop, lowest p99 in open loop) with the medians alongside in the JSON.
* Reported per scenario: answered MICR/s, latency p50/p90/p99/p99.9/max, errors, the open loop's
  send lag (how late the simulator itself sent), and the ratios gateway/ceiling of the rate and
  of p99. The ceiling's figures are bounded by the simulator as
  well: when both sides come out equal, the simulator was the limit.

Run: ``.venv/bin/python bench/e2e.py [--quick] [--json] [--profile-gateway FILE]``.
``--profile-gateway`` runs the gateway under cProfile and prints where its time went.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway import aio  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.simulator.report import Report  # noqa: E402
from gateway.simulator.runner import SimulatorSettings, simulate  # noqa: E402
from gateway.simulator.traffic import Check, GatewayData, ImeiGenerator  # noqa: E402

TARGET_CLOSED = 40_000.0  # MICR/s, single process, closed loop, registry cache hits
TARGET_OPEN_RATE = 10_000.0
TARGET_OPEN_P99_MS = 2.0


@dataclass(frozen=True, slots=True)
class Scenario:
    mode: str
    connections: int
    window: int = 1
    rate: float = 0.0

    @property
    def name(self) -> str:
        if self.mode == "closed":
            return f"closed w={self.window} c={self.connections}"
        return f"open {self.rate:,.0f}/s c={self.connections}"


def scenarios(quick: bool) -> list[Scenario]:
    windows = (16, 256) if quick else (1, 16, 64, 256)
    rates = (1_000.0, 10_000.0) if quick else (1_000.0, 5_000.0, 10_000.0)
    out = [Scenario("closed", c, w) for c in (1, 4) for w in windows]
    out += [Scenario("open", 1, rate=r) for r in rates]
    return out


# ---------------------------------------------------------------------------------------------
# Server processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(pid: int, cpu: int) -> bool:
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} in time")


def _wait_ready(metrics_port: int, deadline: float) -> None:
    url = f"http://127.0.0.1:{metrics_port}/readyz"
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in time")


@dataclass(slots=True)
class Servers:
    state_dir: str
    gateway_port: int
    ceiling_port: int
    gateway: subprocess.Popen[bytes]
    ceiling: subprocess.Popen[bytes]
    pinned: bool
    logs: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        for proc in (self.gateway, self.ceiling):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.gateway, self.ceiling):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for handle in self.logs:
            handle.close()


def start_servers(
    state_dir: str, profile: str | None, pin: bool = True, decision_cache_size: int | None = None
) -> Servers:
    gateway_port, metrics_port, ceiling_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        EIR_DIAMETER_LISTEN=f"tcp://127.0.0.1:{gateway_port}",
        EIR_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        EIR_N5G_EIR_LISTEN="http://127.0.0.1:0",
        EIR_STATE_DIRECTORY=state_dir,
    )
    if decision_cache_size is not None:
        env["EIR_POLICY_DECISION_CACHE_SIZE"] = str(decision_cache_size)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", profile]
    command += ["-m", "gateway.cli", "run"]
    gw_log = open(Path(state_dir) / "gateway.log", "wb")  # closed in Servers.stop
    ceiling_log = open(Path(state_dir) / "ceiling.log", "wb")
    gateway = subprocess.Popen(command, env=env, cwd=state_dir, stdout=gw_log, stderr=gw_log)
    ceiling = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "ceiling.py"), "--port", str(ceiling_port)],
        env=env,
        stdout=ceiling_log,
        stderr=ceiling_log,
    )
    servers = Servers(
        state_dir, gateway_port, ceiling_port, gateway, ceiling, False, [gw_log, ceiling_log]
    )
    try:
        deadline = time.monotonic() + 60
        _wait_port(gateway_port, gateway, deadline)
        _wait_ready(metrics_port, deadline)
        _wait_port(ceiling_port, ceiling, deadline)
    except BaseException:
        servers.stop()
        raise
    if pin:
        servers.pinned = _pin(gateway.pid, 1) and _pin(ceiling.pid, 1) and _pin(0, 0)
    return servers


# ---------------------------------------------------------------------------------------------
# Runs


def summary(report: Report) -> dict[str, Any]:
    d = report.to_dict()
    return {
        "micr_per_s": d["achieved_rate"],
        "sent": d["sent"],
        "answered": d["answered"],
        "errors": d["errors"],
        "latency_ms": d["latency_ms"],
        "results": d["results"],
        "verified": d["verification"]["verified"],
        "mismatches": d["verification"]["mismatches"] + d["matching"]["id_mismatches"],
        "send_lag_p99_ms": d["send_lag_ms"]["p99"] if "send_lag_ms" in d else None,
        "ok": d["ok"],
    }


def pick(scenario: Scenario, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The least disturbed round (highest rate in closed loop, lowest p99 in open loop; the
    machine is shared), with the median of every round alongside."""
    if scenario.mode == "closed":
        best = max(rounds, key=lambda r: r["micr_per_s"])
    else:
        best = min(rounds, key=lambda r: r["latency_ms"]["p99"])
    out = dict(best)
    out["rounds"] = len(rounds)
    out["median_micr_per_s"] = statistics.median(r["micr_per_s"] for r in rounds)
    out["median_p99_ms"] = statistics.median(r["latency_ms"]["p99"] for r in rounds)
    out["all_ok"] = all(r["ok"] for r in rounds)
    return out


async def drive(
    port: int, scenario: Scenario, checks: list[Check], seconds: float, verify: bool
) -> Report:
    settings = SimulatorSettings(
        port=port,
        connections=scenario.connections,
        mode=scenario.mode,
        window=scenario.window,
        rate=scenario.rate or 1.0,
        duration=seconds,
        max_duration=seconds + 30.0,
        timeout=5.0,
        verify=verify,
    )
    report, _ = await simulate(settings, checks)
    return report


async def warm_up(port: int, checks: list[Check], verify: bool) -> Report:
    settings = SimulatorSettings(
        port=port, window=64, count=2 * len(checks), max_duration=120.0, verify=verify
    )
    report, _ = await simulate(settings, checks)
    return report


async def bench(args: argparse.Namespace, servers: Servers) -> dict[str, Any]:
    config = load_config()
    generator = ImeiGenerator(GatewayData.from_config(config), config.policy, seed=args.seed)
    checks = generator.take(args.pool)
    targets = {"gateway": (servers.gateway_port, True), "ceiling": (servers.ceiling_port, False)}
    warm = {}
    for name, (port, verify) in targets.items():
        report = await warm_up(port, checks, verify)
        warm[name] = summary(report)
        if not report.ok:
            raise RuntimeError(f"warm-up against the {name} failed: {report.render_text()}")
    seconds = 1.0 if args.quick else args.seconds
    rounds = 1 if args.quick else args.rounds
    rows = []
    for scenario in scenarios(args.quick):
        row: dict[str, Any] = {
            "scenario": scenario.name,
            "mode": scenario.mode,
            "connections": scenario.connections,
            "window": scenario.window if scenario.mode == "closed" else None,
            "rate": scenario.rate if scenario.mode == "open" else None,
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(rounds):  # alternate, so both see the same disturbances
            for name, (port, verify) in targets.items():
                runs[name].append(summary(await drive(port, scenario, checks, seconds, verify)))
        for name in targets:
            row[name] = pick(scenario, runs[name])
        g, c = row["gateway"], row["ceiling"]
        row["ratio_rate"] = round(g["micr_per_s"] / c["micr_per_s"], 3) if c["micr_per_s"] else None
        cp99 = c["latency_ms"]["p99"]
        row["ratio_p99"] = round(g["latency_ms"]["p99"] / cp99, 2) if cp99 else None
        rows.append(row)
        if not args.json:
            print(_row_text(row), flush=True)
    closed = [r["gateway"] for r in rows if r["mode"] == "closed"]
    best_closed = max(g["micr_per_s"] for g in closed)
    median_closed = max(g["median_micr_per_s"] for g in closed)
    open_10k = [r["gateway"] for r in rows if r["mode"] == "open" and r["rate"] == TARGET_OPEN_RATE]
    best_p99 = open_10k[0]["latency_ms"]["p99"] if open_10k else None
    median_p99 = open_10k[0]["median_p99_ms"] if open_10k else None
    return {
        "method": method(args, servers, seconds, len(checks), rounds),
        "warm_up": warm,
        "scenarios": rows,
        # A target is met only when the median round meets it, not just the best one.
        "targets": {
            "closed_loop_micr_per_s": {
                "target": TARGET_CLOSED,
                "best_round": best_closed,
                "median_of_rounds": median_closed,
                "met": median_closed >= TARGET_CLOSED,
            },
            "open_loop_10k_p99_ms": {
                "target": TARGET_OPEN_P99_MS,
                "best_round": best_p99,
                "median_of_rounds": median_p99,
                "met": median_p99 is not None and median_p99 < TARGET_OPEN_P99_MS,
            },
        },
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def method(
    args: argparse.Namespace, servers: Servers, seconds: float, pool: int, rounds: int
) -> dict[str, Any]:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "pinned": "simulator CPU 0, servers CPU 1" if servers.pinned else "no",
        "seconds_per_run": seconds,
        "rounds": f"{rounds} per scenario and server, alternating; the least disturbed shown, "
        "medians alongside",
        "pool": pool,
        "mix": "generator default (valid 70, bad_check_digit 5, malformed 5, unknown_tac 10, "
        "listed 10)",
        "gateway": "python -m gateway.cli run, embedded default config, local registry",
        "decision_cache_size": "config default (65536): warm, every check a reuse"
        if args.decision_cache_size is None
        else args.decision_cache_size,
        "ceiling": "bench/ceiling.py (pre-encoded MICA, no decoding)",
        "transport": "TCP loopback, TCP_NODELAY",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _row_text(row: dict[str, Any]) -> str:
    g, c = row["gateway"], row["ceiling"]
    gl, cl = g["latency_ms"], c["latency_ms"]
    flag = "" if g["all_ok"] else "  GATEWAY NOT OK (errors or mismatches: see --json)"
    lag = "" if g["send_lag_p99_ms"] is None else (
        f" | send lag p99 {g['send_lag_p99_ms']:.3f}/{c['send_lag_p99_ms']:.3f}"
    )
    median = ""
    if g["rounds"] > 1:
        median = (
            f" | medians: gateway {g['median_micr_per_s']:,.0f}/s p99 {g['median_p99_ms']:.3f},"
            f" ceiling {c['median_micr_per_s']:,.0f}/s p99 {c['median_p99_ms']:.3f}"
        )
    return (
        f"{row['scenario']:<22} gateway {g['micr_per_s']:>9,.0f}/s p50 {gl['p50']:7.3f} "
        f"p99 {gl['p99']:7.3f} | ceiling {c['micr_per_s']:>9,.0f}/s p50 {cl['p50']:7.3f} "
        f"p99 {cl['p99']:7.3f} | ratio rate {row['ratio_rate']} p99 {row['ratio_p99']}"
        f"{lag}{median}{flag}"
    )


def print_profile(path: str, limit: int = 30) -> None:
    stats = pstats.Stats(path)
    print(f"\ngateway profile ({path}), by own time:")
    stats.sort_stats("tottime").print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gateway vs ceiling, end to end")
    parser.add_argument("--quick", action="store_true", help="1 s per run, fewer scenarios")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    parser.add_argument("--pool", type=int, default=10_000, help="distinct checks (default 10000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    parser.add_argument("--profile-gateway", metavar="FILE", help="cProfile the gateway into FILE")
    parser.add_argument(
        "--decision-cache-size",
        type=int,
        metavar="N",
        help="the gateway's policy.decision_cache_size (0: classify every check afresh)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eir-e2e-") as state_dir:
        servers = start_servers(
            state_dir, args.profile_gateway, not args.no_pin, args.decision_cache_size
        )
        try:
            if not args.json:
                print(f"gateway on port {servers.gateway_port}, ceiling on port "
                      f"{servers.ceiling_port}, pinned: {servers.pinned}", flush=True)
            result = aio.run(bench(args, servers))
        finally:
            servers.stop()
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("method: " + json.dumps(result["method"]))
        for name, target in result["targets"].items():
            print(f"target {name}: {json.dumps(target)}")
    if args.profile_gateway and not args.json:
        print_profile(args.profile_gateway)
    return 0


if __name__ == "__main__":
    sys.exit(main())
