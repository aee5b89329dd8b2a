"""Where the event loop's stalls come from: open-loop real traffic, the gateway instrumented.

Method.

* bench/real_traffic.py's handsets (every one new, with IMSI and Software-Version) and data
  files, the gateway (embedded default configuration, observation log on) started by this script
  pinned to CPU 1, the simulator (this process) on CPU 0, open loop at ``--rate`` for
  ``--seconds`` after a warm-up of 20,000 checks, ``--env KEY=VALUE`` for more ``EIR_*``.
* Inside the gateway (this file run with ``--gateway``: probes installed, then ``eir-gateway
  run``):

  - a 5 ms loop timer records each lag together with what the loop's thread did over the
    interval: its CPU time and its time runnable but not running (the kernel's
    ``/proc/self/task/TID/schedstat``: other processes, or another thread of ours, had the core).
    The rest of a lag is time the thread slept: waiting for the GIL, or idle;
  - ``gc.callbacks`` time every collection (CPU of the collecting thread), by generation, with
    how many objects the young generations held (``--census N``: every Nth collection, the
    young generations' objects by type);
  - ``--time MODULE:QUALNAME`` times each call of an interpreted function (CPU, page faults);
  - ``--watch-ms MS``: a watchdog thread samples the loop thread's Python stack every 2 ms
    while the timer is overdue by more than MS (what held the loop, when it was Python), with
    the thread's scheduler state (``/proc/self/task/TID/stat``): R, running or waiting for a
    core; S, sleeping: on the GIL, since an overdue loop thread does not wait for its own
    timer. Off by default: the watching thread takes the GIL every 2 ms, a disturbance of its
    own (and the stack it gets is where the loop thread let the GIL go: the start of an
    interpreted function, never compiled code).

* Per request (bench/request_trace.py): the simulator and the gateway timestamp every MICR,
  joined on (client port, Hop-by-Hop), so each end-to-end latency splits into the simulator's
  send lag, the time before the gateway read it, the gateway's read-to-write time and the
  time before the simulator handled the answer; the slowest 1 % and 0.1 % are shown by
  component and by traffic category. Every answer slower than ``--slow-ms`` (2) is attributed
  (request_trace.attribute): the simulator's share, and over its time in the gateway the loop
  thread's CPU in reads, in collections and in other callbacks, its run-queue wait (another
  process on its core: the machine's doing) and the rest (sleeping: the GIL, or not yet
  delivered); episodes of overlapping slow answers are listed, the worst first. The simulator's own loop lag (a 5 ms timer, with its
  thread's CPU and run-queue wait) and where the gateway's observation writer process runs
  (sampled every 5 ms) are printed too: a generator that lags, or a writer on the loop's core,
  shows there.
* ``--closed-first SECONDS`` runs a saturated closed loop (4 x 64) before the open loop, as
  bench/e2e.py does: what it leaves behind (a writer backlog) shows in the open loop.
* ``--realtime`` (root, a diagnostic): the gateway's event loop thread and the simulator under
  ``SCHED_FIFO``, the simulator sleeping on its timer between sends (a spinning real-time task
  is throttled), so that on a shared machine no other process takes their cores: what remains
  is the gateway's own work and the generator's. The loop thread's CPU time and page faults per
  read, per second and for the longest reads, tell its own long callbacks from queueing.
* ``--keep DIR`` keeps the raw records (probes.json, the per-request and per-read .bin arrays
  of doubles, the run's start on CLOCK_MONOTONIC) for a closer look at one stall.
* Printed: the latency the simulator measured, the lag percentiles, the stalls (lags over
  ``--stall-ms``) split into the loop thread's own CPU, run-queue wait and the rest, the
  collections, and the frames seen most often during stalls. Own CPU in a stall is the gateway's
  doing (a long callback, a backlog being worked off); run-queue wait is the machine's (or the
  gateway's other threads); the rest is mostly GIL waits.

``--bare`` runs the gateway without probes (they keep every sample: tens of MB over minutes)
for a resident memory check, sampled every 30 s.

Run: ``.venv/bin/python bench/stalls.py [--rate 10000] [--seconds 20] [--closed-first S]
[--bare] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

TICK = 0.005  # seconds between loop timer samples
WATCH_AFTER = 0.0  # the watchdog samples stacks once the timer is this late (--watch-ms; 0: off)
WATCH_ENV = "EIR_BENCH_STALLS_WATCH_MS"  # how the driver tells the gateway's probes
CENSUS_ENV = "EIR_BENCH_STALLS_CENSUS"  # --census: every Nth collection, its objects by type
TIME_ENV = "EIR_BENCH_STALLS_TIME"  # --time: interpreted functions to time, comma-separated
LIGHT_ENV = "EIR_BENCH_STALLS_LIGHT"  # --light: no per-request taps
WATCH_EVERY = 0.002
RSS_EVERY = 30.0  # seconds between samples of the gateway's resident memory
REALTIME_PRIORITY = 10  # --realtime: SCHED_FIFO priority of the gateway's event loop thread

from request_trace import (  # noqa: E402
    GatewayTap,
    LoopSampler,
    TracingSimulation,
    attribute,
    components,
    load,
    read_cpu,
)

# ---------------------------------------------------------------------------------------------
# Inside the gateway


class Probes:
    """Installed in the gateway process; ``dump`` writes what they saw as JSON."""

    def __init__(self, out: str, watch_after: float) -> None:
        self.out = out
        self.watch_after = watch_after
        self.sampler = LoopSampler(TICK)
        self.tap = GatewayTap()
        # (end time, generation, cpu, objects found in cycles, start time, young objects: the
        # collector's count of allocations less deallocations since the last collection)
        self.collections: list[tuple[float, int, float, int, float, int]] = []
        # --census: (time, objects in the young generations by type) every Nth collection
        self.census_every = int(os.environ.get(CENSUS_ENV, "0"))
        self.census: list[tuple[float, list[tuple[str, int]]]] = []
        self.timed: dict[str, list[tuple[float, float, int]]] = {}  # CallTimer.calls
        self.stacks: list[tuple[float, str, list[str]]] = []  # (time, state, frames)
        self._gc_started = self._gc_started_at = 0.0
        self._gc_young = 0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_young = gc.get_count()[0]
            if self.census_every and len(self.collections) % self.census_every == 0:
                kinds = Counter(
                    type(o).__qualname__ for g in (0, 1) for o in gc.get_objects(g)
                )
                self.census.append((time.perf_counter(), kinds.most_common(15)))
            self._gc_started = time.thread_time()
            self._gc_started_at = time.perf_counter()
        else:
            cpu = time.thread_time() - self._gc_started
            self.collections.append((
                time.perf_counter(), info["generation"], cpu, info["collected"],
                self._gc_started_at, self._gc_young,
            ))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop's thread, once the gateway serves."""
        self.sampler.start(loop)
        if not self.watch_after:
            return
        main, tid = threading.get_ident(), threading.get_native_id()
        threading.Thread(
            target=self._watch, args=(main, tid), name="stall-watch", daemon=True
        ).start()

    def _watch(self, main: int, tid: int) -> None:
        stat = os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)
        while True:
            time.sleep(WATCH_EVERY)
            if time.perf_counter() - self.sampler.last_tick > TICK + self.watch_after:
                # Read before taking the GIL for the stack: the state the stall is in.
                state = os.pread(stat, 512, 0).rpartition(b")")[2].split()[0].decode()
                frame = sys._current_frames().get(main)
                if frame is not None:
                    stack = traceback.extract_stack(frame)
                    self.stacks.append((
                        time.perf_counter(),
                        state,
                        [f"{Path(f.filename).name}:{f.name}:{f.lineno}" for f in stack[-12:]],
                    ))

    def dump(self) -> None:
        Path(self.out).write_text(json.dumps({
            "lags": self.sampler.lags, "collections": self.collections, "stacks": self.stacks,
            "census": self.census, "timed": self.timed,
        }))
        self.tap.dump(Path(self.out).parent)


