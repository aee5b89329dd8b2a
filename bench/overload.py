"""Overload: the gateway driven open loop at twice its capacity (issue #10 targets).

Method.

* The gateway runs as a process (``python -m gateway.cli run``, embedded default configuration,
  overload control and DOIC on, only the ports and state directory overridden) on loopback;
  with two or more CPUs it is pinned to CPU 1 and this process to CPU 0.
* The simulator (gateway.simulator) runs in this process. First a warm-up (the pool of
  ``--pool`` checks twice, so registry verdicts and decisions are cached, as for handsets that
  attach again), then the capacity: closed loop, window 64 x 4 connections, ``--capacity-
  seconds``; its answered MICR/s is the capacity C.
* Then open loop at ``--factor`` x C (default 2) over 4 connections for ``--seconds`` (default
  20), 5 s timeout per request, ``max_outstanding`` large enough that the simulator never drops
  a request itself. ``--doic`` makes the simulator an RFC 7683 reacting node (it abates what the
  gateway's OC-OLR asks and counts it as throttled).
* Meanwhile a probe (a thread with its own connection and Origin-Host) sends one MICR every
  50 ms from before the load until 8 s after it, recording each answer's latency and code; the
  gateway's /metrics is read every 0.5 s (reduction percentage, 3004 count, queueing delay).
* Reported: sent, answered, answered with 2001 / 3004, timed out (> 5 s), late, lost; latency
  percentiles; the probe's latencies during the load; the time after the load stopped until the
  probe's first answer within 100 ms; the gateway's RSS growth; peak reduction percentage.

Targets (issue #10): every MICR answered (MICA or 3004) within 5 s; after the load a MICR answered
within 100 ms within 5 s; RSS growth < 300 MB.

``--stall SECONDS``: what a stall costs instead. No capacity run: open loop at ``--rate`` (default
10,000/s, under the capacity) for ``--seconds``, and from 1 s on, every ``--stall-every`` seconds
(default 2), the gateway process is stopped for SECONDS (SIGSTOP, SIGCONT: a real stall, as a
descheduled process or a long collection); reported are the 3004 answers (refusals the stalls
cost) and the answers within 5 s.

Run: ``.venv/bin/python bench/overload.py [--seconds 20] [--factor 2] [--doic] [--json]``,
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

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

from gateway import aio  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.simulator.runner import SimulatorSettings, simulate  # noqa: E402
from gateway.simulator.traffic import GatewayData, ImeiGenerator  # noqa: E402
from tests.blocking_socket import recv_message  # noqa: E402


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
    """The gateway's overload metrics every 0.5 s."""

    def __init__(self, metrics_port: int, until: threading.Event) -> None:
        super().__init__(daemon=True)
        self.metrics_port = metrics_port
        self.until = until
        self.samples: list[tuple[float, dict[str, float]]] = []

    def run(self) -> None:
        while not self.until.wait(0.5):
            try:
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(args: argparse.Namespace, port: int) -> dict[str, Any]:
    config = load_config()
    checks = ImeiGenerator(GatewayData.from_config(config), config.policy, seed=1).take(args.pool)
    # Not verified: on a loaded machine the warm-up itself may meet overload control (3004).
    await warm_up(port, checks, 2 * len(checks), False)
    if args.stall:
        stop = threading.Event()
        staller = Staller(args.gateway_pid, args.stall, args.stall_every, stop)
        settings = SimulatorSettings(
            port=port, connections=4, mode="open", rate=args.rate, duration=args.seconds,
            max_duration=args.seconds + 60, timeout=5.0, max_outstanding=10_000_000,
            verify=False,
        )
        started = time.monotonic()
        staller.start()
        try:
            report, _ = await simulate(settings, checks)
        finally:
            stop.set()
            staller.join(10)
        return {
            "capacity": None, "rate": round(args.rate), "report": report,
            "load_started": started, "load_ended": started + args.seconds,
            "stalls": staller.stalls,
        }
    capacity_settings = SimulatorSettings(
        port=port, connections=4, window=64, duration=args.capacity_seconds,
        max_duration=args.capacity_seconds + 30, timeout=5.0,
    )
    capacity_report, _ = await simulate(capacity_settings, checks)
    capacity = capacity_report.achieved_rate
    rate = args.factor * capacity
    settings = SimulatorSettings(
        port=port, connections=4, mode="open", rate=rate, duration=args.seconds,
        max_duration=args.seconds + 60, timeout=5.0, max_outstanding=10_000_000,
        verify=False, doic=args.doic,
    )
    started = time.monotonic()
    report, _ = await simulate(settings, checks)
    ended = started + args.seconds  # the last request was due then
    return {
        "capacity": summary(capacity_report),
        "rate": round(rate),
        "report": report,
        "load_started": started,
        "load_ended": ended,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--factor", type=float, default=2.0, help="open-loop rate / capacity")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--doic", action="store_true", help="the simulator as a reacting node")
    parser.add_argument("--stall", type=float, default=0.0, help="stop the gateway this long")
    parser.add_argument("--stall-every", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=10_000.0, help="open-loop rate with --stall")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    state = tempfile.mkdtemp(prefix="eir-overload-")
    gateway, port, metrics, log = start_gateway(state)
    pinned = _pin(gateway.pid, 1) and _pin(0, 0)
    args.gateway_pid = gateway.pid
    stop_probe, stop_watch = threading.Event(), threading.Event()
    probe, watch = Probe(port, stop_probe), Watch(metrics, stop_watch)
    try:
        rss_before = _rss_mib(gateway.pid)
        probe.start()
        watch.start()
        run = aio.run(measure(args, port))
        # The probe goes on 8 s past the end of the load.
        time.sleep(max(0.0, run["load_ended"] + 8.0 - time.monotonic()))
        stop_probe.set()
        stop_watch.set()
        probe.join(10)
        watch.join(10)
        rss_after = _rss_mib(gateway.pid)
    finally:
        gateway.terminate()
        gateway.wait(30)
        log.close()
    report = run["report"]
    d = report.to_dict()
    ended = run["load_ended"]
    during = [lat for sent, lat, _ in probe.samples if run["load_started"] <= sent < ended and lat]
    recovered = next(
        (sent - ended for sent, lat, code in probe.samples
         if sent >= ended and lat is not None and lat < 0.1 and code in (2001, 3004)),
        None,
    )
    reductions = [m.get("diameter_overload_reduction_percent", 0.0) for _, m in watch.samples]
    final = watch.samples[-1][1] if watch.samples else {}
    result = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "pinned": pinned,
        "doic": args.doic,
        "capacity_micr_per_s": run["capacity"]["micr_per_s"] if run["capacity"] else None,
        "stalls": run.get("stalls"),
        "offered_rate": run["rate"],
        "seconds": args.seconds,
        "sent": d["sent"],
        "throttled_by_doic": d["throttled"],
        "answered": d["answered"],
        "answered_2001": d["results"].get("2001", 0) + d["results"].get("5422", 0),
        "answered_3004": d["results"].get("3004", 0),
        "other_results": {k: v for k, v in d["results"].items() if k not in ("2001", "5422", "3004")},
        "timed_out_5s": d["timed_out"],
        "late": d["late_answers"],
        "lost": d["lost"],
        "latency_ms": d["latency_ms"],
        "send_lag_ms": d.get("send_lag_ms"),
        "probe_during_load_p50_ms": round(_percentile(during, 0.5) * 1000, 1),
        "probe_during_load_p99_ms": round(_percentile(during, 0.99) * 1000, 1),
        "probe_failures": sum(1 for _, lat, _ in probe.samples if lat is None),
        "recovered_within_100ms_after_s": None if recovered is None else round(recovered, 2),
        "peak_reduction_percent": max(reductions, default=0.0),
        "gateway_3004_total": final.get("diameter_overload_rejected_total"),
        "rss_growth_mib": round(rss_after - rss_before, 1),
    }
    print_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
