"""N5g-eir benchmark: GetEquipmentStatus over h2c beside S13 in one process, real traffic.

Method.

* On loopback, two server processes: (1) the gateway, ``python -m gateway.cli run`` on its
  embedded default configuration (N5g-eir and S13 listeners, metrics port and state directory
  overridden); (2) the "ceiling": this script with ``--serve-ceiling``, the same HTTP/2 stack
  (``gateway.n5g_eir.server``) answering every request with a pre-built 200 EirResponseData
  without parsing or classifying anything: the best this HTTP/2 server can do. Both servers
  are pinned to CPU 1 and the load generators to CPU 0 (``taskset``-style affinity, where the
  machine has 2 CPUs), so that the servers' figures are one core's.
* Load: the AMF simulator (``eir-gateway simulate --interface n5g-eir``): 8 connections, real
  traffic: every request a PEI never sent before in the run (``imei-`` or ``imeisv-``) with a
  SUPI ``imsi-``, from the S13 simulator's generator (known and unknown TACs, list hits, bad
  check digits, registry verdicts of the default config; a different seed per run), every
  answer verified (against the ceiling: not verified, it answers WHITELISTED to all).
* CPU time per request: the server process's user + system time (``/proc/PID/stat``) over a
  run, divided by the requests answered; the ratio to the ceiling's in the same round.
* Scenarios: closed loop (``--connections`` x ``--window``, ``--count`` requests) against the
  gateway and the ceiling alternately, ``--rounds`` times; cross-check with h2load (Debian
  ``nghttp2-client``), 8 connections x 10 streams as 8 processes of ``-c1 -m10``, each on its
  own file of distinct URIs (one h2load process walks its URI file from the start on every
  connection: a single ``-c8`` would send each PEI 8 times);
  open loop at ``--rate`` checks/s for ``--seconds``, alone and while the S13 simulator sends
  ``--rate`` MICR/s to the same gateway process (latency from the scheduled send time).
* Warm-up: one closed-loop pass of other PEIs, so the process and its caches of TACs and
  registry declarations are warm, but no measured PEI has been seen before.

Run: ``.venv/bin/python bench/n5g_eir.py [--quick] [--json]``. Needs h2load on PATH for the
cross-check (skipped without it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import open_loop as open_loop_sender  # noqa: E402
from e2e import _pin, _wait_port, _wait_ready, free_port, loop_lag, scrape  # noqa: E402
from loopback_capture import (  # noqa: E402
    Capture,
    connections,
    diameter_exchanges,
    http2_exchanges,
    sending_window,
)
from loopback_capture import summary as wire_summary  # noqa: E402

from gateway.config import load_config  # noqa: E402
from gateway.n5g_eir.problem import STATUS_RESPONSES, Response  # noqa: E402
from gateway.n5g_eir.server import N5gEirServer  # noqa: E402
from gateway.n5g_eir.settings import HttpEndpoint, N5gEirSettings  # noqa: E402
from gateway.policy import EquipmentStatus  # noqa: E402
from gateway.simulator.amf import expected_of, outcome_of_response, query_of  # noqa: E402
from gateway.simulator.traffic import Check, GatewayData, ImeiGenerator  # noqa: E402

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

def pei_checks(pool: int, seed: int) -> list[tuple[str, str | None]]:
    """The simulator's PEIs (gateway.simulator.amf): one check in two an ``imeisv-`` with a
    Software Version; (request path, the outcome the default configuration answers)."""
    config = load_config(None)
    generator = ImeiGenerator(GatewayData.from_config(config), config.policy, MIX, imsi=True,
                              seed=seed)
    checks = [replace(c, sv=f"{n % 100:02d}") if n % 2 else c
              for n, c in enumerate(generator.take(pool))]
    return [(query_of(c), expected_of(c)) for c in checks]


def pei_uris(base: str, pool: int, seed: int) -> list[str]:
    return [f"{base}{path}" for path, _ in pei_checks(pool, seed)]


# --- h2load ---------------------------------------------------------------------------------

def h2load(args: list[str], uri_files: list[Path], work: Path, timeout: float) -> dict[str, Any]:
    """One h2load process per URI file, all at once (h2load walks its URI file from the start on
    each connection: with one connection per process and a file each, every request of the run
    carries a PEI no other request has). Counts summed, latencies from the per-request logs
    (start time in microseconds since the epoch, so comparable across processes)."""
    return h2load_results(*h2load_start(args, uri_files, work), timeout)


def h2load_start(args: list[str], uri_files: list[Path],
                 work: Path) -> tuple[list[subprocess.Popen[str]], list[Path]]:
    logs = [work / f"h2load-{n}.log" for n in range(len(uri_files))]
    for log in logs:
        log.unlink(missing_ok=True)  # h2load appends to an existing log
    processes = [subprocess.Popen(["h2load", *args, "-i", str(uri_file), "--log-file", str(log)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for uri_file, log in zip(uri_files, logs, strict=True)]
    return processes, logs


def h2load_results(processes: list[subprocess.Popen[str]], logs: list[Path],
                   timeout: float) -> dict[str, Any]:
    totals = [0] * 8
    for process in processes:
        text, err = process.communicate(timeout=timeout)
        if process.returncode != 0:
            raise RuntimeError(f"h2load failed: {err or text}")
        match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                          r"(\d+) failed, (\d+) errored", text)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        assert match and codes, text
        for n, value in enumerate((*match.groups()[1:], *codes.groups()[:1], *codes.groups()[2:])):
            totals[n] += int(value)
    latencies, first, last = [], None, None
    for log in logs:
        for line in log.read_text().splitlines():
            start_us, _status, duration_us = line.split("\t")[:3]
            start, duration = int(start_us), int(duration_us)
            latencies.append(duration / 1000.0)
            first = start if first is None else min(first, start)
            last = start + duration if last is None else max(last, start + duration)
    latencies.sort()
    elapsed = ((last or 0) - (first or 0)) / 1e6 or 1e-9
    done, succeeded, failed, errored, ok, _client_errors, server_errors = totals[:7]
    return {
        "requests": done,
        "succeeded": succeeded,
        "failed": failed + errored,
        "status_2xx": ok,
        "status_5xx": server_errors,
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

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(state: str, fresh: bool) -> tuple[list[subprocess.Popen[bytes]], dict[str, int], bool]:
    ports = {name: free_port() for name in ("s13", "n5g", "metrics", "ceiling", "api")}
    env = dict(os.environ)
    env.update(
        EIR_DIAMETER_LISTEN=f"tcp://127.0.0.1:{ports['s13']}",
        EIR_N5G_EIR_LISTEN=f"http://127.0.0.1:{ports['n5g']}",
        EIR_METRICS_LISTEN=f"127.0.0.1:{ports['metrics']}",
        EIR_API_LISTEN=f"127.0.0.1:{ports['api']}",
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
    # Servers on CPU 1, load generators (this process's children started later) on CPU 0.
    pinned = _pin(gateway.pid, 1) and _pin(ceiling.pid, 1) and _pin(0, 0)
    return [gateway, ceiling], ports, pinned


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


def simulator(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", "--json", "--progress", "off", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def amf_args(port: int, count: int | None, seed: int, *load: str, pool: int = 0) -> list[str]:
    """Real traffic: distinct PEIs (``pool``, by default ``count`` of them), each with a SUPI."""
    return ["--interface", "n5g-eir", "--port", str(port), "--imsi", "--sv", "01",
            "--pool", str(pool or count), "--seed", str(seed), *load] + (
        ["--count", str(count)] if count is not None else [])


def summary(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    report = json.loads(out) if out.strip().startswith("{") else {"error": err[-500:]}
    keep = ("sent", "answered", "errors", "timed_out", "achieved_rate", "latency_ms",
            "send_lag_ms", "verification", "ok")
    return {k: report[k] for k in keep if k in report} or report


def measured(server: subprocess.Popen[bytes], run: subprocess.Popen[str],
             timeout: float) -> dict[str, Any]:
    before = cpu_seconds(server.pid)
    result = summary(run, timeout)
    used = cpu_seconds(server.pid) - before
    answered = result.get("answered") or 0
    result["server_cpu_us_per_request"] = round(used / answered * 1e6, 1) if answered else None
    if isinstance(result.get("verification"), dict):
        result["verification"] = {k: result["verification"][k]
                                  for k in ("verified", "mismatches")}
    return result


def children_cpu() -> float:
    """CPU seconds of this process's children reaped so far (a generator's, once waited for:
    this script waits for one at a time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (/proc/PID/stat field 4)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def helpers_cpu(pid: int) -> float:
    """CPU seconds of a process's own child processes (the gateway's observation writer)."""
    total = 0.0
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def per_request_us(seconds: float, requests: int) -> float | None:
    return round(seconds / requests * 1e6, 1) if requests else None