class CallTimer:
    """``--time MODULE:QUALNAME``: each call of an interpreted function or method timed, its
    thread's CPU time and page faults (what a callback outside the reads costs, and whether it
    touches fresh memory)."""

    def __init__(self, targets: list[str]) -> None:
        self.calls: dict[str, list[tuple[float, float, int]]] = {}  # (time, CPU, faults)
        for target in targets:
            self._wrap(target)

    def _wrap(self, target: str) -> None:
        import functools
        import importlib
        import resource

        module_name, _, qualname = target.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        calls = self.calls.setdefault(target, [])
        usage, thread = resource.getrusage, resource.RUSAGE_THREAD

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            faults, cpu, at = usage(thread).ru_minflt, time.thread_time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append((at, time.thread_time() - cpu, usage(thread).ru_minflt - faults))

        setattr(owner, name, timed)


def run_gateway(out: str) -> int:
    from gateway import service
    from gateway.cli import main

    probes = Probes(out, float(os.environ.get(WATCH_ENV, WATCH_AFTER * 1e3)) / 1e3)
    if not os.environ.get(LIGHT_ENV):
        probes.tap.install()
    timer = CallTimer([t for t in os.environ.get(TIME_ENV, "").split(",") if t])
    probes.timed = timer.calls
    start, stop = service.Gateway.start, service.Gateway.stop

    async def instrumented_start(self: service.Gateway) -> None:
        await start(self)
        probes.start(asyncio.get_running_loop())

    async def instrumented_stop(self: service.Gateway) -> None:
        await stop(self)
        probes.dump()  # the process ends with os._exit once stopped (gateway.cli.run)

    service.Gateway.start = instrumented_start  # type: ignore[method-assign]
    service.Gateway.stop = instrumented_stop  # type: ignore[method-assign]
    return main(["run"])


