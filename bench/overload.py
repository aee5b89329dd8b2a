"""Overload: the gateway driven open loop at twice its capacity (issue #10 targets).

Method.

* Traffic (bench/real_traffic.py, as bench/e2e.py, from ``--seed``): a GSMA-size TAC file
  (``--tacs``), registry declarations, operator lists and ``--handsets`` distinct handsets, each
  with an IMSI and a Software-Version, in a mix of every registry verdict, list hit, unknown TAC,
  bad check digit and malformed IMEI.
* Scenarios, each on a freshly started gateway (``python -m gateway.cli run``, embedded default
  configuration: observation log on, overload control on; the ports, state directory and data
  files overridden), on loopback; with two or more CPUs the gateway is pinned to CPU 1 and every
  load generator to CPU 0 (``--workers N`` > 1: the workers are not pinned):

  - ``real`` (the headline): handsets never seen before, each classified afresh. The capacity
    C is measured in the same run: the simulator (gateway.simulator) closed loop, window 64 x 4
    connections, ``--capacity-seconds``, on fresh handsets. Then ``--factor`` x C (default 2)
    open loop for ``--seconds`` (default 20) on the next fresh handsets.
  - ``recheck`` (labelled as such): a pool of ``--pool`` handsets checked twice first, then the
    same capacity run and open loop on the pool again and again (the decision cache answers):
    what handsets attaching again cost.

* The open loop comes from bench/open_loop.py: ``--senders`` processes (default 1) with the
  requests encoded before the clock starts, 4 connections in all, each request due at
  ``start + i / rate``. Reported: the achieved offered rate (requests handed to the kernel per
  second of the schedule) and the schedule slip (queued: the sender's own lag; handed: also
  the gateway's TCP backpressure). Every request is counted once: answered within 5 s as a
  MICA (checked against the handset's expected Equipment-Status), a mismatching MICA, a 3004
  DIAMETER_TOO_BUSY or another result; answered after 5 s (late); never answered (within 5 s
  of the last one's 5 s).
* ``--doic`` makes the open-loop generator the simulator as an RFC 7683 reacting node instead
  (it abates what the gateway's OC-OLR asks and counts it as throttled); it is slower than
  bench/open_loop.py, so its offered rate is what it achieved.
* Meanwhile a probe (a thread with its own connection and Origin-Host) sends one MICR every
  50 ms from before the load until 8 s after it, recording each answer's latency and code; the
  gateway's /metrics and VmRSS (of its whole process tree: workers, observation writers) are
  read every 0.5 s (reduction percentage, 3004 count).
* Reported per scenario: the figures above; the probe's latencies during the load; the time
  after the load stopped until the probe's first answer within 100 ms; the gateway's RSS
  growth (the highest sample during and after the load, over the RSS before it); peak
  reduction percentage; the load average before the run.

Targets (issue #10): every MICR answered (MICA or 3004) within 5 s; after the load a MICR answered
within 100 ms within 5 s; RSS growth < 300 MB.

``--stall SECONDS``: what a stall costs instead. No capacity run: a pool of ``--pool`` handsets
warmed, then the simulator open loop at ``--rate`` (default 10,000/s, under the capacity) for
``--seconds``, and from 1 s on, every ``--stall-every`` seconds (default 2), the gateway process
is stopped for SECONDS (SIGSTOP, SIGCONT: a real stall, as a descheduled process or a long
collection); reported are the 3004 answers (refusals the stalls cost) and the answers within 5 s.

Run: ``.venv/bin/python bench/overload.py [--scenarios real,recheck] [--seconds 20] [--factor 2]
[--senders 1] [--workers 1] [--doic] [--json]``,
``.venv/bin/python bench/overload.py --stall 0.4 [--rate 10000] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import open_loop  # noqa: E402
from e2e import _pin, summary, warm_up  # noqa: E402
from hostile import (  # noqa: E402
    _handshake,
    _result_code,
    _rss_mib,
    micr,
    print_figures,
    scrape,
    start_gateway,
)
from real_traffic import RealTraffic, generate  # noqa: E402

from eir_compiled import finder as compiled_build  # noqa: E402
from gateway import aio  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.simulator.runner import SimulatorSettings, simulate  # noqa: E402
from gateway.simulator.traffic import Check  # noqa: E402
from tests.blocking_socket import recv_message  # noqa: E402

TIMEOUT = 5.0  # the issue's: every MICR answered within 5 s
CONNECTIONS = 4


class Probe(threading.Thread):
    """One MICR every 50 ms on its own connection: (send time, latency or None, Result-Code)."""

    def __init__(self, port: int, until: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.until = until
        self.samples: list[tuple[float, float | None, int | None]] = []
        self.connections = 0

    def _connect(self) -> tuple[socket.socket | None, str]:
        self.connections += 1
        host = f"probe{self.connections}.test"  # a new Origin-Host: no election with the old
        try:
            sock = _handshake(self.port, host)
        except (OSError, ConnectionError):
            return None, host
        sock.settimeout(5.0)
        return sock, host

    def run(self) -> None:
        sock, host = self._connect()
        serial = 1
        while not self.until.is_set():
            serial += 1
            sent = time.monotonic()
            try:
                if sock is None:
                    raise ConnectionError("not connected")
                sock.sendall(micr(host, serial))
                while True:
                    answer = recv_message(sock)
                    if int.from_bytes(answer[12:16], "big") == serial:
                        break
                self.samples.append((sent, time.monotonic() - sent, _result_code(answer)))
            except (OSError, ConnectionError):
                self.samples.append((sent, None, None))
                if sock is not None:
                    sock.close()
                sock, host = self._connect()
            self.until.wait(max(0.0, 0.05 - (time.monotonic() - sent)))
        if sock is not None:
            sock.close()


class Watch(threading.Thread):
    """The gateway's overload metrics and resident memory every 0.5 s."""

    def __init__(self, metrics_port: int, pid: int, until: threading.Event) -> None:
        super().__init__(daemon=True)
        self.metrics_port = metrics_port
        self.pid = pid
        self.until = until
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.rss: list[tuple[float, float]] = []

    def run(self) -> None:
        while not self.until.wait(0.5):
            try:
                self.rss.append((time.monotonic(), _rss_tree_mib(self.pid)))
                self.samples.append((time.monotonic(), scrape(self.metrics_port)))
            except OSError:
                pass


