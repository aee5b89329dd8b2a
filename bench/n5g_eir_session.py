"""Cost of one N5g-eir request without sockets: the HTTP/2 session and the check, per request.

Client side: the requests an AMF's HTTP/2 stack would send (HEADERS with a Huffman-coded,
HPACK-indexed header block from the ``hpack`` library's encoder, one stream each), for a pool of
distinct PEIs with SUPIs (bench/n5g_eir.py's generator), encoded before timing. Timed, in a
bounded loop: ``Http2Session.receive`` of the frame, ``EquipmentIdentityCheck.handle`` on the
embedded default config (decision cache warm, observations off), ``Http2Session.respond`` and
``data_to_send``, in CPU time of this process (time.process_time: what a shared machine
does not take away). The same loop without the check (a pre-built 200) gives the HTTP/2 share, and
the same requests through the ``h2`` library's server connection give the comparison that chose
this server's own HTTP/2 core.

Usage: .venv/bin/python bench/n5g_eir_session.py [--count N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import hpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from n5g_eir import PrebuiltAnswer, pei_uris  # noqa: E402

from gateway.classify import Classifier  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.n5g_eir.equipment_status import EquipmentIdentityCheck  # noqa: E402
from gateway.n5g_eir.frames import (  # noqa: E402
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    MAX_WINDOW,
    PREFACE,
    FrameType,
    frame,
    settings_frame,
    window_update_frame,
)
from gateway.n5g_eir.http2 import Http2Session  # noqa: E402
from gateway.n5g_eir.problem import Response  # noqa: E402
from gateway.n5g_eir.request import PATH_PREFIXES  # noqa: E402
from gateway.registry_source import build  # noqa: E402

# The client opens the connection window once (as real clients do as they read): responses are
# never held back for flow control in the timed loops.
OPEN_WINDOW = window_update_frame(0, MAX_WINDOW - DEFAULT_WINDOW)


def client_frames(paths: list[str]) -> list[bytes]:
    encoder = hpack.Encoder()
    out = []
    for n, path in enumerate(paths):
        block = encoder.encode([(":method", "GET"), (":scheme", "http"),
                                (":authority", "127.0.0.1:8080"), (":path", path),
                                ("user-agent", "amf")], huffman=True)
        out.append(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 2 * n + 1, block))
    return out


def measure(handler: object, frames: list[bytes], count: int) -> float:
    session = Http2Session(load_config(None).n5g_eir, PATH_PREFIXES)
    session.initiate()
    session.receive(PREFACE + settings_frame({}) + OPEN_WINDOW)
    session.data_to_send()
    handle = handler.handle  # type: ignore[attr-defined]
    started = time.process_time()
    for i in range(count):
        for request in session.receive(frames[i]):
            result = handle(request.method, request.path, 0, request.authorization)
            assert isinstance(result, Response), "a registry wait: warm the caches first"
            session.respond(request.stream_id, result)
        session.data_to_send()
    return (time.process_time() - started) / count * 1e6


def measure_h2(frames: list[bytes], count: int) -> float:
    """The same requests through the ``h2`` library's server connection, answered with the
    same pre-built 200 (its sans-IO core with header validation on, as the first version of
    this server used it)."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import RequestReceived

    body = PrebuiltAnswer.answer.body
    headers = [(b":status", b"200"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    conn.initiate_connection()
    conn.receive_data(PREFACE + settings_frame({}) + OPEN_WINDOW)
    conn.data_to_send()
    started = time.process_time()
    for i in range(count):
        for event in conn.receive_data(frames[i]):
            if isinstance(event, RequestReceived):
                conn.send_headers(event.stream_id, headers)
                conn.send_data(event.stream_id, body, end_stream=True)
        conn.data_to_send()
    return (time.process_time() - started) / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        config = load_config(None, env={"EIR_STATE_DIRECTORY": state,
                                        "EIR_OBSERVATIONS_ENABLED": "false"})
        registry = build(config.registry)
        classifier = Classifier.from_config(config, registry)
        check = EquipmentIdentityCheck(classifier, config.n5g_eir, GatewayMetrics())
        paths = [u.split("8080", 1)[-1] for u in pei_uris("http://127.0.0.1:8080", 10_000, 1)]
        for path in paths:  # warm registry verdicts and decisions
            answer = check.handle(b"GET", path.encode())
            if not isinstance(answer, Response):
                await answer
        frames = client_frames([paths[i % len(paths)] for i in range(args.count)])
        full = measure(check, frames, args.count)
        http2 = measure(PrebuiltAnswer(), frames, args.count)
        h2_library = measure_h2(frames, args.count)
        if registry is not None:
            await registry.close()
    result = {
        "requests": args.count,
        "us_per_request": round(full, 2),
        "us_http2_only": round(http2, 2),
        "us_h2_library_http2_only": round(h2_library, 2),
        "requests_per_second_one_core": round(1e6 / full),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"N5g-eir per request (sans-IO, HPACK with Huffman, decision cache warm): "
              f"{full:.1f} µs ({result['requests_per_second_one_core']:,}/s on one core), "
              f"of which HTTP/2 {http2:.1f} µs (the h2 library: {h2_library:.1f} µs)")


if __name__ == "__main__":
    asyncio.run(main())
