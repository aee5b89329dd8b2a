"""Real-traffic checks per second of one gateway worker with local state vs with Redis +
PostgreSQL (issue 13's target: shared at least 0.8 of local), and each side's CPU per check (not
a test; prints figures).

Traffic: bench/e2e.py's real suite (bench/real_traffic.py, generated from ``--seed``): a
GSMA-size TAC file (``--tacs``), registry declarations, operator lists and ``--handsets``
distinct IMEIs, each with an IMSI and a Software-Version, in its mix of known and unknown TACs,
list hits and registry verdicts; every answer verified against its category. One cursor walks
the handsets for the whole run: no handset is sent twice (it says so if they wrap), so every
check on either side is classified afresh, recorded in the observation log and counted by
clone detection, never answered from the decision cache.

Sides (``--sides``, each a ``python -m gateway.cli run``: one worker, the embedded default
configuration with clone detection on, the generated files, its own state directory):

* ``local``: SQLite state, the in-process clone tracker, the observation log's writer process;
* ``shared`` (the issue's "Redis + PostgreSQL"): ``[state] backend = "postgresql"`` (lists,
  TACs and the observation log in PostgreSQL), clone detection counted in Redis
  (``[shared] redis_url``), observations through the Redis stream
  (``observation_stream = true``) drained into PostgreSQL by the gateway's observation writer
  process (since session 9: before, by the worker, and PostgreSQL's log was written by a
  thread of the worker);
* to see where the difference lies: ``redis`` (SQLite state, clone detection in Redis only) and
  ``stream`` (``redis`` plus the observation stream).

Method: a redis-server and a PostgreSQL (tests/postgres_server.py; fsync off) on free loopback
ports; every side's gateway started once, warmed with 20,000 handsets, then ``--rounds``
rounds of ``--seconds`` each, the sides alternating so all see the same disturbances: a closed
loop of ``--window`` outstanding requests on each of ``--connections`` connections (the
simulator of bench/e2e.py in this process). With two or more CPUs the simulator, Redis and
PostgreSQL run on CPU 0 and the gateways (every thread, and their writer processes) on CPU 1:
Redis and PostgreSQL stand for servers of their own. After each round the bench waits until the
gateway is idle (its observations written, the stream drained), so each round's CPU holds all
the work its checks caused. Reported per side, best round (and every round): checks/s over the
loop; CPU µs per check (user + system, /proc) of the gateway worker (all its threads), of its
observation writer process (every side: it writes the log and drains the stream), of
Redis and of PostgreSQL (every backend), the observations written in the round, checks per
round trip to Redis (clone counts) and to the stream (``eir_shared_state_requests_total``),
how busy the worker was during the loop: below 90 % the simulator or the machine's load set
the rate, not the gateway, and the bench says so; the simulator's own CPU per check and share of
its core (its loop thread, from the simulator's report), each CPU's busy share over the loop
(/proc/stat), and so what set each round's rate: the worker (its core ≥ 90 % busy), CPU 0
(≥ 90 % busy when pinned: the simulator + Redis + PostgreSQL + the rest, µs a check), the
simulator alone, or neither. A worker idling between reads pays per-wake and per-time costs,
such as the 10 ms young collections, over fewer checks; the shared side, answering when Redis
answers, wakes more often. ``--syscalls`` adds the worker's checks per
read and per write, epoll_waits and user/system CPU per check (perf, as bench/e2e.py). The
ratio shared/local is the worker's: in checks/s, and local CPU per check / shared CPU per check
(also with each side's writer process counted). Since session 11 also: the closed loop's
latency (p50, p99, p99.9, max: a ratio bought with waiting would show there), the observations
each side dropped (its writer's queue full, said loudly: a side that drops did less work a
check), the worker's resident memory after each round and its minor page faults a check (state
growing as the handsets advance), and the ratios of the rounds' medians beside the best
rounds'.

Comparable sides: every side gets ``[observations] queue_size`` = ``--queue-size`` (default
5,000,000, a round's pairs many times over). With the default 100,000 the local side's writer
process, SCHED_IDLE on the worker's saturated CPU 1, got no CPU during a round, its queue
filled and ~55 % of the pairs were dropped (session 11's lead: 100,000 written for ~224,000
checks), while the shared side's stream buffers them in Redis and drops none. With the queue
holding a round, the local writer catches up after the loop, which the bench waits for
(``settle``), so its CPU is counted as the shared side's writer's is, and both workers hand
every pair over.

Steady state: each side first runs ``--warm-rounds`` closed-loop rounds (default 1), not
counted. Session 11 found every side's first round ~20 % cheaper than the rest (worker µs a
check, 5 rounds without warm-up, load 1.3-3.3: local 22.2, 28.0, 26.1, 27.9; shared 27.7, 34.5,
32.9, 32.7; four more runs of 3 rounds alike), flat after it: not the heap (the worker's RSS
flat at 262-271 MiB from the first round's end, 0.00-0.02 minor faults a check after it,
0.10-0.16 in it), but, suspected, the bounded caches filling in round 1 (~200,000 checks after
the 20,000 of the warm-up: the decision cache's 65,536, the clone tracker's and the registry
cache's 100,000) and evicting from then on, and SQLite's log growing (the local writer's
µs a check rise round after round: 4.9, 8.3, 9.4, 11.1). The verdict line takes the medians of
the rounds whose rate the worker set (its core >= 90 % busy) on both sides, and gives none
when a side has no such round.

Session 8 (loaded machine, load average 3.6-6.4, workers not saturated; ``--rounds 3 --seconds
5 --sides local,redis,stream,shared --observations 50000``): worker CPU per check local 23.3 µs
(writer process 6.1), redis 37.7, stream 44.0, shared 45.3 (Redis 13.9, PostgreSQL 11.1 µs per
check): 0.51 in the worker's CPU, 0.65 with the writer process, 0.48 in checks/s; before the
observation stream's scripts and the compiled tracker (one 2 s round): local 27.0, redis 43.5,
stream 76.6, shared 81.1 µs (0.33). At the end, with gateway.resp compiled (load 0.9-2.1,
``--sides local,redis,shared --syscalls --observations 0``): local 46,880 checks/s (worker 96 %
busy) at 19.0 µs (writer 4.2), redis 27,330/s at 26.2 µs, shared 19,783/s (77 % busy: Redis and
PostgreSQL, 12.0 + 10.8 µs a check, share the simulator's core) at 32.4 µs: 0.42 in checks/s,
0.59 in the worker's CPU, 0.72 with the writer process. README, Shared state, has the analysis.

Session 9 (the stream drained by the writer process, PostgreSQL's log written by one; loaded
machine, load average 3.2-5.6, workers 34-53 % busy; ``--rounds 4 --seconds 4 --sides
local,stream,shared --observations 0``, compiled build of each tree): shared worker 37.0, 35.8,
51.8, 50.9 -> 33.1, 41.4, 44.2, 41.3 µs per check (its writer process 0 -> 3.9-4.5), local
worker 18.7-28.7 -> 23.3-27.7; PostgreSQL 11.0-12.7 -> 6.9-8.5 µs per check (one statement
per batch); the worker's shared / local 1.82 -> 1.57 (means of rounds), worker and writer
together 1.25 -> 1.27: the work moved out of the worker, it did not shrink. The clone count's
side in session 9 (the steady state's round trip without task, coroutine, future or timeout
context; one sweep timer; 3 Redis commands a fresh key), before and after back to back at load
1.5-2.9 (``--rounds 2 --seconds 5 --sides local,redis --observations 0 --syscalls``): the
redis worker's extra over local 9.8 -> 5.5 µs per check (29.6 / 19.8 -> 26.5 / 21.0), Redis
7.9 -> 5.5-6.4 µs per check; every side (load 2.6-3.8): worker 21.4 / 26.6 / 26.6 / 28.5 µs,
Redis 6.4 / 13.5 / 12.3 µs, shared / local 0.75 in the worker's CPU, 0.69 in checks/s.

Session 10 (the simulator's CPU reported, and cheaper: 16-17 -> 10.4-10.9 µs an answer against
bench/ceiling.py): CPU 0 is no longer the limit; at the default 4 x 64 neither core saturated on
a quiet machine (the shared side waits for its round trips to Redis, which shares CPU 0), at
``--window 256`` both workers did: local 50,378 checks/s at 19.5 µs, shared 33,051/s at 28.7 µs
(95 % busy): 0.66 in checks/s, 0.68 in the worker's CPU. Pass ``--window 256`` for capacity.

Then Redis's own cost, for sizing: ``--observations`` distinct IMEIs (one IMSI each) sent
through :class:`gateway.redis_clone.SharedCloneTracker` in batches of 1,000 per loop tick:
observations per second from one process, Redis CPU (``INFO cpu``) per observation and memory
(``INFO memory``) per IMEI held. The same through a Redis Cluster of 3 masters (``[shared]
redis_cluster``; tests/redis_server.py starts it, needs redis-cli too): each script call
carries one hash slot's observations there, so a tick of 1,000 distinct IMEIs is ~1,000 calls
(in one pipeline, one round trip per master). ``--observations 0`` skips both.

Run: ``.venv/bin/python bench/shared_state.py`` (needs redis-server and PostgreSQL, Debian
redis-server and postgresql, and the extras shared and postgresql).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from e2e import (  # noqa: E402
    Cursor,
    Scenario,
    SyscallCount,
    _wait_port,
    _wait_ready,
    core_busy,
    core_times,
    drive,
    free_port,
    per_micr,
    rss_mib,
    scrape,
    warm_up,
)
from real_traffic import generate  # noqa: E402

from eir_compiled import finder as compiled_build  # noqa: E402
from gateway import aio  # noqa: E402
from gateway.config import load_config  # noqa: E402
from tests.gateway_process import process_env  # noqa: E402
from tests.postgres_server import PostgresServer, _binaries  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
SIDES = ("local", "redis", "stream", "shared")
WARM_UP = 20_000


def _stat(pid: int) -> list[str] | None:
    """proc(5) /proc/PID/stat's fields after the command's name; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads); 0 once it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (its heap growing: pages touched first)."""
    fields = _stat(pid)
    return int(fields[7]) if fields else 0


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (every thread's), e.g. the observation writer."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                out += [int(c) for c in text.split()]
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` and of its descendants on ``cpu`` (threads and processes made
    later inherit it)."""
    for process in (pid, *descendants(pid)):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{process}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), {cpu})


