"""Cost of one fresh check on the whole server path, without sockets: real traffic, sans-IO.

The gateway's own pieces on the embedded default configuration plus bench/real_traffic.py's
generated TAC file (100,000 TACs), lists and registry declarations: Classifier, local registry
(its in-memory index), observation log on (its writer running: ``EIR_OBSERVATIONS_WRITER``
chooses the process, the default, or the thread), S13 application, Node and
a responder ``PeerConnection`` over a fake transport (bench/server_path.py). Requests are the
simulator's MICRs (gateway.simulator.traffic templates) for handsets never seen before, each with
IMSI and Software-Version, 16 per read. What is measured per request: framing, decoding, the
RFC 6733 checks, peer bookkeeping, classification (TAC, lists, registry, decision cache insert),
the observation record, metrics, the answer and the write call.

Printed: CPU µs per request of the event loop's thread (``time.thread_time``), of the whole
process (the observation writer included when it is a thread; a writer process is not this
process), and wall-clock µs; the best of ``--repeat`` runs.
CPU time is less disturbed than wall time by other processes on a shared machine. And the
longest CPU time the loop's thread spent on one read (16 requests) over every run: a stall of
the gateway's own making (a garbage collection, a bulk eviction) shows there.
``--profile FILE`` writes a cProfile of one run.

``--recheck POOL`` measures re-checks instead: POOL handsets checked twice first, then again in
turn, so the decision cache answers (each still recorded in the observation log).

Run: ``.venv/bin/python bench/fresh_path.py [--requests N] [--repeat R] [--recheck POOL] [--json]
[--profile F]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from real_traffic import RealTraffic, generate  # noqa: E402
from server_path import FakeTransport, cer  # noqa: E402

from diameter.application import Application  # noqa: E402
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID  # noqa: E402
from diameter.dictionary.ts29272_s13 import VENDOR as VENDOR_3GPP  # noqa: E402
from diameter.node import Node  # noqa: E402
from diameter.peer import Role  # noqa: E402
from diameter.settings import PeerSettings  # noqa: E402
from diameter.transport.connection import PeerConnection  # noqa: E402
from gateway import registry_source  # noqa: E402
from gateway.classify import Classifier  # noqa: E402
from gateway.collector import YOUNG_INTERVAL  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.s13 import ME_IDENTITY_CHECK, MeIdentityCheck  # noqa: E402
from gateway.simulator.traffic import RequestFactory, RequestIdentity  # noqa: E402
from gateway.state import observation_log  # noqa: E402

PER_READ = 16


def requests(traffic: RealTraffic, start: int, count: int, pool: int = 0) -> list[bytes]:
    """``count`` MICRs from handset ``start`` on; with ``pool``, handsets ``start % pool`` on,
    cycling through the first ``pool`` (re-checks). Identifiers are distinct either way."""
    factory = RequestFactory(RequestIdentity("mme.example.net", "example.net", "localdomain"))
    out = []
    for i in range(count):
        n = start + i
        raw = RequestFactory.build(factory.prepare(traffic[n % pool if pool else n]), n, n)
        raw[12:16] = n.to_bytes(4, "big")  # Hop-by-Hop: distinct
        out.append(bytes(raw))
    return out


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="eir-fresh-") as state:
        policy = load_config().policy
        handsets = args.recheck or args.requests * (args.repeat + 1)
        traffic, files = generate(policy, Path(state) / "data", handsets)
        env = {
            "EIR_STATE_DIRECTORY": state,
            "EIR_TAC_FILE": str(files["tac"]),
            "EIR_LISTS_IMPORT_FILES": str(files["lists"]),
            "EIR_REGISTRY_SEED_FILES": str(files["registry"]),
        }
        config = load_config(None, env=env)
        metrics = GatewayMetrics()
        registry = registry_source.build(config.registry)
        classifier = Classifier.from_config(config, registry)
        observations = observation_log(config)  # observations.writer decides which
        observations.start()
        s13 = MeIdentityCheck(config.peer.identity, classifier, metrics, observations)
        application = Application(
            S13_APPLICATION_ID,
            {ME_IDENTITY_CHECK: s13.handle},
            vendor_id=VENDOR_3GPP,
            error_answer_body=tuple(s13.error_answer_body),
        )
        node = Node(
            PeerSettings(identity=config.peer.identity), [application], rng=random.Random(1)
        )
        connection = PeerConnection(node, Role.RESPONDER)
        transport = FakeTransport()
        connection.connection_made(transport)
        connection.data_received(cer())
        assert connection.peer is not None and connection.peer.is_open
        best = {
            "loop_cpu_us": float("inf"),
            "process_cpu_us": float("inf"),
            "wall_us": float("inf"),
            "longest_read_cpu_ms": 0.0,
            "longest_young_collection_ms": 0.0,
            "young_collection_p50_ms": 0.0,
            "young_collections": 0.0,
        }
        if not args.default_gc:
            # As gateway.collector does: start-up heap frozen, no automatic collections; the
            # young generations collected every YOUNG_INTERVAL, here every YOUNG_INTERVAL's
            # worth of requests at 10,000/s.
            gc.collect()
            gc.freeze()
            gc.disable()
        young_every = max(1, int(YOUNG_INTERVAL * 10_000 / PER_READ))
        # --census: per run, (run, decisions cached at its end, objects in the young
        # generations before each young collection: median, most).
        census: list[tuple[int, int, float, int]] = []
        profiler = cProfile.Profile() if args.profile else None
        if args.recheck:
            # Every handset of the pool checked twice before measuring: the registry verdicts
            # and the decisions are cached, as for handsets attaching again.
            warm = requests(traffic, 0, 2 * args.recheck, args.recheck)
            for i in range(0, len(warm), PER_READ):
                connection.data_received(b"".join(warm[i : i + PER_READ]))
                await asyncio.sleep(0)  # registry look-ups of the first sight complete
            base = len(warm)
        else:
            base = 0
        for r in range(args.repeat + 1):  # the first run warms up
            raws = requests(traffic, base + r * args.requests, args.requests, args.recheck)
            reads = [b"".join(raws[i : i + PER_READ]) for i in range(0, len(raws), PER_READ)]
            before = transport.writes
            receive = connection.data_received
            if profiler is not None and r == args.repeat:
                profiler.enable()
            thread_time = time.thread_time
            holds: list[float] = []
            young: list[float] = []
            walked: list[int] = []
            wall, loop_cpu, cpu = time.perf_counter(), thread_time(), time.process_time()
            for i, data in enumerate(reads):
                hold = thread_time()
                receive(data)
                holds.append(thread_time() - hold)
                if not args.default_gc and i % young_every == 0:
                    if args.census:
                        # What the young collection is about to walk (outside its timing).
                        walked.append(len(gc.get_objects(0)) + len(gc.get_objects(1)))
                    hold = thread_time()
                    gc.collect(1)
                    young.append(thread_time() - hold)
            wall = time.perf_counter() - wall
            loop_cpu = time.thread_time() - loop_cpu
            cpu = time.process_time() - cpu
            if profiler is not None and r == args.repeat:
                profiler.disable()
            assert transport.writes > before, "nothing answered"
            await asyncio.sleep(0)
            if walked:
                census.append((
                    r, classifier.decision_cache_len, statistics.median(walked), max(walked),
                ))
            if r:
                n = args.requests
                best["loop_cpu_us"] = min(best["loop_cpu_us"], loop_cpu / n * 1e6)
                best["process_cpu_us"] = min(best["process_cpu_us"], cpu / n * 1e6)
                best["wall_us"] = min(best["wall_us"], wall / n * 1e6)
                # The longest the loop's thread computed for one read of 16 requests (CPU time:
                # not lengthened by other processes): a stall of the gateway's own making.
                best["longest_read_cpu_ms"] = max(best["longest_read_cpu_ms"], max(holds) * 1e3)
                if young:
                    best["longest_young_collection_ms"] = max(
                        best["longest_young_collection_ms"], max(young) * 1e3
                    )
                    best["young_collection_p50_ms"] = statistics.median(young) * 1e3
                    best["young_collections"] = len(young)
        if not args.default_gc:
            # What gateway.collector's full collection would cost now (after a connection
            # closed): every object the caches hold since start-up.
            hold = time.thread_time()
            best["full_collection_found"] = float(gc.collect())  # garbage in cycles, if any
            best["full_collection_ms"] = (time.thread_time() - hold) * 1e3
            best["tracked_objects"] = float(len(gc.get_objects()))
        if census:
            kinds = Counter(type(o).__qualname__ for o in gc.get_objects())
            print(f"tracked objects by type, the most: {kinds.most_common(12)}")
            print("young generations' objects per collection, by run (run 0 warms up): " + "; ".join(
                f"run {r}: {cached:,} decisions cached, median {p50:,.0f}, most {most:,}"
                for r, cached, p50, most in census))
        answered = sum(metrics.hot.counters.checks.values())
        assert answered >= args.requests * (args.repeat + 1), answered
        if args.recheck:
            hits = classifier.decision_cache_hits
            assert hits >= args.requests * (args.repeat + 1), f"only {hits} decision cache hits"
        if connection._timer is not None:
            connection._timer.cancel()
        observations.close()
        if registry is not None:
            await registry.close()
        if profiler is not None:
            profiler.dump_stats(args.profile)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000, help="per run (default 50000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--recheck",
        type=int,
        default=0,
        metavar="POOL",
        help="re-checks instead: POOL handsets checked twice first, then again in turn "
        "(the decision cache answers)",
    )
    parser.add_argument(
        "--census", action="store_true",
        help="count the objects each young collection walks (gc.get_objects, outside the "
        "timings): whether they grow as the caches fill",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the last run into FILE")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="leave Python's garbage collector as it is (the gateway schedules it: "
        "gateway.collector)",
    )
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json:
        out = {k: round(v, 2) for k, v in result.items()}
        out["python"] = platform.python_version()  # type: ignore[assignment]
        print(json.dumps(out))
    else:
        kind = f"re-check (pool of {args.recheck:,})" if args.recheck else "fresh check"
        print(
            f"{kind}, whole server path: {result['loop_cpu_us']:.1f} µs CPU on the loop "
            f"thread, {result['process_cpu_us']:.1f} µs CPU in the process, "
            f"{result['wall_us']:.1f} µs wall (best of {args.repeat}); the longest read of "
            f"{PER_READ} requests took {result['longest_read_cpu_ms']:.2f} ms CPU on the loop, "
            f"young collections (every {YOUNG_INTERVAL * 1e3:g} ms of traffic at 10,000/s): "
            f"median {result['young_collection_p50_ms']:.2f} ms, longest "
            f"{result['longest_young_collection_ms']:.2f} ms; then a full collection "
            f"{result.get('full_collection_ms', 0.0):.1f} ms over "
            f"{result.get('tracked_objects', 0.0):,.0f} tracked objects, finding "
            f"{result.get('full_collection_found', 0.0):,.0f} in garbage cycles"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