H2LOAD_OPEN_PROCESSES = 4  # open loop: 4 AMF connections, one h2load process (-c1) each


def open_loop(args: argparse.Namespace, ports: dict[str, int], gateway: subprocess.Popen[bytes],
              work: Path, seed: int, amf: str, beside_s13: bool,
              pinned: bool = False) -> dict[str, Any]:
    """One open-loop run at ``--rate`` checks/s for ``--seconds``: the AMF side driven by the
    AMF simulator or by h2load (``--rps``, its own timer), alone or while the S13 simulator
    sends ``--rate`` MICR/s to the same gateway. Reports each side's end-to-end latency (as
    its generator saw it), the gateway-side latency and each generator's slip (from a capture
    on lo, where dumpcap is available), the gateway's loop lag and check durations. The S13
    side: ``--s13-generator`` (bench/open_loop.py's sender, or the S13 simulator)."""
    rate, seconds = args.rate, args.seconds
    pool = rate * (seconds + 1)
    expected: dict[str, str | None] | None = None
    files: list[Path] = []
    if amf == "h2load":
        checks = pei_checks(rate * seconds, seed)
        expected = dict(checks)
        per = len(checks) // H2LOAD_OPEN_PROCESSES
        for n in range(H2LOAD_OPEN_PROCESSES):
            files.append(work / f"open-uris-{n}.txt")
            files[-1].write_text("".join(f"http://127.0.0.1:{ports['n5g']}{path}\n"
                                         for path, _ in checks[n * per:(n + 1) * per]))
    # Longer than the N5g-eir run, which starts once MICRs flow; the S13 figures from the
    # capture are those of the MICRs sent while N5g-eir checks were being sent.
    s13 = S13Side(args.s13_generator, ports["s13"], rate, seconds + 6, seed + 1, pinned) \
        if beside_s13 else None
    why_not = Capture.available()
    capture = None
    if why_not is None:
        capture = Capture(work / f"open-{amf}-{'mixed' if beside_s13 else 'alone'}.pcap",
                          [ports["n5g"], ports["s13"]])
        capture.start()
        realtime([capture.pid], args.realtime)
    out: dict[str, Any] = {"generator": amf}
    try:
        before = scrape(ports["metrics"])
        gateway_before = cpu_seconds(gateway.pid), helpers_cpu(gateway.pid), time.monotonic()
        if s13 is not None:
            s13.start()
            _wait_for_checks(ports["metrics"], "s13", before, s13.alive)
            realtime(s13.pids(), args.realtime)
        if amf == "h2load":
            cpu_before = cpu_seconds(gateway.pid)
            per = rate * seconds // H2LOAD_OPEN_PROCESSES
            started = h2load_start(["-c", "1", "-m", "100", "-n", str(per), "--rps",
                                    str(rate // H2LOAD_OPEN_PROCESSES)], files, work)
            realtime([p.pid for p in started[0]], args.realtime)
            generator_before = children_cpu()
            e2e = h2load_results(*started, seconds + 120)
            e2e["generator_cpu_us_per_request"] = per_request_us(
                children_cpu() - generator_before, e2e["requests"])
            e2e["server_cpu_us_per_request"] = per_request_us(
                cpu_seconds(gateway.pid) - cpu_before, e2e["requests"])
        else:
            # Beside the S13 simulator on one core, both sleep on their timers (--spin-ms 0:
            # two busy-waiting generators take turns in slices of milliseconds); alone, this
            # one busy-waits for sends on time (unless --realtime).
            spin = "0" if beside_s13 or args.realtime else "2"
            amf_run = simulator(amf_args(
                ports["n5g"], None, seed, "--connections", str(AMF_CONNECTIONS), "--rate",
                str(rate), "--duration", str(seconds), "--spin-ms", spin, pool=pool))
            realtime([amf_run.pid], args.realtime)
            generator_before = children_cpu()
            e2e = measured(gateway, amf_run, seconds + 120)
            e2e["generator_cpu_us_per_request"] = per_request_us(
                children_cpu() - generator_before, e2e.get("answered") or 0)
        out["n5g_eir"] = e2e
        if s13 is not None:
            out["s13"] = s13.finish(seconds + 120)
        # The gateway's own view over the run: its event loop lag (a stall in the gateway
        # shows there, one in the generators or the kernel does not) and the time from a
        # decoded request to its encoded answer (the 99th percentile's bucket).
        after = scrape(ports["metrics"])
        elapsed = time.monotonic() - gateway_before[2]
        out["gateway_cpu_share"] = {
            "process": round((cpu_seconds(gateway.pid) - gateway_before[0]) / elapsed, 3),
            "its_child_processes": round(
                (helpers_cpu(gateway.pid) - gateway_before[1]) / elapsed, 3),
        }
        out["gateway_loop_lag"] = loop_lag(before, after)
        out["gateway_check_duration"] = {
            interface: loop_lag(before, after, "eir_check_duration_seconds_bucket{interface="
                                f'"{interface}",le="')
            for interface in ("n5g_eir", "s13") if interface == "n5g_eir" or beside_s13}
    finally:
        capture_before = children_cpu()
        dropped = capture.stop() if capture is not None else ""
    if capture is None:
        out["wire"] = {"skipped": why_not}
        return out
    out["wire"] = wire_figures(capture.path, ports, rate, amf, expected, beside_s13)
    out["wire"]["capture"] = dropped
    # dumpcap's own CPU over the run (on the generators' core), as a share of one core
    out["wire"]["capture_cpu_share"] = round(
        (children_cpu() - capture_before) / (time.monotonic() - gateway_before[2]), 3)
    if args.keep_captures:
        shutil.move(capture.path, Path(args.keep_captures) / capture.path.name)
    else:
        capture.path.unlink()
    return out


AMF_CONNECTIONS = 4
S13_CONNECTIONS = 2


class S13Side:
    """The S13 load beside N5g-eir, ``rate`` MICR/s for ``seconds``, real traffic (IMEIs never
    sent before in the run, each with an IMSI), every answer checked: bench/open_loop.py's
    sender (requests encoded before the clock, one process pinned to CPU 0: the lighter) or
    the S13 simulator (sleeping on its timer: --spin-ms 0)."""

    def __init__(self, kind: str, port: int, rate: int, seconds: int, seed: int,
                 pinned: bool) -> None:
        self.kind, self.port, self.rate, self.seconds, self.seed = kind, port, rate, seconds, seed
        self.pinned = pinned
        self._simulator: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._result: dict[str, Any] = {}
        self._plan: open_loop_sender.SenderPlan | None = None
        self._checks: list[Check] = []
        if kind == "open_loop":
            total = rate * seconds
            config = load_config(None)
            self._checks = ImeiGenerator(GatewayData.from_config(config), config.policy, None,
                                         imsi=True, seed=seed).take(total)
            self._plan = open_loop_sender.SenderPlan(port, rate, S13_CONNECTIONS, total,
                                                     destination_realm=config.peer.identity
                                                     .origin_realm)

    def start(self) -> None:
        if self._plan is None:
            self._simulator = simulator([
                "--port", str(self.port), "--rate", str(self.rate), "--duration",
                str(self.seconds), "--imsi", "--pool", str(self.rate * self.seconds), "--seed",
                str(self.seed), "--connections", str(S13_CONNECTIONS), "--spin-ms", "0"])
            return
        plan, checks = self._plan, self._checks

        def send() -> None:
            try:
                self._result = open_loop_sender.run(plan, checks, 1, 0 if self.pinned else None)
            except Exception as exc:  # reported, not raised in the thread
                self._result = {"error": repr(exc)}

        self._thread = threading.Thread(target=send, name="s13-open-loop")
        self._thread.start()

    def alive(self) -> bool:
        if self._simulator is not None:
            return self._simulator.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def pids(self) -> list[int]:
        """The generator's processes (this script's children other than h2load and dumpcap)."""
        if self._simulator is not None:
            return [self._simulator.pid]
        return [pid for pid in children_of(os.getpid())
                if "multiprocessing" in Path(f"/proc/{pid}/cmdline").read_text()]

    def finish(self, timeout: float) -> dict[str, Any]:
        """Its report, in the simulator's terms (answered, errors, latency from the scheduled
        send, send lag, verification), and its CPU per request."""
        before = children_cpu()
        if self._simulator is not None:
            out = summary(self._simulator, timeout)
            out["generator"] = "S13 simulator (--spin-ms 0)"
        else:
            assert self._thread is not None
            self._thread.join(timeout)
            r = self._result
            if "error" in r or not r:
                return {"generator": "bench/open_loop.py", "error": r.get("error", "no report")}
            errors = sum(r[k] for k in ("mica_mismatch", "too_busy_3004", "other_result",
                                        "late", "never"))
            out = {
                "generator": "bench/open_loop.py (1 process)",
                "sent": r["sent"],
                "answered": r["answered_within_timeout"],
                "errors": errors,
                "latency_ms": r["latency_within_timeout_ms"],
                "send_lag_ms": r["schedule_slip_ms"]["handed"],
                "verification": {"verified": r["mica"] + r["mica_mismatch"],
                                 "mismatches": r["mica_mismatch"]},
                "too_busy_3004": r["too_busy_3004"],
                "late": r["late"],
                "never": r["never"],
            }
        out["generator_cpu_us_per_request"] = per_request_us(children_cpu() - before,
                                                             out.get("answered") or 0)
        return out
REALTIME_PRIORITY = 10  # --realtime: SCHED_FIFO priority of the gateway and the generators


def realtime(pids: list[int], on: bool) -> None:
    """--realtime: the gateway's loop thread and the generators under SCHED_FIFO (each on its
    pinned core), so that other work on a shared machine cannot delay them; a diagnostic for
    a machine that is not quiet: only processes that sleep between events may be given it
    (the simulators therefore sleep on the timer: --spin-ms 0)."""
    if not on:
        return
    for pid in pids:
        try:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
        except (OSError, AttributeError) as exc:
            raise RuntimeError(f"--realtime: SCHED_FIFO refused ({exc}); run as root") from exc


def wire_figures(pcap: Path, ports: dict[str, int], rate: int, amf: str,
                 expected: dict[str, str | None] | None, beside_s13: bool) -> dict[str, Any]:
    """Gateway-side latency and slip per interface from the capture; the N5g-eir answers
    checked against ``expected`` (the PEIs h2load sent)."""
    conns = connections(pcap, {ports["n5g"], ports["s13"]})
    n5g = [http2_exchanges(c, _outcome) for c in conns if c.server_port == ports["n5g"]]
    per_connection = rate / (H2LOAD_OPEN_PROCESSES if amf == "h2load" else AMF_CONNECTIONS)
    # From SETTLE_SECONDS after the first N5g-eir request: the generators' own start (processes
    # started on the generators' core, connections opened one after another) is left out.
    window = sending_window(n5g)
    if window is not None:
        window = (window[0] + SETTLE_SECONDS, window[1])
    out: dict[str, Any] = {"n5g_eir": wire_summary(n5g, per_connection, expected, window)}
    if beside_s13:
        s13 = [diameter_exchanges(c) for c in conns if c.server_port == ports["s13"]]
        out["s13"] = wire_summary(s13, rate / S13_CONNECTIONS, window=window)
    out["from_seconds_after_start"] = SETTLE_SECONDS
    return out


SETTLE_SECONDS = 0.2


def _outcome(status: int, body: bytes) -> str:
    return outcome_of_response(status, body)[1]


def _wait_for_checks(metrics_port: int, interface: str, before: dict[str, float],
                     alive: Callable[[], bool]) -> None:
    """Until the gateway has answered a check on ``interface`` since ``before`` (at most 30 s)."""
    prefix = f'eir_checks_total{{interface="{interface}"'

    def count(sample: dict[str, float]) -> float:
        return sum(v for k, v in sample.items() if k.startswith(prefix))

    deadline = time.monotonic() + 30
    while count(scrape(metrics_port)) <= count(before):
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"no {interface} checks answered (the generator ended or was "
                               f"not sending after 30 s; its report follows the run)")
        time.sleep(0.05)


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "decision_cache": "off" if args.fresh else "on",
        "load_average_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as state:
        processes, ports, pinned = start(state, args.fresh)
        gateway, ceiling = processes
        results["pinned"] = "generators CPU 0, servers CPU 1" if pinned else "no"
        realtime([gateway.pid, ceiling.pid], args.realtime)
        results["realtime"] = args.realtime
        results["s13_generator"] = args.s13_generator
        results["ports"] = ports
        closed = ["--connections", str(args.connections), "--window", str(args.window)]
        seed = args.seed
        try:
            # Warm-up: other PEIs (a seed of their own), so the measured ones are all new.
            # (--open-only: this pass alone, then the open loops.)
            summary(simulator(amf_args(ports["n5g"], args.count // 2, seed + 1000, *closed)),
                    600)
            summary(simulator(amf_args(ports["ceiling"], args.count // 2, seed + 1000,
                                       "--no-verify", *closed)), 600)
            for n in range(0 if args.open_only else args.rounds):
                gw = measured(gateway, simulator(
                    amf_args(ports["n5g"], args.count, seed + n, *closed)), 600)
                top = measured(ceiling, simulator(
                    amf_args(ports["ceiling"], args.count, seed + n, "--no-verify", *closed)),
                    600)
                ratio = {
                    "rate": round(gw.get("achieved_rate", 0) / top["achieved_rate"], 3)
                    if top.get("achieved_rate") else None,
                    "cpu_per_request": round(gw["server_cpu_us_per_request"]
                                             / top["server_cpu_us_per_request"], 2)
                    if gw.get("server_cpu_us_per_request")
                    and top.get("server_cpu_us_per_request") else None,
                }
                results.setdefault("closed_loop", []).append(
                    {"gateway": gw, "ceiling": top, "ratio_to_ceiling": ratio})
            if shutil.which("h2load") and not args.open_only:
                # -c8 -m10 as 8 processes of -c1 -m10, each on its own distinct PEIs.
                work = Path(state)
                per = args.count // 8
                uris = pei_uris("http://127.0.0.1:{port}", per * 8, seed + 500)
                for who, server, port in (("gateway", gateway, ports["n5g"]),
                                          ("ceiling", ceiling, ports["ceiling"])):
                    files = []
                    for n in range(8):
                        files.append(work / f"uris-{n}.txt")
                        files[-1].write_text("\n".join(uris[n * per:(n + 1) * per])
                                             .replace("{port}", str(port)) + "\n")
                    before = cpu_seconds(server.pid)
                    cross = h2load(["-c", "1", "-m", "10", "-n", str(per)], files, work, 600)
                    cross["server_cpu_us_per_request"] = round(
                        (cpu_seconds(server.pid) - before) / max(cross["requests"], 1) * 1e6, 1)
                    results[f"h2load_c8_m10_{who}"] = cross
            results["open_loop_rate"] = args.rate
            work = Path(state)
            results["open_loop_alone"] = open_loop(args, ports, gateway, work, seed + 2000,
                                                   "simulator", beside_s13=False)
            for n, amf in enumerate(args.mixed_amf):
                results.setdefault("open_loop_beside_s13", {})[amf] = open_loop(
                    args, ports, gateway, work, seed + 4000 + 100 * n, amf, beside_s13=True,
                    pinned=pinned)
        finally:
            stop(processes)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve-ceiling", type=int, metavar="PORT")
    parser.add_argument("--quick", action="store_true", help="short run (smoke)")
    parser.add_argument("--fresh", action="store_true", help="decision cache off")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--count", type=int, default=60_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--open-only", action="store_true",
                        help="the open loops only (after the warm-up)")
    parser.add_argument("--realtime", action="store_true",
                        help="diagnostic on a busy machine: the servers' loop threads, the "
                        "generators and the capture under SCHED_FIFO on their cores (root)")
    parser.add_argument("--keep-captures", metavar="DIR",
                        help="keep the open loops' pcap files there (ports in the report)")
    parser.add_argument("--s13-generator", choices=("open_loop", "simulator"),
                        default="open_loop",
                        help="the S13 side beside N5g-eir: bench/open_loop.py's sender (default) "
                        "or the S13 simulator")
    parser.add_argument("--mixed-amf", nargs="+", choices=("h2load", "simulator"),
                        help="the AMF side's generator(s) beside S13 (default: h2load, when "
                        "installed, and the AMF simulator)")
    args = parser.parse_args()
    if args.serve_ceiling is not None:
        from gateway.aio import run as aio_run

        aio_run(serve_ceiling(args.serve_ceiling))
        return
    if args.quick:
        args.count, args.seconds, args.rounds, args.rate = 10_000, 3, 1, 2000
    if args.mixed_amf is None:
        args.mixed_amf = ["h2load", "simulator"] if shutil.which("h2load") else ["simulator"]
    results = run(args)
    if args.json:
        print(json.dumps(results))
        return
    print(f"N5g-eir over h2c, real traffic (distinct PEIs with SUPIs), decision cache "
          f"{results['decision_cache']}; Python {results['python']}, {results['machine']}, "
          f"pinned: {results['pinned']}, load average {results['load_average_at_start']:.1f}")
    for r in results.get("closed_loop", []):
        for who in ("gateway", "ceiling"):
            x = r[who]
            print(f"  closed {who:8} {x.get('achieved_rate', 0):>9,.0f}/s  "
                  f"CPU {x.get('server_cpu_us_per_request')} us/request  "
                  f"latency ms {x.get('latency_ms')}  errors {x.get('errors')}")
        print(f"  ratio to the ceiling: {r['ratio_to_ceiling']}")
    for who in ("gateway", "ceiling"):
        x = results.get(f"h2load_c8_m10_{who}")
        if x:
            print(f"  h2load 8 x (-c1 -m10) {who:8} {x['per_second']:>7,}/s  CPU "
                  f"{x['server_cpu_us_per_request']} us/request  latency ms {x['latency_ms']}  "
                  f"failed {x['failed']}")
    print_open(f"open {results['open_loop_rate']}/s alone", results["open_loop_alone"])
    for amf, x in results.get("open_loop_beside_s13", {}).items():
        print_open(f"open {results['open_loop_rate']}/s each, beside S13 ({amf})", x)


def print_open(title: str, x: dict[str, Any]) -> None:
    print(f"  {title}: generators {x['generator']} (N5g-eir)"
          + (f", {x['s13'].get('generator')} (S13)" if "s13" in x else ""))
    wire = x.get("wire", {})
    for side in ("n5g_eir", "s13"):
        if side not in x:
            continue
        e2e, seen = x[side], wire.get(side, {})
        lag = e2e.get("send_lag_ms", {})
        checked = e2e.get("verification") or (
            {"verified": seen["verified"], "mismatches": seen["mismatches"]}
            if "verified" in seen else None)
        print(f"    {side:8} answered {e2e.get('answered', e2e.get('requests'))}, "
              f"errors {e2e.get('errors', e2e.get('failed'))}, checked {checked}")
        print(f"      end to end ms        {e2e.get('latency_ms')}"
              + (f"  (send lag p99 {lag.get('p99')} ms)" if lag else "")
              + f"  generator CPU {e2e.get('generator_cpu_us_per_request')} us/request")
        if seen:
            print(f"      gateway side ms      {seen.get('gateway_side_ms')}  "
                  f"({seen.get('requests')} requests, {seen.get('unanswered')} unanswered; "
                  f"latency and slip from {wire.get('from_seconds_after_start')} s on)")
            print(f"      generator slip ms    {seen.get('slip_ms')}")
    if "skipped" in wire:
        print(f"    no capture: {wire['skipped']}")
    print(f"    gateway CPU share {x['gateway_cpu_share']}; dumpcap's "
          f"{wire.get('capture_cpu_share')}; "
          f"loop lag {x['gateway_loop_lag']}; check duration "
          f"{x['gateway_check_duration']}; capture: {wire.get('capture') or 'no drops reported'}")


if __name__ == "__main__":
    main()