@dataclass(slots=True)
class Side:
    name: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    port: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)

    def cpu(self) -> tuple[float, float]:
        """(the worker's CPU, its descendants')."""
        assert self.process is not None
        pid = self.process.pid
        return cpu_seconds(pid), sum(cpu_seconds(c) for c in descendants(pid))


def side_env(name: str, redis_url: str, dsn: str, queue_size: int) -> dict[str, str]:
    # Every side's observation queue holds a whole round (see --queue-size): none drops.
    env = {"EIR_CLONE_DETECTION_ENABLED": "true",
           "EIR_OBSERVATIONS_QUEUE_SIZE": str(queue_size)}
    if name != "local":
        env |= {"EIR_SHARED_REDIS_URL": redis_url, "EIR_SHARED_KEY_PREFIX": f"bench-{name}"}
    if name in ("stream", "shared"):
        env["EIR_SHARED_OBSERVATION_STREAM"] = "true"
    if name == "shared":
        env |= {"EIR_STATE_BACKEND": "postgresql", "EIR_STATE_DSN": dsn}
    return env


def start(side: Side, state: Path, data_env: dict[str, str]) -> None:
    side.port, side.metrics_port = free_port(), free_port()
    state.mkdir()
    env = process_env(side.port, side.metrics_port, state, **data_env, **side.env,
                      # Closed loop at saturation measures capacity: no shedding by delay.
                      EIR_DIAMETER_OVERLOAD_TARGET_DELAY_SECONDS="0",
                      EIR_LOGGING_LEVEL="WARNING")
    env["EIR_N5G_EIR_LISTEN"] = ""
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    log = open(state / "gateway.log", "wb")  # the process's, closed with it
    side.process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run"], cwd=state,
                                    env=env, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 300  # a 100,000-TAC import first
    _wait_port(side.port, side.process, deadline)
    _wait_ready(side.metrics_port, deadline)


