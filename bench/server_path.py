"""Sans-IO micro-benchmark of the Diameter layer's per-request server path.

Pre-encoded ME-Identity-Check-Requests (distinct End-to-End identifiers, so none is a duplicate)
are fed to a responder ``PeerConnection`` over a fake transport that only collects the written
bytes; the S13 handler is trivial and synchronous, returning a pre-encoded answer. No sockets, no
event loop iterations: what is measured is framing, decoding, duplicate detection, the RFC 6733
checks, the watchdog, events, dispatch, the answer's bookkeeping and the write call.

Scenarios: one MICR per read (``read=1``), 16 MICRs per read (``read=16``, pipelining) and the
stream of MICRs cut in 64 KiB reads (``read=64KiB``, a big window: messages split across reads).
Each is timed ``--repeat`` times in CPU time of this thread (steadier than wall time on a shared
machine); the best run is printed in µs per request.

Run: ``.venv/bin/python bench/server_path.py [--requests N] [--repeat R] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diameter.application import Application, Lane, PeerInfo  # noqa: E402
from diameter.codec import FLAG_PROXIABLE, FLAG_REQUEST, Avp, Message, decode_message  # noqa: E402
from diameter.deferred import DeferredAnswer  # noqa: E402
from diameter.events import LaneRequest  # noqa: E402
from diameter.node import Node  # noqa: E402
from diameter.peer import Role  # noqa: E402
from diameter.settings import LocalIdentity, PeerSettings  # noqa: E402
from diameter.transport.connection import PeerConnection  # noqa: E402

S13, TGPP, ECR = 16777252, 10415, 324
EIR = LocalIdentity(origin_host="eir.example.net", origin_realm="example.net")
MME_HOST, REALM = "mme.example.net", "example.net"


def cer() -> bytes:
    vsai = Avp.new(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13)],
    )
    avps = [
        Avp.new("Origin-Host", MME_HOST),
        Avp.new("Origin-Realm", REALM),
        Avp.new("Host-IP-Address", "127.0.0.1"),
        Avp.new("Vendor-Id", TGPP),
        Avp.new("Product-Name", "bench"),
        vsai,
    ]
    return Message(257, 0, FLAG_REQUEST, 1, 1, avps).encode()


def micr(end_to_end: int) -> bytes:
    """The simulator's MICR shape (gateway.simulator.traffic), with User-Name; every request
    has its own IMEI, so no two Terminal-Information AVPs are alike."""
    a = Avp.new
    imei = f"{35395803000000 + end_to_end % 1000000:014d}"
    avps = [
        a("Session-Id", f"{MME_HOST};1700000000;{end_to_end}"),
        a("Vendor-Specific-Application-Id", [a("Vendor-Id", TGPP), a("Auth-Application-Id", S13)]),
        a("Auth-Session-State", 1),
        a("Origin-Host", MME_HOST),
        a("Origin-Realm", REALM),
        a("Destination-Realm", REALM),
        a("Terminal-Information", [a("IMEI", imei), a("Software-Version", "14")]),
        a("User-Name", "001010123456789"),
    ]
    flags = FLAG_REQUEST | FLAG_PROXIABLE
    return Message(ECR, S13, flags, end_to_end, end_to_end, avps).encode()


class FakeTransport(asyncio.Transport):
    """The few asyncio.Transport methods PeerConnection calls; writes are counted, not kept."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("closed")

    def abort(self) -> None:
        raise AssertionError("aborted")

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 3868) if name in ("peername", "sockname") else default

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        # PeerConnection pauses reading while it serves the rest of a read past its budget
        # (diameter.read_budget_messages); the bench serves that rest at once (see run).
        return None

    def resume_reading(self) -> None:
        return None


def make_connection(
    answer: bytes, lane: bool = True, deferred: list[DeferredAnswer] | None = None
) -> tuple[PeerConnection, FakeTransport]:
    """A responder connection, open, whose S13 handler answers ``answer``; with ``lane``, the
    requests of a learnt shape take the lane (diameter.lane), as the gateway's do. With
    ``deferred``, the handler returns a DeferredAnswer instead (appended there, for the caller
    to give), as a check waiting for the shared clone count does."""

    def handle(request: Message | LaneRequest, peer: PeerInfo) -> bytes | DeferredAnswer:
        if deferred is None:
            return answer
        later = DeferredAnswer()
        deferred.append(later)
        return later

    node = Node(PeerSettings(identity=EIR), rng=random.Random(1))
    lanes = {ECR: Lane(handle)} if lane else {}
    node.add_application(Application(S13, {ECR: handle}, vendor_id=TGPP, lanes=lanes))
    connection = PeerConnection(node, Role.RESPONDER)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(cer())
    assert connection.peer is not None and connection.peer.is_open
    return connection, transport


def run(requests: int, per_read: int, repeat: int, chunk: int = 0) -> float:
    # A header-only "answer": the handler's own cost is not measured here.
    answer = bytes([1, 0, 0, 20, 0]) + micr(0)[5:20]
    best = float("inf")
    for r in range(repeat):
        connection, transport = make_connection(answer)
        base = 0x10000000 + r * requests
        messages = [micr(base + i) for i in range(requests)]
        if chunk:
            # A byte stream cut in fixed-size reads, messages split across reads (big windows).
            stream = b"".join(messages)
            reads = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
        else:
            reads = [b"".join(messages[i : i + per_read]) for i in range(0, requests, per_read)]
        del messages
        receive = connection.data_received
        gc.collect()
        start = time.thread_time()
        for data in reads:
            receive(data)
            while connection._backlog is not None:  # the rest of a read past its budget
                connection._serve_backlog()
        elapsed = time.thread_time() - start
        assert transport.written >= 20 * requests, "not every request was answered"
        best = min(best, elapsed / requests * 1e6)
        if connection._timer is not None:
            connection._timer.cancel()
    return best


def check_answers() -> None:
    """The path answers every request (sanity check before timing)."""
    answer = bytes([1, 0, 0, 20, 0]) + micr(0)[5:20]
    connection, transport = make_connection(answer)
    before = transport.written
    connection.data_received(b"".join(micr(i + 7) for i in range(5)))
    assert transport.written - before == 5 * 20, transport.written - before
    decode_message(answer)
    if connection._timer is not None:
        connection._timer.cancel()


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    check_answers()
    results = {}
    for per_read in (1, 16):
        results[f"read={per_read}"] = run(args.requests, per_read, args.repeat)
    results["read=64KiB"] = run(args.requests, 0, args.repeat, chunk=65536)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in results.items()}))
    else:
        for name, us in results.items():
            print(f"{name:10} {us:7.2f} µs/request  ({1e6 / us:,.0f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
