"""Fresh checks per second of one gateway process with clone detection counted locally vs
shared through Redis (not a test; prints figures).

Method: a redis-server on a free loopback port; ``eir-gateway run`` (one process, the embedded
default configuration with clone detection on, threshold 10) started twice, once without and
once with ``shared.redis_url``, alternately for ``--rounds`` rounds; each round the simulator
(``eir-gateway simulate``, another process) sends checks with an IMSI from a pool of
``--pool`` distinct handsets in a closed loop (``--window`` outstanding on each of
``--connections`` connections) for ``--seconds``. With clone detection on, every check that
carries an IMSI is classified afresh (the decision cache is bypassed: the tracker counts each),
so this is the fresh-check path with its clone-detection cost, local or shared. The best round
of each is reported, and the ratio shared/local (target: at least 0.8), in checks per second
and in the gateway process's CPU per check (/proc/PID/stat, user + system, every thread: the
figure the load of a shared machine moves least). End of session 7 (load average 3-4): 0.73
in checks/s, 0.68 in CPU per check, where ``bench/instructions.py --modes clone,clone-shared
--per-read 64`` counts 1.18 times the local check's instructions: most of the difference
(about 6 of the 9.3 µs sharing adds to a check) lies outside the instructions that bench
counts (its one connection is fed in process, with no socket, on asyncio's loop); it is user
CPU, and round trips carry about 190 checks each here: not found yet (README, Shared state).

Then Redis's own cost, for sizing: ``--observations`` distinct IMEIs (one IMSI each) sent
through :class:`gateway.redis_clone.SharedCloneTracker` in batches of 1,000 per loop tick:
observations per second from one process, Redis CPU (``INFO cpu``) per observation and memory
(``INFO memory``) per IMEI held.

The same through a Redis Cluster of 3 masters (``[shared] redis_cluster``; tests/redis_server.py
starts it, needs redis-cli too): each script call carries one hash slot's observations there, so
a tick of 1,000 distinct IMEIs is ~1,000 calls (in one pipeline, one round trip per master).

Run: ``.venv/bin/python bench/shared_state.py`` (needs redis-server, Debian redis-server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"process exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(state: Path, redis_url: str, args: argparse.Namespace) -> tuple[float, float]:
    """(checks/s, the gateway's CPU µs per check)."""
    port = free_port()
    env = dict(
        os.environ,
        EIR_DIAMETER_LISTEN=f"tcp://127.0.0.1:{port}",
        EIR_METRICS_LISTEN="127.0.0.1:0",
        EIR_N5G_EIR_LISTEN="",
        # Closed loop at saturation measures capacity: no shedding by queueing delay.
        EIR_DIAMETER_OVERLOAD_TARGET_DELAY_SECONDS="0",
        EIR_STATE_DIRECTORY=str(state),
        EIR_CLONE_DETECTION_ENABLED="true",
        EIR_SHARED_REDIS_URL=redis_url,
        EIR_LOGGING_LEVEL="WARNING",
    )
    gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run"], cwd=ROOT, env=env)
    try:
        wait_port(port, gateway)
        cpu = cpu_seconds(gateway.pid)
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "simulate", "--port", str(port), "--imsi",
             "--pool", str(args.pool), "--window", str(args.window), "--connections",
             str(args.connections), "--duration", str(args.seconds), "--json",
             "--progress", "off", "--seed", str(args.seed)],
            cwd=ROOT, capture_output=True, text=True, timeout=args.seconds + 120,
        )  # fmt: skip
        cpu = cpu_seconds(gateway.pid) - cpu
        report = json.loads(result.stdout)
        if report["errors"] or report["lost"]:
            sys.exit(f"the simulator saw errors: {result.stdout[:2000]}")
        return float(report["achieved_rate"]), cpu / max(report["answered"], 1) * 1e6
    finally:
        gateway.terminate()
        gateway.wait(30)


async def redis_cost(url: str, count: int, cluster: bool = False) -> tuple[float, float, float]:
    """(observations/s, Redis CPU µs per observation, Redis bytes per IMEI); CPU and memory
    of the node of ``url`` only on a cluster."""
    import redis.asyncio
    from prometheus_client import CollectorRegistry

    from gateway.config import SharedConfig
    from gateway.observations import CloneTracker
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--observations", type=int, default=200_000)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("needs redis-server (Debian redis-server)")
    print(f"# Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"closed loop, window {args.window} x {args.connections} connections, "
          f"{args.seconds:g} s per round, pool {args.pool}, best of {args.rounds}")
    with tempfile.TemporaryDirectory() as tmp:
        redis_port = free_port()
        redis = subprocess.Popen(
            [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_port(redis_port, redis)  # type: ignore[arg-type]
            local: list[tuple[float, float]] = []
            shared: list[tuple[float, float]] = []
            for n in range(args.rounds):
                local.append(one_round(Path(tmp) / f"local{n}", "", args))
                shared.append(one_round(
                    Path(tmp) / f"shared{n}", f"redis://127.0.0.1:{redis_port}/0", args
                ))
            rate, cpu, memory = asyncio.run(
                redis_cost(f"redis://127.0.0.1:{redis_port}/1", args.observations)
            )
        finally:
            redis.terminate()
            redis.wait(10)
    cluster_rate = cluster_observations(args.observations)
    for label, rounds in (("local clone detection", local), ("shared through Redis ", shared)):
        print(f"{label}: {max(r for r, _ in rounds):,.0f} checks/s, gateway CPU "
              f"{min(c for _, c in rounds):.1f} µs/check (best; rounds "
              + ", ".join(f"{r:,.0f}/s {c:.1f} µs" for r, c in rounds) + ")")
    by_rate = max(r for r, _ in shared) / max(r for r, _ in local)
    by_cpu = min(c for _, c in local) / min(c for _, c in shared)
    print(f"ratio shared/local: {by_rate:.2f} in checks/s, {by_cpu:.2f} in CPU per check "
          "(local µs / shared µs)")
    print(f"Redis: {rate:,.0f} observations/s from one process (pipelined, 1,000 per tick); "
          f"{cpu:.1f} µs of Redis CPU per observation; {memory:.0f} bytes per IMEI held")
    if cluster_rate is not None:
        print(f"Redis Cluster (3 masters): {cluster_rate:,.0f} observations/s from one process "
              "(one script call per hash slot)")


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


if __name__ == "__main__":
    main()