class Staller(threading.Thread):
    """Stops the gateway process for ``seconds`` every ``every`` seconds, from 1 s on."""

    def __init__(self, pid: int, seconds: float, every: float, until: threading.Event) -> None:
        super().__init__(daemon=True)
        self.pid, self.seconds, self.every, self.until = pid, seconds, every, until
        self.stalls = 0

    def run(self) -> None:
        if self.until.wait(1.0):
            return
        while True:
            os.kill(self.pid, signal.SIGSTOP)
            time.sleep(self.seconds)
            os.kill(self.pid, signal.SIGCONT)
            self.stalls += 1
            if self.until.wait(self.every - self.seconds):
                return




def _rss_tree_mib(pid: int) -> float:
    """VmRSS of the gateway and every process under it (workers, observation writers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += _rss_mib(current)
            tasks = Path(f"/proc/{current}/task").iterdir()
            for task in tasks:
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # exited meanwhile
    return total


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Repeated(Sequence[Check]):
    """``pool`` again and again, ``length`` checks in all (the recheck scenario)."""

    def __init__(self, pool: Sequence[Check], length: int) -> None:
        self.pool = list(pool)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.pool[index % len(self.pool)]


async def capacity(port: int, checks: Sequence[Check], seconds: float) -> dict[str, Any]:
    settings = SimulatorSettings(
        port=port, connections=CONNECTIONS, window=64, duration=seconds,
        max_duration=seconds + 30, timeout=TIMEOUT,
    )
    report, _ = await simulate(settings, checks)
    out = summary(report)
    # Capacity is what was served: 3004s (the capacity run may meet overload control) excluded.
    good = out["results"].get("2001", 0) + out["results"].get("5422", 0)
    out["micr_per_s"] = round(out["micr_per_s"] * good / max(1, out["answered"]), 1)
    return out


async def doic_open_loop(
    port: int, checks: Sequence[Check], rate: float, seconds: float
) -> dict[str, Any]:
    settings = SimulatorSettings(
        port=port, connections=CONNECTIONS, mode="open", rate=rate, duration=seconds,
        max_duration=seconds + 60, timeout=TIMEOUT, max_outstanding=10_000_000,
        verify=True, doic=True,
    )
    started = time.monotonic()
    report, _ = await simulate(settings, checks)
    d = report.to_dict()
    answered_2001 = d["results"].get("2001", 0) + d["results"].get("5422", 0)
    return {
        "generator": "simulator, RFC 7683 reacting node",
        "scheduled_rate": round(rate),
        "sent": d["sent"],
        "throttled_by_doic": d["throttled"],
        "mica": answered_2001,
        "too_busy_3004": d["results"].get("3004", 0),
        "other_result": {k: v for k, v in d["results"].items() if k not in ("2001", "5422", "3004")},
        "late": d["late_answers"],
        "never": d["timed_out"] - d["late_answers"] + d["lost"],
        "latency_within_timeout_ms": d["latency_ms"],
        "send_lag_ms": d.get("send_lag_ms"),
        "start": started,
        "last_due": started + seconds,
    }


def scenario(
    args: argparse.Namespace, name: str, checks: Sequence[Check], pool: Sequence[Check] | None,
    data_env: dict[str, str], state_root: str,
) -> dict[str, Any]:
    """One scenario on a fresh gateway: capacity, then factor x capacity open loop.
    ``pool``: re-check scenario (warmed first, then repeated); otherwise ``checks`` are fresh
    handsets, the capacity run taking the first and the open loop the next."""
    state = tempfile.mkdtemp(prefix=f"{name}-", dir=state_root)
    overrides = dict(data_env)
    if args.workers > 1:
        overrides["EIR_PROCESS_WORKERS"] = str(args.workers)
    gateway, port, metrics, log = start_gateway(state, ready_within=300.0, **overrides)
    pinned = (args.workers > 1 or _pin(gateway.pid, 1)) and _pin(0, 0)
    stop_probe, stop_watch = threading.Event(), threading.Event()
    probe, watch = Probe(port, stop_probe), Watch(metrics, gateway.pid, stop_watch)
    load_average = os.getloadavg()
    try:
        if pool is not None:
            aio.run(warm_up(port, pool, 2 * len(pool), False))
            measured = aio.run(capacity(port, pool, args.capacity_seconds))
        else:
            measured = aio.run(capacity(port, checks, args.capacity_seconds))
        rate = args.factor * measured["micr_per_s"]
        total = int(rate * args.seconds)
        if pool is not None:
            load: Sequence[Check] = Repeated(pool, total)
        else:
            used = measured["sent"]
            if used + total > len(checks):
                raise SystemExit(
                    f"{used + total:,} fresh handsets needed, {len(checks):,} generated: "
                    "raise --handsets"
                )
            load = checks.shifted(used, total) if isinstance(checks, RealTraffic) else checks[used:]
        rss_before = _rss_tree_mib(gateway.pid)
        probe.start()
        watch.start()
        time.sleep(1.0)  # the probe's answers before the load
        if args.doic:
            run = aio.run(doic_open_loop(port, load, rate, args.seconds))
        else:
            plan = open_loop.SenderPlan(
                port, rate, CONNECTIONS, total, timeout=TIMEOUT, grace=TIMEOUT
            )
            run = open_loop.run(plan, load, args.senders, 0 if pinned else None)
            run["generator"] = f"bench/open_loop.py, {args.senders} process(es)"
        ended = run["last_due"]
        # The probe goes on 8 s past the end of the load.
        time.sleep(max(0.0, ended + 8.0 - time.monotonic()))
        stop_probe.set()
        stop_watch.set()
        probe.join(10)
        watch.join(10)
    finally:
        stop_probe.set()
        stop_watch.set()
        gateway.terminate()
        gateway.wait(30)
        log.close()
    began = run.pop("start")
    run.pop("last_due")
    during = [lat for sent, lat, _ in probe.samples if began <= sent < ended and lat]
    recovered = next(
        (sent - ended for sent, lat, code in probe.samples
         if sent >= ended and lat is not None and lat < 0.1 and code in (2001, 3004)),
        None,
    )
    reductions = [m.get("diameter_overload_reduction_percent", 0.0) for _, m in watch.samples]
    final = watch.samples[-1][1] if watch.samples else {}
    peak_rss = max((rss for at, rss in watch.rss if at >= began), default=rss_before)
    answered = run["mica"] + run["too_busy_3004"]
    requests = run.get("requests", run["sent"])
    return {
        "scenario": name,
        "label": (
            "real traffic: handsets never seen before, each with IMSI and SV"
            if pool is None else f"re-checks: a warmed pool of {len(pool):,} handsets checked again"
        ),
        "load_average_before": [round(x, 2) for x in load_average],
        "pinned": pinned,
        "workers": args.workers,
        "capacity_micr_per_s": measured["micr_per_s"],
        "capacity_run": measured,
        "offered_rate": round(rate),
        "seconds": args.seconds,
        **run,
        "target_every_micr_answered_within_5s": answered == requests and not run["late"],
        "probe_during_load_p50_ms": round(_percentile(during, 0.5) * 1000, 1),
        "probe_during_load_p99_ms": round(_percentile(during, 0.99) * 1000, 1),
        "probe_failures": sum(1 for _, lat, _ in probe.samples if lat is None),
        "recovered_within_100ms_after_s": None if recovered is None else round(recovered, 2),
        "target_recovered_within_5s": recovered is not None and recovered <= 5.0,
        "peak_reduction_percent": max(reductions, default=0.0),
        # every 0.5 s from the load's start: how the controller moved (0 = admitting all)
        "reduction_percent_every_half_second": [
            round(m.get("diameter_overload_reduction_percent", 0.0))
            for at, m in watch.samples if began <= at <= ended + 1.0
        ],
        "gateway_3004_total": final.get("diameter_overload_rejected_total"),
        "rss_before_mib": round(rss_before, 1),
        "rss_growth_mib": round(peak_rss - rss_before, 1),
        "target_rss_growth_under_300mb": (peak_rss - rss_before) * 1.048576 < 300,
    }


async def stall_run(args: argparse.Namespace, port: int, checks: Sequence[Check]) -> dict[str, Any]:
    await warm_up(port, checks, 2 * len(checks), False)
    stop = threading.Event()
    staller = Staller(args.gateway_pid, args.stall, args.stall_every, stop)
    settings = SimulatorSettings(
        port=port, connections=CONNECTIONS, mode="open", rate=args.rate, duration=args.seconds,
        max_duration=args.seconds + 60, timeout=TIMEOUT, max_outstanding=10_000_000,
        verify=False,
    )
    staller.start()
    try:
        report, _ = await simulate(settings, checks)
    finally:
        stop.set()
        staller.join(10)
    d = report.to_dict()
    return {
        "rate": round(args.rate),
        "seconds": args.seconds,
        "stalls": staller.stalls,
        "stall_seconds": args.stall,
        "sent": d["sent"],
        "answered": d["answered"],
        "answered_2001": d["results"].get("2001", 0) + d["results"].get("5422", 0),
        "answered_3004": d["results"].get("3004", 0),
        "timed_out_5s": d["timed_out"],
        "latency_ms": d["latency_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="real,recheck", help="real, recheck or both")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--factor", type=float, default=2.0, help="open-loop rate / capacity")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    # Enough for capacity x (capacity-seconds + factor x seconds) at 40,000/s real traffic; a
    # faster gateway stops the run and names what to raise.
    parser.add_argument("--handsets", type=int, default=4_000_000, help="distinct handsets")
    parser.add_argument("--tacs", type=int, default=100_000)
    parser.add_argument("--pool", type=int, default=10_000, help="re-checked handsets")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--senders", type=int, default=1, help="open-loop sender processes")
    parser.add_argument("--workers", type=int, default=1, help="the gateway's process.workers")
    parser.add_argument("--doic", action="store_true", help="the simulator as a reacting node")
    parser.add_argument("--stall", type=float, default=0.0, help="stop the gateway this long")
    parser.add_argument("--stall-every", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=10_000.0, help="open-loop rate with --stall")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = [n for n in args.scenarios.split(",") if n]
    if set(names) - {"real", "recheck"} or not names:
        parser.error("--scenarios: real, recheck or both")

    with tempfile.TemporaryDirectory(prefix="eir-overload-") as state_root:
        if args.stall:
            return stall_main(args, state_root)
        traffic, files = generate(
            load_config().policy, Path(state_root) / "data", args.handsets, args.tacs, args.seed
        )
        data_env = {
            "EIR_TAC_FILE": str(files["tac"]),
            "EIR_LISTS_IMPORT_FILES": str(files["lists"]),
            "EIR_REGISTRY_SEED_FILES": str(files["registry"]),
        }
        common = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "python": platform.python_version(),
            "hot_modules": compiled_build.status(),
            "cpus": os.cpu_count(),
            "handsets": len(traffic),
        }
        print_figures(common, args.json)
        for name in names:
            if name == "real":
                result = scenario(args, name, traffic, None, data_env, state_root)
            else:
                # The pool: the last handsets, which the real scenario never reaches.
                pool = traffic.shifted(len(traffic) - args.pool, args.pool)
                result = scenario(args, name, traffic, pool, data_env, state_root)
            if not args.json:
                print()
            print_figures(result, args.json)
    return 0


def stall_main(args: argparse.Namespace, state_root: str) -> int:
    from gateway.simulator.traffic import GatewayData, ImeiGenerator

    config = load_config()
    checks = ImeiGenerator(GatewayData.from_config(config), config.policy, seed=1).take(args.pool)
    gateway, port, metrics, log = start_gateway(tempfile.mkdtemp(dir=state_root))
    if _pin(gateway.pid, 1):
        _pin(0, 0)
    args.gateway_pid = gateway.pid
    try:
        result = aio.run(stall_run(args, port, checks))
        result["gateway_3004_total"] = scrape(metrics).get("diameter_overload_rejected_total")
    finally:
        gateway.terminate()
        gateway.wait(30)
        log.close()
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