# ---------------------------------------------------------------------------------------------
# The driver


def open_loop(port: int, rate: float, seconds: float, spin: float) -> Any:
    from gateway.simulator.settings import SimulatorSettings

    return SimulatorSettings(
        port=port, connections=4, mode="open", rate=rate, duration=seconds,
        max_duration=seconds + 30.0, timeout=5.0, verify=True, spin=spin,
    )


class WriterPlacement:
    """Where the gateway's observation writer process runs, sampled every TICK from the
    simulator's process: the share of samples it was running or runnable (R) on each CPU."""

    def __init__(self, gateway: int) -> None:
        self.gateway = gateway
        self.samples: Counter[str] = Counter()
        self.pid: int | None = None
        self.cpu_at_start = 0.0

    def _find(self) -> int | None:
        children = []
        for task in os.listdir(f"/proc/{self.gateway}/task"):
            with open(f"/proc/{self.gateway}/task/{task}/children") as f:
                children += [int(pid) for pid in f.read().split()]
        for pid in children:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"observation_writer" in f.read():
                    return pid
        return None

    async def run(self) -> None:
        try:
            self.pid = self._find()
        except OSError:
            return
        if self.pid is None:
            return
        self.cpu_at_start = sum(thread_cpu(self.pid).values())
        fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY)
        try:
            while True:
                await asyncio.sleep(TICK)
                fields = os.pread(fd, 1024, 0).rpartition(b")")[2].split()
                state, cpu = fields[0].decode(), int(fields[36])  # stat fields 3 and 39
                self.samples[f"{state} cpu{cpu}" if state == "R" else state] += 1
        except OSError:
            return
        finally:
            os.close(fd)

    def summary(self) -> dict[str, Any]:
        total = sum(self.samples.values())
        policy = None
        if self.pid is not None:
            try:
                policy = {
                    "scheduler": os.sched_getscheduler(self.pid),
                    "nice": os.getpriority(os.PRIO_PROCESS, self.pid),
                    "affinity": sorted(os.sched_getaffinity(self.pid)),
                }
            except OSError:
                pass
        return {
            "pid": self.pid, "policy": policy, "samples": total,
            "shares": {k: round(v / total, 4) for k, v in self.samples.most_common()}
            if total else {},
        }


