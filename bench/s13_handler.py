"""Cost of the S13 application per request, without sockets or the Diameter peer machine.

Decodes a pre-encoded ME-Identity-Check-Request and calls the S13 handler (classification on the
embedded default config, metrics, observation log off) in a bounded loop; prints µs per request.
CPU time of the calling thread. Usage: .venv/bin/python bench/s13_handler.py [--count N] [--json]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from gateway.classify import Classifier
from gateway.config import load_config
from gateway.metrics import GatewayMetrics
from gateway.registry_source import build
from gateway.s13 import MeIdentityCheck

IMEIS = ("35209900123456", "35693803564380", "35332011900123", "86000001123456", "35111111123456")


def request(imei: str, n: int) -> bytes:
    m = Message(324, S13_APPLICATION_ID, 0xC0, n, n)
    m.add("Session-Id", f"mme.sim.local;1;{n}")
    m.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
    )
    m.add("Auth-Session-State", 1).add("Origin-Host", "mme.sim.local").add("Origin-Realm", "sim")
    m.add("Destination-Realm", "localdomain")
    m.add("Terminal-Information", [Avp.new("IMEI", imei), Avp.new("Software-Version", "01")])
    m.add("User-Name", "001010123456789")
    return m.encode()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        env = {"EIR_STATE_DIRECTORY": state, "EIR_OBSERVATIONS_ENABLED": "false"}
        config = load_config(None, env=env)
        registry = build(config.registry)
        classifier = Classifier.from_config(config, registry)
        handler = MeIdentityCheck(config.peer.identity, classifier, GatewayMetrics())
        raws = [request(IMEIS[i % len(IMEIS)], i) for i in range(1000)]
        for raw in raws:  # warm the registry memo
            result = handler.handle(decode_message(raw))
            assert isinstance(result, bytes)
        started = time.thread_time()  # CPU time: steadier than wall time on a shared machine
        for i in range(args.count):
            handler.handle(decode_message(raws[i % 1000]))
        elapsed = time.thread_time() - started
        if registry is not None:
            await registry.close()
    us = elapsed / args.count * 1e6
    result = {
        "requests": args.count,
        "us_per_request": round(us, 2),
        "requests_per_second": round(args.count / elapsed),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result) if args.json else f"S13 handler: {us:.2f} µs/request ({result['requests_per_second']:,}/s)")


if __name__ == "__main__":
    asyncio.run(main())
