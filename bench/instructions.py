"""Instructions per request on the server path, counted by valgrind: a figure that does not move
with the load of a shared machine (CPU time does, by tens of per cent).

Each mode feeds pre-encoded ME-Identity-Check-Requests, 16 per read, to a responder
``PeerConnection`` over a fake transport (bench/server_path.py), sans-IO:

* ``server``: the Diameter layer alone (framing, decoding, duplicate detection, the RFC 6733
  checks, watchdog, events, the answer's bookkeeping), a trivial handler answering a
  pre-encoded header; the requests' shape learnt, they take the lane (``diameter.lane``) as
  the gateway's steady MICRs do;
* ``server-full``: the same with no lane: every request decoded and checked in full (what a
  request of a shape not learnt costs);
* ``recheck``: the S13 application on the embedded default configuration, 1,000 handsets each
  checked twice first, then again in turn (the decision cache answers);
* ``fresh``: the same, every handset never seen before (classified afresh: TAC, lists, registry
  verdict, decision cache insert);
* ``n5g``: N5g-eir GetEquipmentStatus the same way, 10 requests per read to the server's
  connection protocol (``gateway.n5g_eir.server``) over a fake transport: HEADERS frames whose
  header blocks an AMF's HPACK encoder made (the ``hpack`` library: Huffman strings, ``:path``
  indexed), every PEI never seen before (bench/n5g_eir.py's real traffic, with a SUPI), on the
  embedded default configuration; the HTTP/2 session, the request and identity parsing, the
  classifier, the answer, the metrics;
* ``n5g-http2``: the same requests answered with a pre-built 200 (bench/n5g_eir.py's
  ceiling): the HTTP/2 server alone;
* ``server-deferred``: ``server`` with the handler returning a ``DeferredAnswer`` and each
  read's answers given together after it (one call, as a round trip to Redis settles the
  checks waiting for the shared clone count), then written: the Diameter layer's cost of an
  answer given later, without Redis;
* ``refuse``: the Diameter layer of ``server`` with overload control refusing every request
  (reduction 100 %): what one 3004 DIAMETER_TOO_BUSY costs, refused before decoding;
* ``clone``: ``fresh`` with clone detection on (``clone_detection.enabled``), counted in this
  process, and each read's checks answered before the next read (as ``clone-shared``);
* ``simulator``: the other side, the S13 simulator itself (``gateway.simulator``, what
  ``eir-gateway simulate`` and the benches drive the gateway with): a closed loop of 4
  connections of 64 outstanding requests against bench/ceiling.py (a process of its own,
  started here on a free loopback port and not counted), distinct handsets each with an IMSI
  and a Software-Version, every answer verified (the ceiling answers WHITELISTED, as each
  check expects): its instructions per request sent and answer checked, the generator's cost
  that CPU 0 carries in bench/e2e.py and bench/shared_state.py;
* ``clone-shared``: the same, counted through Redis (``[shared] redis_url``, a redis-server this
  process starts on a free loopback port): each read of 16 checks (``--per-read``) is one round
  trip to Redis, answered before the next read (each a ``DeferredAnswer`` the count's callback
  gives). Its ratio to ``clone`` is the shared-state target's (>= 0.8 of the local throughput:
  at most 1.25 times its instructions); bench/shared_state.py measures the same in checks/s and
  CPU on a real gateway, where sharing costs more than these instructions.

Every request carries User-Name and Software-Version. The observation log is off (its writer
thread makes the count vary from run to run); ``--observations`` turns it on and flushes it at
the end. The count is taken from ``valgrind --tool=cachegrind --cache-sim=no`` (I refs, every
thread) over two runs of the same mode with ``--small`` and ``--large`` requests, so start-up,
imports and warm-up cancel out: (I(large) - I(small)) / (large - small). Requests are encoded
beforehand by this process and loaded by the measured one. ``PYTHONHASHSEED=0``: two runs of
the same code agree to within 0.1 %.

The compiled build of the hot modules is measured when one matches the sources (``make
compile``); ``EIR_PURE_PYTHON=1`` measures pure Python. The output names which ran, and every
measured process is held to it: with a build, each child runs under ``EIR_REQUIRE_COMPILED=1``
(a source edited mid-run makes it fail, not fall back to pure Python unseen) and checks that
the hot modules it imported are the compiled ones; without, under ``EIR_PURE_PYTHON=1``.

Run: ``.venv/bin/python bench/instructions.py [--modes server,recheck,fresh,refuse,n5g,n5g-http2,
clone,clone-shared] [--small N] [--large N] [--per-read N] [--observations] [--json]``. Needs
valgrind (Debian ``valgrind``); clone-shared needs redis-server too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from server_path import FakeTransport, cer, make_connection, micr  # noqa: E402

from diameter.codec import FLAG_PROXIABLE, FLAG_REQUEST, Avp, Message  # noqa: E402
from diameter.deferred import DeferredAnswer  # noqa: E402
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR  # noqa: E402
from diameter.node import Node  # noqa: E402
from diameter.overload import OverloadSettings  # noqa: E402
from diameter.peer import Role  # noqa: E402
from diameter.settings import PeerSettings  # noqa: E402
from diameter.transport.connection import PeerConnection  # noqa: E402
from eir_compiled import finder as compiled_build  # noqa: E402
from gateway.imei import luhn_check_digit  # noqa: E402
from gateway.simulator.traffic import Check  # noqa: E402

MODES = (
    "server", "server-full", "server-deferred", "recheck", "fresh", "refuse", "n5g",
    "n5g-http2", "clone", "clone-shared", "simulator",
)
N5G_MODES = ("n5g", "n5g-http2")
CLONE_MODES = ("clone", "clone-shared")
POOL = 1_000  # handsets of the recheck mode
PER_READ = 16
N5G_PER_READ = 10  # bench/n5g_eir.py's closed loop: 10 streams per connection
_IR = re.compile(r"I\s+refs:\s+([\d,]+)")


def s13_request(n: int, handset: int) -> bytes:
    """A MICR as an MME sends it (the simulator's shape), for handset number ``handset``: an
    IMEI over the sample TAC file's TACs 35209900/35209901, an IMSI and a Software-Version."""
    a = Avp.new
    body = f"3520990{handset % 2}{handset % 1_000_000:06d}"
    avps = [
        a("Session-Id", f"mme.example.net;1700000000;{n}"),
        a(
            "Vendor-Specific-Application-Id",
            [a("Vendor-Id", VENDOR), a("Auth-Application-Id", S13_APPLICATION_ID)],
        ),
        a("Auth-Session-State", 1),
        a("Origin-Host", "mme.example.net"),
        a("Origin-Realm", "example.net"),
        a("Destination-Realm", "localdomain"),
        a(
            "Terminal-Information",
            [
                a("IMEI", body + str(luhn_check_digit(body))),
                a("Software-Version", f"{handset % 100:02d}"),
            ],
        ),
        a("User-Name", f"00101{handset:010d}"),
    ]
    flags = FLAG_REQUEST | FLAG_PROXIABLE
    return Message(324, S13_APPLICATION_ID, flags, n, n, avps).encode()


def n5g_requests(count: int) -> tuple[list[bytes], list[bytes]]:
    """HEADERS frames of one AMF connection: 2 * POOL warm-up PEIs, then ``count`` others."""
    from n5g_eir import pei_uris
    from n5g_eir_session import client_frames

    warm = pei_uris("", 2 * POOL, 1000)
    measured = [uri for uri in pei_uris("", 2 * POOL + count, 1) if uri not in set(warm)][:count]
    frames = client_frames(warm + measured)
    return frames[:len(warm)], frames[len(warm):]


def simulator_checks(count: int) -> list[Check]:
    """The simulator mode's handsets: distinct IMEIs over the sample TACs, each with an IMSI
    and a Software-Version, expected WHITELISTED (the ceiling's answer)."""
    out = []
    for handset in range(count):
        body = f"3520990{handset % 2}{handset % 1_000_000:06d}"
        out.append(Check(body + luhn_check_digit(body), f"00101{handset:010d}",
                         f"{handset % 100:02d}", "WHITELISTED", "valid"))
    return out


def requests(mode: str, count: int) -> tuple[list[bytes], list[bytes]] | list[Check]:
    """(warm-up requests, measured requests) of ``mode``; the simulator mode's checks."""
    if mode == "simulator":
        return simulator_checks(count)
    if mode in N5G_MODES:
        return n5g_requests(count)
    if mode in ("server", "server-full", "server-deferred", "refuse"):
        return [], [micr(0x100000 + i) for i in range(count)]
    warm = [s13_request(i + 1, i % POOL) for i in range(2 * POOL)]
    if mode == "recheck":
        return warm, [s13_request(10_000_000 + i, i % POOL) for i in range(count)]
    return warm, [s13_request(10_000_000 + i, 5_000 + i) for i in range(count)]


async def serve_n5g(mode: str, warm: list[bytes], measured: list[bytes],
                    observations_on: bool) -> None:
    """The N5g-eir modes: the server's connection protocol over a fake transport."""
    from n5g_eir import PrebuiltAnswer
    from n5g_eir_session import OPEN_WINDOW

    from gateway import registry_source
    from gateway.classify import Classifier
    from gateway.config import load_config
    from gateway.metrics import GatewayMetrics
    from gateway.n5g_eir.equipment_status import EquipmentIdentityCheck
    from gateway.n5g_eir.frames import PREFACE, settings_frame
    from gateway.n5g_eir.server import N5gEirServer, _Connection
    from gateway.observations import ObservationLog

    with tempfile.TemporaryDirectory(prefix="eir-instructions-") as state:
        config = load_config(None, env={"EIR_STATE_DIRECTORY": state})
        observations = None
        handler: object = PrebuiltAnswer()
        if mode == "n5g":
            classifier = Classifier.from_config(config, registry_source.build(config.registry))
            if observations_on:
                obs = config.observations
                observations = ObservationLog(
                    obs.database, obs.queue_size, obs.batch_size, obs.flush_interval
                )
                observations.start()
            handler = EquipmentIdentityCheck(classifier, config.n5g_eir, GatewayMetrics(),
                                             observations)
        server = N5gEirServer(handler, config.n5g_eir)  # type: ignore[arg-type]
        connection = _Connection(server, tls=False)
        transport = FakeTransport()
        connection.connection_made(transport)
        connection.data_received(PREFACE + settings_frame({}) + OPEN_WINDOW)
        for i in range(0, len(warm), N5G_PER_READ):
            connection.data_received(b"".join(warm[i : i + N5G_PER_READ]))
            while connection.waiting:
                await asyncio.sleep(0)
        answered = sum(server.http._requests.values())
        for i in range(0, len(measured), N5G_PER_READ):
            connection.data_received(b"".join(measured[i : i + N5G_PER_READ]))
        assert not connection.waiting, "a check waited: not the path measured"
        assert sum(server.http._requests.values()) - answered == len(measured), "unanswered"
        if observations is not None:
            observations.close()


async def serve(mode: str, path: str, observations_on: bool, per_read: int = PER_READ) -> None:
    """The measured process: load the requests, serve them, flush the observation log."""
    with open(path, "rb") as f:
        loaded = pickle.load(f)
    if mode == "simulator":
        await simulate_against_ceiling(loaded)
        return
    warm, measured = loaded
    if mode in N5G_MODES:
        await serve_n5g(mode, warm, measured, observations_on)
        return
    observations = None
    with tempfile.TemporaryDirectory(prefix="eir-instructions-") as state:
        given: list[DeferredAnswer] | None = [] if mode == "server-deferred" else None
        if mode in ("server", "server-full", "server-deferred", "refuse"):
            answer = bytes([1, 0, 0, 20, 0]) + micr(0)[5:20]
            connection, transport = make_connection(answer, lane=mode != "server-full",
                                                    deferred=given)
            if mode == "refuse":
                overload = connection.node.overload
                overload.settings = OverloadSettings(target_delay=0.1)
                overload.reduction = 100
        else:
            from gateway import registry_source
            from gateway.classify import Classifier
            from gateway.config import load_config
            from gateway.metrics import GatewayMetrics
            from gateway.observations import ObservationLog
            from gateway.s13 import MeIdentityCheck

            env = {"EIR_STATE_DIRECTORY": state}
            if mode in CLONE_MODES:
                env["EIR_CLONE_DETECTION_ENABLED"] = "true"
            if mode == "clone-shared":
                env["EIR_SHARED_REDIS_URL"] = os.environ["EIR_BENCH_REDIS_URL"]
                # Every check answered from its round trip's reply, never from the budget's
                # sweep: under valgrind a read's checks take longer than the default 50 ms
                # budget, and how many passed it depended on the machine's load (the same
                # tree measured 87,669 and 94,577 instructions a check).
                env["EIR_SHARED_BUDGET_SECONDS"] = "600"
                env["EIR_SHARED_TIMEOUT_SECONDS"] = "600"
            config = load_config(None, env=env)
            registry = registry_source.build(config.registry)
            classifier = Classifier.from_config(config, registry)
            if mode == "clone-shared":
                from prometheus_client import CollectorRegistry

                from gateway.redis_clone import shared_clone_tracker

                assert classifier.clone is not None
                clone = classifier.clone = shared_clone_tracker(
                    classifier.clone, config.shared, CollectorRegistry()
                )
            if observations_on:
                obs = config.observations
                observations = ObservationLog(
                    obs.database, obs.queue_size, obs.batch_size, obs.flush_interval
                )
                observations.start()
            s13 = MeIdentityCheck(config.peer.identity, classifier, GatewayMetrics(), observations)
            node = Node(
                PeerSettings(identity=config.peer.identity),
                [s13.application()],
                rng=random.Random(1),
            )
            connection = PeerConnection(node, Role.RESPONDER)
            transport = FakeTransport()
            connection.connection_made(transport)
            connection.data_received(cer())
            for raw in warm:
                connection.data_received(raw)
                await asyncio.sleep(0)  # registry look-ups of a first sight complete
                if mode == "clone-shared":
                    # One round trip a warm-up check, answered before the next: how many
                    # checks a round trip carried depended on Redis's timing, and so did the
                    # warm-up's cost, which the two runs' difference must cancel.
                    await clone.flush()
                    while connection.tasks or connection.deferred:
                        await asyncio.sleep(0)
        before = transport.writes
        for i in range(0, len(measured), per_read):
            connection.data_received(b"".join(measured[i : i + per_read]))
            if given is not None:
                for later in given:  # the read's answers given in one call
                    later.give(answer)
                given.clear()
                await asyncio.sleep(0)  # their write, from the callback it scheduled
            if mode == "clone-shared":
                # This read's checks answered before the next: its round trip to Redis, then
                # the few loop iterations their answers take (no per-check waiting of ours).
                await clone.flush()
                while connection.tasks or connection.deferred:
                    await asyncio.sleep(0)
        assert transport.writes > before, "nothing answered"
        if mode == "refuse":
            assert connection.node.overload.refused == len(measured), "not every one refused"
        if observations is not None:
            observations.close()
        if connection._timer is not None:
            connection._timer.cancel()


async def simulate_against_ceiling(checks: list[Check]) -> None:
    """The simulator mode's measured process: every check sent once, each answer verified."""
    from gateway.simulator.runner import SimulatorSettings, simulate

    settings = SimulatorSettings(port=int(os.environ["EIR_BENCH_CEILING_PORT"]), connections=4,
                                 window=64, count=len(checks), max_duration=1500.0,
                                 timeout=600.0)
    report, _ = await simulate(settings, checks)
    if not report.ok or report.stats.verified != len(checks):
        raise SystemExit(f"the simulator's run was not clean:\n{report.render_text()}")


def start_ceiling(stack: contextlib.ExitStack) -> str:
    """bench/ceiling.py on a free loopback port, stopped with ``stack``; its port."""
    ceiling = subprocess.Popen([sys.executable, str(ROOT / "bench" / "ceiling.py")],
                               stdout=subprocess.PIPE, text=True)
    stack.callback(ceiling.wait, 10)
    stack.callback(ceiling.terminate)
    assert ceiling.stdout is not None
    line = ceiling.stdout.readline()  # "ready PORT" once listening
    if not line.startswith("ready "):
        raise RuntimeError(f"bench/ceiling.py did not start: {line!r}")
    return line.split()[1]


def build_env(compiled: bool) -> dict[str, str]:
    """What a child needs to run the build the parent named: the compiled one or nothing."""
    if compiled:
        return {compiled_build.REQUIRE_ENV: "1", compiled_build.PURE_ENV: ""}
    return {compiled_build.PURE_ENV: "1"}


def check_build(compiled: bool) -> None:
    """In a child: the hot modules are the build its parent measured (see build_env)."""
    import diameter.peer

    status = compiled_build.status()
    extension = Path(diameter.peer.__file__ or "").suffix == ".so"
    if (status == compiled_build.COMPILED) != compiled or extension != compiled:
        raise SystemExit(
            f"measured process runs {status} ({diameter.peer.__file__}), "
            f"not the {'compiled' if compiled else 'pure Python'} build its parent named"
        )


def count(valgrind: str, mode: str, n: int, observations: bool, work: str,
          redis_url: str = "", per_read: int = PER_READ, ceiling_port: str = "") -> int:
    path = str(Path(work) / f"{mode}-{n}.pickle")
    with open(path, "wb") as f:
        pickle.dump(requests(mode, n), f)
    command = [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        mode,
        path,
        "--per-read",
        str(per_read),
    ]
    if observations:
        command.append("--observations")
    compiled = compiled_build.status() == compiled_build.COMPILED
    if compiled:
        command.append("--compiled")
    env = dict(os.environ, PYTHONHASHSEED="0", EIR_BENCH_REDIS_URL=redis_url,
               EIR_BENCH_CEILING_PORT=ceiling_port, **build_env(compiled))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} ({n} requests) failed:\n{done.stderr[-3000:]}")
    found = _IR.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--small", type=int, default=400, help="requests of the first run")
    parser.add_argument("--large", type=int, default=2_000, help="requests of the second run")
    parser.add_argument("--observations", action="store_true", help="observation log on")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--per-read", type=int, default=PER_READ,
                        help="S13 requests per read (default %(default)s)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        check_build(args.compiled)
        asyncio.run(serve(args.child[0], args.child[1], args.observations, args.per_read))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    if not 0 < args.small < args.large:
        parser.error("--small must be positive and below --large")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (Debian: apt-get install valgrind); nothing measured")
        return 1
    results: dict[str, int] = {}
    if not args.json:
        print(f"hot modules: {compiled_build.status()}", flush=True)  # each child checks it
    with tempfile.TemporaryDirectory(prefix="eir-instructions-") as work, \
            contextlib.ExitStack() as stack:
        redis_url = ""
        if "clone-shared" in modes:
            binary = shutil.which("redis-server")
            if binary is None:
                print("redis-server is not installed (Debian redis-server): clone-shared needs it")
                return 1
            from tests.redis_server import RedisServer

            redis = RedisServer(binary, Path(work))
            redis.start()
            stack.callback(redis.stop)
            redis_url = redis.url
        ceiling_port = start_ceiling(stack) if "simulator" in modes else ""
        for mode in modes:
            small, large = (count(valgrind, mode, n, args.observations, work, redis_url,
                                  args.per_read, ceiling_port) for n in (args.small, args.large))
            results[mode] = round((large - small) / (args.large - args.small))
            if not args.json:
                print(f"{mode:12} {results[mode]:>9,} instructions/request", flush=True)
        if "clone" in results and "clone-shared" in results and not args.json:
            print(f"clone-shared / clone: {results['clone-shared'] / results['clone']:.2f} "
                  "(target <= 1.25)")
    if args.json:
        out = {
            "instructions_per_request": results,
            "observations": args.observations,
            "requests": [args.small, args.large],
            "python": platform.python_version(),
            "hot_modules": compiled_build.status(),
        }
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