def stop(side: Side) -> None:
    if side.process is not None and side.process.poll() is None:
        side.process.terminate()
        try:
            side.process.wait(30)
        except subprocess.TimeoutExpired:
            side.process.kill()
            side.process.wait()


def settle(pids: list[int], limit: float = 20.0) -> None:
    """Until the processes are idle (no CPU tick over 0.3 s: the log written, the stream
    drained), at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last <= 1.0 / _TICK:
            return
        last = now


def counters(metrics_port: int) -> dict[str, float]:
    """Observations written and dropped (the writer's queue full), and round trips to each
    Redis store (clone counts, the stream)."""
    samples = scrape(metrics_port)
    out = {key: samples.get(f"eir_observations_{key}_total", 0.0)
           for key in ("written", "dropped")}
    for store in ("redis", "redis_stream"):
        out[store] = sum(v for k, v in samples.items() if
                         k.startswith("eir_shared_state_requests_total{") and
                         f'store="{store}"' in k)
    return out


async def one_round(side: Side, cursor: Cursor, args: argparse.Namespace,
                    servers: dict[str, int]) -> dict[str, float]:
    assert side.process is not None
    scenario = Scenario("closed", args.connections, args.window)
    worker0, writer0 = side.cpu()
    server0 = {name: server_cpu(pid) for name, pid in servers.items()}
    counters0 = counters(side.metrics_port)
    faults0 = minor_faults(side.process.pid)
    syscalls = SyscallCount(side.process.pid, args.work) if args.syscalls else None
    cores0 = core_times()
    report = await drive(side.port, scenario, cursor.take(), args.seconds, True)
    busy = (side.cpu()[0] - worker0) / report.duration  # the worker's share of a core
    cores = core_busy(cores0, core_times())
    calls = per_micr(syscalls.stop(), report.stats.answered) if syscalls is not None else None
    cursor.advance(report.stats.sent)
    if not report.ok:
        sys.exit(f"{side.name}: the run was not clean: {report.render_text()}")
    settle([side.process.pid, *descendants(side.process.pid), *servers.values()])
    worker1, writer1 = side.cpu()
    n = report.stats.answered
    counters1 = counters(side.metrics_port)
    latency = report.to_dict()["latency_ms"]
    out = {"checks_per_s": report.achieved_rate,
           "worker_us": (worker1 - worker0) / n * 1e6,
           "writer_us": (writer1 - writer0) / n * 1e6,
           "observations_written": counters1["written"] - counters0["written"],
           "observations_dropped": counters1["dropped"] - counters0["dropped"],
           "answered": n,
           # The closed loop's latency (sent to answered, the simulator's clock): a ratio
           # bought with waiting would show here.
           **{f"latency_{k}_ms": latency[k] for k in ("p50", "p99", "p99.9", "max")},
           # State growing as the handsets advance (the clone tracker, caches, the heap):
           # the worker's resident memory after the round, and its heap's first touches.
           "worker_rss_mib": rss_mib(side.process.pid) or 0.0,
           "worker_faults_per_check": (minor_faults(side.process.pid) - faults0) / n,
           "worker_busy": busy,
           # The simulator (this process's loop thread) over the loop, and each core's busy
           # share over it (CPU 0: the simulator, Redis and PostgreSQL when pinned).
           "simulator_us": report.cpu_us_per_answer,
           "simulator_busy": report.busy}
    for cpu, share in cores.items():
        out[f"cpu{cpu}_busy"] = share["busy"]
        out[f"cpu{cpu}_steal"] = share["steal"]
    for store in ("redis", "redis_stream"):  # after the loop's end too: all its work
        trips = counters1[store] - counters0[store]
        out[f"checks_per_{store}_round_trip"] = n / trips if trips else 0.0
    if calls is not None:  # over the loop only (perf stat)
        out |= {k: calls[k] for k in ("micr_per_read", "micr_per_write", "epoll_waits_per_micr",
                                      "user_us_per_micr", "system_us_per_micr")}
    for name, pid in servers.items():
        out[f"{name}_us"] = (server_cpu(pid) - server0[name]) / n * 1e6
    return out


def server_cpu(pid: int) -> float:
    """A server's CPU: the process and every process it started (PostgreSQL's backends)."""
    return cpu_seconds(pid) + sum(cpu_seconds(c) for c in descendants(pid))


async def redis_cost(url: str, count: int, cluster: bool = False) -> tuple[float, float, float]:
    """(observations/s, Redis CPU µs per observation, Redis bytes per IMEI); CPU and memory
    of the node of ``url`` only on a cluster."""
    import redis.asyncio
    from prometheus_client import CollectorRegistry

    from gateway.clone_tracker import CloneTracker
    from gateway.config import SharedConfig
    from gateway.redis_clone import shared_clone_tracker

    tracker = shared_clone_tracker(
        CloneTracker(10, 86_400.0, max_imeis=1_000),
        SharedConfig(url, "bench", redis_cluster=cluster),
        CollectorRegistry(),
    )
    probe = redis.asyncio.from_url(url)

    async def cpu_and_memory() -> tuple[float, float]:
        cpu, memory = await probe.info("cpu"), await probe.info("memory")
        return cpu["used_cpu_user"] + cpu["used_cpu_sys"], float(memory["used_memory"])

    cpu0, mem0 = await cpu_and_memory()
    started = time.perf_counter()
    for first in range(0, count, 1_000):
        for n in range(first, min(count, first + 1_000)):
            tracker.suspected(f"35{n:012d}", "001010000000001", time.time())
        await tracker.flush()
    elapsed = time.perf_counter() - started
    cpu1, mem1 = await cpu_and_memory()
    await tracker.close()
    await probe.aclose()
    return count / elapsed, (cpu1 - cpu0) / count * 1e6, (mem1 - mem0) / count


def cluster_observations(count: int) -> float | None:
    """Observations/s from one process through a 3-master Redis Cluster; None without
    redis-cli."""
    cli, binary = shutil.which("redis-cli"), shutil.which("redis-server")
    if cli is None or binary is None:
        print("# no redis-cli: Redis Cluster not measured")
        return None
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisCluster

    with tempfile.TemporaryDirectory() as tmp:
        cluster = RedisCluster(binary, cli, Path(tmp))
        cluster.start()
        try:
            return asyncio.run(redis_cost(cluster.url, count, cluster=True))[0]
        finally:
            cluster.stop()


async def measure(sides: list[Side], traffic_cursor: Cursor, args: argparse.Namespace,
                  servers: dict[str, int]) -> None:
    for side in sides:
        report = await warm_up(side.port, traffic_cursor.take(), WARM_UP, True)
        traffic_cursor.advance(report.stats.sent)
        if not report.ok:
            sys.exit(f"warm-up of {side.name} failed: {report.render_text()}")
        assert side.process is not None
        settle([side.process.pid, *descendants(side.process.pid), *servers.values()])
    for n in range(args.warm_rounds + args.rounds):  # alternating: the same disturbances
        for side in sides:
            r = await one_round(side, traffic_cursor, args, servers)
            warming = n < args.warm_rounds
            if not warming:
                side.rounds.append(r)
            if not args.json:
                print(f"  {side.name:<7}{' (warm-up round, not counted)' if warming else ''} "
                      f"{r['checks_per_s']:>8,.0f} checks/s (worker busy "
                      f"{r['worker_busy']:.0%} of the loop{_cores(r)}), worker "
                      f"{r['worker_us']:.1f} µs/check, simulator {r['simulator_us']:.1f} "
                      f"({r['simulator_busy']:.0%} busy), writer {r['writer_us']:.1f}, redis "
                      f"{r['redis_us']:.1f}, postgresql {r['postgresql_us']:.1f}; "
                      f"{r['observations_written']:,.0f} observations written"
                      f"{_dropped(r)}; checks per round trip to Redis "
                      f"{r['checks_per_redis_round_trip']:.0f}, to the stream "
                      f"{r['checks_per_redis_stream_round_trip']:.0f}; latency ms p50 "
                      f"{r['latency_p50_ms']:.2f} p99 {r['latency_p99_ms']:.2f} p99.9 "
                      f"{r['latency_p99.9_ms']:.2f} max {r['latency_max_ms']:.2f}; worker RSS "
                      f"{r['worker_rss_mib']:,.0f} MiB, {r['worker_faults_per_check']:.2f} "
                      f"minor faults a check; rate set by {limit(r, args.pinned)}"
                      + _syscalls(r),
                      flush=True)


def _dropped(r: dict[str, float]) -> str:
    dropped = r["observations_dropped"]
    return f", {dropped:,.0f} DROPPED (the writer's queue full)" if dropped else ", none dropped"


def _cores(r: dict[str, float]) -> str:
    return "".join(f", CPU {k[3:-5]} {v:.0%}" for k, v in r.items()
                   if k.startswith("cpu") and k.endswith("_busy"))


def limit(r: dict[str, float], pinned: bool) -> str:
    """What set a round's rate: the worker's core, the simulator's (CPU 0, with Redis and
    PostgreSQL when pinned), or neither (each waited for the other: the round trips)."""
    if r["worker_busy"] >= 0.9:
        return "the worker (its core saturated)"
    cpu0 = r.get("cpu0_busy", 0.0)
    if pinned and cpu0 >= 0.9:
        seconds = r["answered"] / r["checks_per_s"]  # the loop's
        others = cpu0 * 1e6 / r["checks_per_s"] - r["simulator_us"] - r.get("redis_us", 0.0) \
            - r.get("postgresql_us", 0.0)
        return (f"CPU 0 ({cpu0:.0%} busy over {seconds:.1f} s: simulator {r['simulator_us']:.1f} + "
                f"Redis {r.get('redis_us', 0.0):.1f} + PostgreSQL "
                f"{r.get('postgresql_us', 0.0):.1f} + the rest {max(others, 0.0):.1f} µs a check)")
    if r["simulator_busy"] >= 0.9:
        return "the simulator (its core saturated)"
    return "neither core saturated (the round trips: each side waited for the other)"


def _syscalls(r: dict[str, float]) -> str:
    if "micr_per_read" not in r:
        return ""
    return (f"; checks per read {r['micr_per_read']}, per write {r['micr_per_write']}, "
            f"epoll_wait per check {r['epoll_waits_per_micr']}, CPU µs per check user "
            f"{r['user_us_per_micr']} system {r['system_us_per_micr']}")


def best(side: Side) -> dict[str, float]:
    """The highest rate's round; each CPU figure the lowest of the rounds (the least
    disturbed)."""
    out = dict(max(side.rounds, key=lambda r: r["checks_per_s"]))
    for key in ("worker_us", "writer_us", "redis_us", "postgresql_us", "simulator_us"):
        out[key] = min(r[key] for r in side.rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sides", default="local,shared",
                        help=f"comma-separated, of {', '.join(SIDES)} (default local,shared)")
    parser.add_argument("--handsets", type=int, default=2_000_000,
                        help="distinct handsets generated (default 2000000)")
    parser.add_argument("--tacs", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--observations", type=int, default=200_000,
                        help="Redis's own cost: observations sent (0: not measured)")
    parser.add_argument("--warm-rounds", type=int, default=1,
                        help="closed-loop rounds each side runs before the measured ones "
                             "(default 1: its caches filled, evicting as in the steady state)")
    parser.add_argument("--queue-size", type=int, default=5_000_000,
                        help="[observations] queue_size of every side (default 5000000: a "
                             "round's pairs, so that no side drops; the default config's "
                             "100000 makes a saturated local side drop most of them)")
    parser.add_argument("--env", action="append", default=[], metavar="EIR_KEY=VALUE",
                        help="a configuration variable for every side (repeatable), e.g. "
                             "EIR_POLICY_DECISION_CACHE_SIZE=2000000")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--syscalls", action="store_true",
                        help="the worker's reads, writes and epoll_waits per check (perf, root)")
    args = parser.parse_args()
    names = args.sides.split(",")
    extra = dict(item.split("=", 1) for item in args.env)
    if bad := [k for k in extra if not k.startswith("EIR_")]:
        parser.error(f"--env takes EIR_ variables: {', '.join(bad)}")
    if unknown := set(names) - set(SIDES):
        parser.error(f"unknown sides: {', '.join(sorted(unknown))}")
    binary, pg = shutil.which("redis-server"), _binaries()
    if binary is None:
        sys.exit("needs redis-server (Debian redis-server)")
    if pg is None and "shared" in names:
        sys.exit("needs PostgreSQL (Debian postgresql)")
    pinned = args.pinned = (os.cpu_count() or 1) >= 2
    if pinned:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory(prefix="eir-shared-") as tmp:
        args.work = tmp
        traffic, files = generate(load_config().policy, Path(tmp) / "data", args.handsets,
                                  args.tacs, args.seed)
        data_env = {"EIR_TAC_FILE": str(files["tac"]),
                    "EIR_LISTS_IMPORT_FILES": str(files["lists"]),
                    "EIR_REGISTRY_SEED_FILES": str(files["registry"])}
        redis_port = free_port()
        redis = subprocess.Popen(
            [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        # Not under /tmp/...-private directories: PostgreSQL's user must reach it.
        pg_dir = Path(tempfile.mkdtemp(prefix="eir-pg-"))
        postgres = PostgresServer(*pg, pg_dir) if pg is not None else None
        sides = [Side(n, {}) for n in names]
        try:
            _wait_port(redis_port, redis, time.monotonic() + 60)
            servers = {"redis": redis.pid}
            dsn = ""
            if postgres is not None:
                postgres.start()
                dsn = postgres.create_database()
                assert postgres.process is not None
                servers["postgresql"] = postgres.process.pid
            if pinned:
                for pid in servers.values():
                    pin(pid, 0)
            for side in sides:
                side.env = side_env(side.name, f"redis://127.0.0.1:{redis_port}/0", dsn,
                                    args.queue_size) | extra
                start(side, Path(tmp) / side.name, data_env)
                if pinned:
                    assert side.process is not None
                    pin(side.process.pid, 1)
            cursor = Cursor(traffic)
            if not args.json:
                print(f"# Python {platform.python_version()}, {platform.machine()}, "
                      f"{os.cpu_count()} CPUs, hot modules {compiled_build.status()}; "
                      f"closed loop, window {args.window} x {args.connections} connections, "
                      f"{args.seconds:g} s per round, {args.rounds} rounds after {args.warm_rounds} "
                      f"warm-up rounds; "
                      f"{len(traffic):,} handsets over {args.tacs:,} TACs; load average "
                      f"{_load()}; pinned: "
                      + ("simulator, Redis, PostgreSQL CPU 0; gateways CPU 1" if pinned
                         else "no"), flush=True)
            aio.run(measure(sides, cursor, args, servers))
            rate = cpu = memory = None
            if args.observations:
                rate, cpu, memory = asyncio.run(
                    redis_cost(f"redis://127.0.0.1:{redis_port}/1", args.observations)
                )
        finally:
            for side in sides:
                stop(side)
            redis.terminate()
            redis.wait(10)
            if postgres is not None:
                postgres.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)
    cluster_rate = cluster_observations(args.observations) if args.observations else None
    report(sides, cursor, args, (rate, cpu, memory), cluster_rate)


def verdict(local: list[dict[str, float]], other: list[dict[str, float]]) -> str:
    """#13's ratio in checks/s from the rounds whose rate the worker set (its core >= 90 %
    busy) on both sides, by their medians; none when a side has no such round: then the
    machine (CPU 0, other work) set the rates, and only the CPU per check compares."""
    saturated = [[r for r in rounds if r["worker_busy"] >= 0.9] for rounds in (local, other)]
    if not all(saturated):
        return (f"none: rounds with the worker saturated, local {len(saturated[0])} of "
                f"{len(local)}, other {len(saturated[1])} of {len(other)} (the machine set "
                "the rates: compare the CPU per check, or run on a quiet machine)")
    ratio = _median(saturated[1], "checks_per_s") / _median(saturated[0], "checks_per_s")
    return (f"{ratio:.3f} in checks/s by the medians of the rounds the workers set (local "
            f"{len(saturated[0])} of {len(local)}, other {len(saturated[1])} of {len(other)}): "
            + ("meets" if ratio >= 0.8 else "does not meet") + " #13's 0.8")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _median(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def report(sides: list[Side], cursor: Cursor, args: argparse.Namespace,
           redis: tuple[float | None, float | None, float | None],
           cluster_rate: float | None) -> None:
    results: dict[str, dict[str, Any]] = {
        s.name: {"best": best(s), "rounds": s.rounds,
                 "rate_set_by": [limit(r, args.pinned) for r in s.rounds]} for s in sides
    }
    ratios: dict[str, dict[str, float]] = {}
    if "local" in results:
        local = results["local"]["best"]
        for name, result in results.items():
            if name != "local":
                b = result["best"]
                ratios[name] = {
                    "checks_per_s": b["checks_per_s"] / local["checks_per_s"],
                    "worker_cpu": local["worker_us"] / b["worker_us"],
                    "worker_and_writer_cpu": (local["worker_us"] + local["writer_us"])
                    / (b["worker_us"] + b["writer_us"]),
                    # The medians of every round: one lucky round does not make the verdict.
                    "median_checks_per_s": _median(result["rounds"], "checks_per_s")
                    / _median(results["local"]["rounds"], "checks_per_s"),
                    "median_worker_cpu": _median(results["local"]["rounds"], "worker_us")
                    / _median(result["rounds"], "worker_us"),
                }
    verdicts = {name: verdict(results["local"]["rounds"], results[name]["rounds"])
                for name in ratios}
    if args.json:
        json.dump({"command": " ".join([Path(sys.executable).name, *sys.argv]),
                   "hot_modules": compiled_build.status(), "load_average": os.getloadavg(),
                   "handsets_sent": cursor.position, "handsets_wrapped": cursor.wrapped,
                   "sides": results, "ratios": ratios, "verdicts": verdicts,
                   "redis_observations": dict(zip(("per_s", "cpu_us", "bytes_per_imei"), redis,
                                                  strict=True)),
                   "cluster_observations_per_s": cluster_rate}, sys.stdout, indent=2)
        print()
        return
    print(f"load average at the end {_load()}; handsets sent: {cursor.position:,}"
          + (" (WRAPPED: some were sent twice)" if cursor.wrapped else ", none twice"))
    for name, result in results.items():
        b = result["best"]
        top = max(range(len(result["rounds"])), key=lambda i: result["rounds"][i]["checks_per_s"])
        print(f"{name:<7}: {b['checks_per_s']:,.0f} checks/s; CPU µs per check: worker "
              f"{b['worker_us']:.1f}, simulator {b['simulator_us']:.1f}, its writer process "
              f"{b['writer_us']:.1f}, Redis {b['redis_us']:.1f}, PostgreSQL "
              f"{b['postgresql_us']:.1f} (best of {len(result['rounds'])}); the best round's "
              f"rate set by {result['rate_set_by'][top]}, its latency ms p50 "
              f"{b['latency_p50_ms']:.2f} p99 {b['latency_p99_ms']:.2f} p99.9 "
              f"{b['latency_p99.9_ms']:.2f} max {b['latency_max_ms']:.2f}; medians of the "
              f"rounds: {_median(result['rounds'], 'checks_per_s'):,.0f} checks/s, worker "
              f"{_median(result['rounds'], 'worker_us'):.1f} µs a check")
        dropped = sum(r["observations_dropped"] for r in result["rounds"])
        if dropped:
            print(f"NOTE: {name} DROPPED {dropped:,.0f} observations (its writer's queue full: "
                  "the writer's work was not done, so its checks were cheaper; raise "
                  "--queue-size)")
    if any(r["worker_busy"] < 0.9 for result in results.values() for r in result["rounds"]):
        print("NOTE: a worker was busy less than 90% of a loop: the simulator (or the machine's "
              "load) set that round's checks/s, not the gateway; compare CPU per check, or run on "
              "a quiet machine")
    for name, r in ratios.items():
        print(f"ratio {name}/local: {r['checks_per_s']:.3f} in checks/s, {r['worker_cpu']:.3f} in "
              f"the worker's CPU per check (local µs / {name} µs), "
              f"{r['worker_and_writer_cpu']:.3f} with the writer process (best rounds); "
              f"medians of the rounds {r['median_checks_per_s']:.3f} in checks/s, "
              f"{r['median_worker_cpu']:.3f} in the worker's CPU")
        print(f"verdict {name}/local: {verdicts[name]}")
    rate, cpu, memory = redis
    if rate is not None:
        print(f"Redis: {rate:,.0f} observations/s from one process (pipelined, 1,000 per tick); "
              f"{cpu:.1f} µs of Redis CPU per observation; {memory:.0f} bytes per IMEI held")
    if cluster_rate is not None:
        print(f"Redis Cluster (3 masters): {cluster_rate:,.0f} observations/s from one process "
              "(one script call per hash slot)")


if __name__ == "__main__":
    main()