def pressure() -> dict[str, float]:
    """The kernel's pressure stall totals (PSI, seconds): time some task waited for a core, for
    memory (reclaim, a stall no process of ours causes) or for I/O."""
    out: dict[str, float] = {}
    for resource in ("cpu", "memory", "io"):
        try:
            text = Path(f"/proc/pressure/{resource}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            kind, *fields = line.split()
            total = dict(f.split("=") for f in fields)["total"]
            out[f"{resource}_{kind}"] = int(total) / 1e6
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by each thread of a process, by thread name and id."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rpartition(")")[2].split()
        out[f"{name} {tid}"] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def lag_summary(lags: list[Any], stall: float) -> dict[str, Any]:
    """Percentiles of a LoopSampler's lags (ms), and the stalls' own CPU and run-queue wait."""
    values = [row[1] for row in lags]
    stalls = [row for row in lags if row[1] > stall]
    return {
        "samples": len(values),
        **{k: round(percentile(values, q) * 1e3, 2) for k, q in
           (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))},
        "stalls": len(stalls),
        "stall_own_cpu_ms": round(sum(min(r[2], r[1] + TICK) for r in stalls) * 1e3, 1),
        "stall_run_queue_ms": round(sum(r[3] for r in stalls) * 1e3, 1),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def analyse(probes: dict[str, Any], stall: float, started: float) -> dict[str, Any]:
    lags = [row for row in probes["lags"] if row[0] >= started]
    values = [row[1] for row in lags]
    span = (lags[-1][0] - lags[0][0]) if len(lags) > 1 else 0.0
    stalls = [row for row in lags if row[1] > stall]
    stalled = sum(row[1] + TICK for row in stalls)  # the intervals the stalls ended
    own = sum(min(row[2], row[1] + TICK) for row in stalls)
    queued = sum(row[3] for row in stalls)
    out: dict[str, Any] = {
        "lag_ms": {
            "samples": len(values),
            **{k: round(percentile(values, q) * 1e3, 2) for k, q in
               (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))},
        },
        "loop_thread_cpu_share": round(sum(row[2] for row in lags) / span, 3) if span else None,
        "run_queue_share": round(sum(row[3] for row in lags) / span, 3) if span else None,
        "stalls": {
            "count": len(stalls),
            "over_ms": stall * 1e3,
            "intervals_ms": round(stalled * 1e3, 1),
            # Over a stall's interval (lag + one tick): the loop thread computing, waiting for
            # a core, or neither (the GIL, or nothing to do).
            "own_cpu_ms": round(own * 1e3, 1),
            "run_queue_ms": round(queued * 1e3, 1),
        },
        "collections": {},
    }
    for generation in (0, 1, 2):
        rows = [r for r in probes["collections"] if r[1] == generation and r[0] >= started]
        cpu = [r[2] for r in rows]
        if cpu:
            out["collections"][f"gen{generation}"] = {
                "count": len(cpu),
                # gateway.collector runs a full collection once young ones found 1,000
                "found_in_cycles": sum(r[3] for r in rows),
                "cpu_p50_ms": round(percentile(cpu, 0.5) * 1e3, 3),
                "young_objects_p50": percentile([float(r[5]) for r in rows], 0.5),
                "young_objects_max": max(r[5] for r in rows),
                "cpu_p99_ms": round(percentile(cpu, 0.99) * 1e3, 3),
                "cpu_max_ms": round(max(cpu) * 1e3, 3),
            }
    frames: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for t, state, stack in probes["stacks"]:
        if t >= started:
            frames.update(set(stack))
            leaves[" < ".join(reversed(stack[-3:]))] += 1
            states[state] += 1
    out["stall_thread_states"] = dict(states)
    out["census"] = [(round(t - started, 1), kinds) for t, kinds in probes.get("census", [])]
    out["timed"] = {}
    for target, calls in probes.get("timed", {}).items():
        rows = [c for c in calls if c[0] >= started]
        if rows:
            cpu = [r[1] for r in rows]
            faults = [float(r[2]) for r in rows]
            out["timed"][target] = {
                "calls": len(rows),
                "cpu_ms": {k: round(percentile(cpu, q) * 1e3, 3) for k, q in
                           (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
                "cpu_total_ms": round(sum(cpu) * 1e3, 1),
                "faults": {"total": int(sum(faults)), "p50": percentile(faults, 0.5),
                           "max": max(faults)},
            }
    out["stall_stack_samples"] = sum(leaves.values())
    out["stall_frames"] = frames.most_common(15)
    out["stall_leaves"] = leaves.most_common(10)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stall attribution under open-loop real traffic")
    parser.add_argument("--gateway", metavar="OUT", help=argparse.SUPPRESS)  # inside the gateway
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--handsets", type=int, default=1_000_000)
    parser.add_argument("--stall-ms", type=float, default=2.0, help="a lag above this is a stall")
    parser.add_argument(
        "--slow-ms", type=float, default=2.0,
        help="answers slower than this end to end are attributed to a cause each",
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway")
    parser.add_argument(
        "--bare", action="store_true",
        help="the gateway without probes (which keep every sample): latency and resident "
        "memory only, for long runs",
    )
    parser.add_argument(
        "--light", action="store_true",
        help="the probes without the per-request taps, whose samples (about 50 MB a minute at "
        "10,000/s) grow the heap: what touches fresh memory then is theirs as much as the "
        "gateway's. Loop lag, collections and --time only",
    )
    parser.add_argument(
        "--closed-first", type=float, default=0.0, metavar="SECONDS",
        help="a saturated closed loop (4 x 64) for SECONDS before the open loop",
    )
    parser.add_argument(
        "--realtime", action="store_true",
        help="diagnostic (root): the gateway's event loop thread and the simulator under "
        "SCHED_FIFO (the simulator sleeping on its timer between sends), so that no other "
        "process on the machine takes their cores: what is left of the tail is their own",
    )
    parser.add_argument(
        "--watch-ms", type=float, default=0.0,
        help="sample the loop thread's stack once the loop is this late (e.g. 10; default 0: "
        "off). The watching thread takes the GIL every 2 ms, which costs the loop a switch "
        "each time and, when that thread waits for a core, holds the loop (1.5-2.2 s of its "
        "CPU in a 60 s run): off, the attribution of slow answers is the gateway's alone",
    )
    parser.add_argument(
        "--census", type=int, default=0, metavar="N",
        help="every Nth collection, count the young generations' objects by type (a walk of "
        "its own on the loop: a diagnostic, it adds to the tail)",
    )
    parser.add_argument(
        "--time", action="append", default=[], metavar="MODULE:QUALNAME",
        help="time each call of this interpreted function or method in the gateway (CPU, "
        "page faults); repeatable",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the raw probe records in DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.gateway:
        return run_gateway(args.gateway)

    from e2e import Scenario, _pin, _wait_port, _wait_ready, drive, free_port, rss_mib, summary
    from real_traffic import generate

    from gateway import aio
    from gateway.config import load_config
    from tests.gateway_process import process_env

    with tempfile.TemporaryDirectory(prefix="eir-stalls-") as root:
        traffic, files = generate(
            load_config().policy, Path(root) / "data", args.handsets, 100_000, 1
        )
        port, metrics_port = free_port(), free_port()
        env = process_env(
            port, metrics_port, root,
            EIR_TAC_FILE=str(files["tac"]),
            EIR_LISTS_IMPORT_FILES=str(files["lists"]),
            EIR_REGISTRY_SEED_FILES=str(files["registry"]),
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **{WATCH_ENV: str(args.watch_ms), CENSUS_ENV: str(args.census),
               TIME_ENV: ",".join(args.time), LIGHT_ENV: "1" if args.light else ""},
        )
        for pair in args.env:
            key, _, value = pair.partition("=")
            env[key] = value
        out = str(Path(root) / "probes.json")
        with open(Path(root) / "gateway.log", "wb") as log:
            command = ["-m", "gateway.cli", "run"] if args.bare else [__file__, "--gateway", out]
            gateway = subprocess.Popen(
                [sys.executable, *command], env=env, cwd=root, stdout=log, stderr=log
            )
            try:
                deadline = time.monotonic() + 300
                _wait_port(port, gateway, deadline)
                _wait_ready(metrics_port, deadline)
                pinned = _pin(gateway.pid, 1) and _pin(0, 0)
                if args.realtime:
                    # The loop's thread only: the writer process and any other thread stay
                    # in the normal classes, as they run in production.
                    # The simulator too, sleeping on its timer between sends (spin 0): a
                    # real-time task spinning would be throttled by the kernel (95 % a second).
                    for pid in (gateway.pid, 0):
                        os.sched_setscheduler(
                            pid, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY)
                        )
                warm = 20_000

                async def run_load() -> dict[str, Any]:
                    from e2e import warm_up

                    timeline = [(0.0, rss_mib(gateway.pid))]
                    await warm_up(port, traffic, warm, True)
                    offset = warm
                    if args.closed_first:
                        # What a saturated closed loop leaves behind (bench/e2e.py runs the
                        # open loop after one).
                        closed = await drive(
                            port, Scenario("closed", 4, 64), traffic[offset:],
                            args.closed_first, True,
                        )
                        offset += closed.stats.sent
                        closed_rate[:] = [closed.to_dict()["achieved_rate"]]
                    needed = int(args.rate * args.seconds)
                    if len(traffic) - offset < needed:
                        # Each handset is sent once: an open loop short of handsets would
                        # end early (or not start) and measure less than it says.
                        raise SystemExit(
                            f"the warm-up and closed loop used {offset:,} of the "
                            f"{len(traffic):,} handsets; the open loop needs {needed:,} more: "
                            "raise --handsets"
                        )
                    started = time.perf_counter()

                    async def sample_rss() -> None:
                        while True:
                            await asyncio.sleep(RSS_EVERY)
                            at = round(time.perf_counter() - started)
                            timeline.append((at, rss_mib(gateway.pid)))

                    timeline.append((0.0, rss_mib(gateway.pid)))
                    psi, threads = pressure(), thread_cpu(gateway.pid)
                    sampler = asyncio.get_running_loop().create_task(sample_rss())
                    placement = WriterPlacement(gateway.pid)
                    watcher = asyncio.get_running_loop().create_task(placement.run())
                    own = LoopSampler(TICK)
                    own.start(asyncio.get_running_loop())
                    try:
                        if args.bare or args.light:
                            report = await drive(
                                port, Scenario("open", 4, rate=args.rate), traffic[offset:],
                                args.seconds, True,
                            )
                        else:
                            spin = 0.0 if args.realtime else 0.002
                            simulation = TracingSimulation(
                                open_loop(port, args.rate, args.seconds, spin), traffic[offset:]
                            )
                            report = await simulation.run()
                            traced[:] = [simulation]
                            started = simulation._started  # connected, checks prepared
                    finally:
                        sampler.cancel()
                        watcher.cancel()
                        own.stop()
                    result = summary(report)
                    after = pressure()
                    result["pressure_s"] = {k: round(after[k] - v, 3) for k, v in psi.items()}
                    used = thread_cpu(gateway.pid)
                    result["gateway_threads_cpu_s"] = {
                        k: round(v - threads.get(k, 0.0), 2) for k, v in used.items()
                    }
                    if placement.pid is not None:
                        writer_used = sum(thread_cpu(placement.pid).values())
                        result["gateway_threads_cpu_s"]["observation writer process"] = round(
                            writer_used - placement.cpu_at_start, 2)
                    result["simulator_lags"] = own.lags
                    result["writer"] = placement.summary()
                    timeline.append((round(time.perf_counter() - started), rss_mib(gateway.pid)))
                    # At start, after the warm-up, every RSS_EVERY seconds, at the end.
                    result["rss_mib"] = timeline
                    result["started"] = started
                    return result

                traced: list[TracingSimulation] = []
                closed_rate: list[float] = []
                result = aio.run(run_load())
            finally:
                if gateway.poll() is None:
                    gateway.send_signal(signal.SIGTERM)
                gateway.wait(60)
        # perf_counter is CLOCK_MONOTONIC on Linux: the same clock in both processes.
        started = result.pop("started")
        if not args.bare and not Path(out).exists():
            raise SystemExit("the gateway wrote no probes:\n"
                             + (Path(root) / "gateway.log").read_text()[-3000:])
        analysis = {} if args.bare else analyse(
            json.loads(Path(out).read_text()), args.stall_ms / 1e3, started
        )
        if args.keep and not args.bare:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("probes.json", "reads.bin", "writes.bin", "read_cpu.bin"):
                shutil.copy(Path(root) / name, keep / name)
            (keep / "started").write_text(repr(started))
        if not args.bare:
            analysis["read_cpu_ms"] = read_cpu(load(Path(root), "read_cpu.bin"), started)
        if traced:
            analysis["slow_answers"] = attribute(
                traced[0].trace, load(Path(root), "reads.bin"), load(Path(root), "writes.bin"),
                load(Path(root), "read_cpu.bin"), json.loads(Path(out).read_text())["collections"],
                started, args.slow_ms / 1e3,
            )
            analysis["requests"] = components(
                traced[0].trace, traced[0].categories, load(Path(root), "reads.bin"),
                load(Path(root), "writes.bin"), started,
            )
        analysis["simulator_lag_ms"] = lag_summary(
            [r for r in result.pop("simulator_lags") if r[0] >= started], args.stall_ms / 1e3
        )
    report_out = {
        "method": {
            "rate": args.rate, "seconds": args.seconds, "pinned": pinned,
            "realtime": args.realtime,
            "started_monotonic": started,  # perf_counter (CLOCK_MONOTONIC) at the run's start
            "load_average": os.getloadavg(), "python": sys.version.split()[0],
        },
        "latency_ms": result["latency_ms"], "errors": result["errors"], "ok": result["ok"],
        "send_lag_p99_ms": result["send_lag_p99_ms"], "rss_mib": result["rss_mib"],
        "writer": result["writer"],
        "pressure_s": result["pressure_s"],
        "gateway_threads_cpu_s": result["gateway_threads_cpu_s"],
        "closed_first_micr_per_s": closed_rate[0] if closed_rate else None,
        **analysis,
    }
    if args.json:
        print(json.dumps(report_out, indent=2))
        return 0
    lat, rss = report_out["latency_ms"], result["rss_mib"]
    print(f"open loop {args.rate:,.0f}/s for {args.seconds:g} s (load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; pinned: {pinned}"
          + ("; the gateway's loop under SCHED_FIFO" if args.realtime else "") + ")")
    if closed_rate:
        print(f"after a closed loop 4 x 64 for {args.closed_first:g} s: {closed_rate[0]:,.0f}/s")
    print(f"latency ms: p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} p99.9 {lat['p99.9']:.2f} "
          f"max {lat['max']:.2f}; errors {result['errors']}; simulator send lag p99 "
          f"{result['send_lag_p99_ms']} ms")
    print(f"RSS MiB: {rss[0][1]} at start, {rss[1][1]} after the warm-up, then (s: MiB) "
          + ", ".join(f"{at:g}: {mib}" for at, mib in rss[2:]))
    print("kernel pressure stalls over the run (PSI, s): " + ", ".join(
        f"{k} {v}" for k, v in report_out["pressure_s"].items()))
    print("gateway CPU over the run by thread (s): " + ", ".join(
        f"{k} {v}" for k, v in report_out["gateway_threads_cpu_s"].items() if v))
    sim = analysis["simulator_lag_ms"]
    print(f"simulator loop lag ms: p50 {sim['p50']} p99 {sim['p99']} p99.9 {sim['p99.9']} "
          f"max {sim['max']}; {sim['stalls']} stalls, own CPU {sim['stall_own_cpu_ms']} ms, "
          f"waiting for a core {sim['stall_run_queue_ms']} ms")
    writer = report_out["writer"]
    print(f"observation writer {writer['pid']} {writer['policy']}: {writer['samples']} samples, "
          + ", ".join(f"{k} {v:.1%}" for k, v in writer["shares"].items()))
    if args.bare:
        return 0
    requests = analysis.get("requests")
    if requests:
        print(f"per request ({requests['requests']} joined, {requests['unjoined']} not), ms:")
        for name in ("end_to_end", "send_lag", "inbound", "gateway", "outbound"):
            c = requests[f"{name}_ms"]
            print(f"  {name:<10} p50 {c['p50']:>7} p99 {c['p99']:>7} p99.9 {c['p99.9']:>7} "
                  f"max {c['max']:>7}")
        for label in ("slowest_1pct", "slowest_0.1pct"):
            top = requests.get(label)
            if top:
                print(f"  {label} ({top['count']}, from {top['end_to_end_from_ms']} ms): mean "
                      + ", ".join(f"{k} {v}" for k, v in top["mean_ms"].items())
                      + f"; dominant {top['dominant']}; categories {top['categories']}")
    sa = analysis.get("slow_answers")
    if sa:
        print(f"answers over {sa['slower_than_ms']:g} ms: {sa['slow']} of {sa['answers']}, in "
              f"{sa['episodes']} episodes; by dominant cause: "
              + ", ".join(f"{k} {v}" for k, v in sa["dominant"].items() if v)
              + "; mean ms per slow answer: "
              + ", ".join(f"{k} {v}" for k, v in sa["mean_ms"].items()))
        for e in sa["worst_episodes"]:
            print(f"  at {e['at_s']} s: {e['answers']} answers over {e['window_ms']} ms, worst "
                  f"{e['worst_ms']} ms; loop thread ms: "
                  + ", ".join(f"{k} {v}" for k, v in e["loop_ms"].items())
                  + f"; dominant {e['dominant']}")
    rc = analysis["read_cpu_ms"]
    print(f"gateway loop CPU per read ({rc['reads']} reads, {rc['page_faults']} page faults), "
          f"ms: p50 {rc.get('p50')} p99 {rc.get('p99')} p99.9 {rc.get('p99.9')} max "
          f"{rc.get('max')}; longest "
          + ", ".join(f"{r['cpu_ms']} ({r['page_faults']} faults, {r['requests']} requests at "
                      f"{r['at_s']} s)" for r in rc["longest"]))
    print("  per second (s: requests, loop CPU µs per request, page faults): " + ", ".join(
        f"{sec}: {n} {c} {f}" for sec, n, c, f in rc["per_second"]))
    lag, st = analysis["lag_ms"], analysis["stalls"]
    print(f"loop lag ms ({lag['samples']} samples every {TICK * 1e3:g} ms): p50 {lag['p50']} "
          f"p99 {lag['p99']} p99.9 {lag['p99.9']} max {lag['max']}; loop thread CPU "
          f"{analysis['loop_thread_cpu_share']} of a core, waiting for a core "
          f"{analysis['run_queue_share']}")
    print(f"stalls over {st['over_ms']:g} ms: {st['count']}; over their intervals "
          f"({st['intervals_ms']} ms) the loop thread computed {st['own_cpu_ms']} ms and waited "
          f"for a core {st['run_queue_ms']} ms")
    for name, c in analysis["collections"].items():
        print(f"  {name}: {c['count']} collections ({c['found_in_cycles']} objects found in "
              f"cycles), CPU p50 {c['cpu_p50_ms']} p99 "
              f"{c['cpu_p99_ms']} max {c['cpu_max_ms']} ms; young objects (allocations less "
              f"deallocations since the last) p50 {c['young_objects_p50']:,.0f} max "
              f"{c['young_objects_max']:,}")
    for target, t in analysis["timed"].items():
        print(f"  {target}: {t['calls']} calls, CPU ms {t['cpu_ms']} (total "
              f"{t['cpu_total_ms']}), page faults {t['faults']}")
    for at, kinds in analysis["census"]:
        print(f"  census at {at} s: " + ", ".join(f"{k} {n}" for k, n in kinds))
    print(f"stack samples while the loop was over {args.watch_ms:g} ms late: "
          f"{analysis['stall_stack_samples']}, loop thread state "
          f"{analysis['stall_thread_states']} (R: running or waiting for a core, S: sleeping)")
    for leaf, count in analysis["stall_leaves"]:
        print(f"  {count:5d}  {leaf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
