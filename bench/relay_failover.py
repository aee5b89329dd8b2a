"""Two gateways behind freeDiameter (deploy/freediameter/, rendered for loopback): latency through
the relay vs direct, and what losing one gateway costs (not a test; prints figures).

Scenarios, each on a fresh deployment (two ``eir-gateway run`` processes, freeDiameter 1.2.1
with rt_load_balance and rt_busypeers, an MME that freeDiameter connects to):

* ``latency``: open loop at ``--rate`` ECRs/s for ``--seconds`` through the relay, then the same
  straight to one gateway (our Diameter client): p50/p99/p99.9/max.
* ``kill``: open loop at ``--failover-rate``; one gateway gets SIGKILL a third of the way in:
  checks lost (no answer within 5 s), the longest time without any answer.
* ``stop``: the same with SIGSTOP (a hung gateway): lost, checks slower than 2 s, the slowest.

Run: ``.venv/bin/python bench/relay_failover.py`` (needs freeDiameterd and openssl; Debian
freediameterd + freediameter-extensions). One fixed IMEI with an IMSI: decisions come from the
gateways' caches, so the figures are the relay's and the transports' cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diameter.application import Application
from diameter.codec import decode_message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from diameter.node import Node
from diameter.settings import LocalIdentity, PeerSettings
from diameter.transport import Client
from tests.interop.relay_ha import (
    GatewayProcess,
    Outcome,
    drive,
    ecr_template,
    longest_gap,
    numbered,
    relay_sender,
    render_relay_config,
)
from tests.interop.test_freediameter import FD_IDENTITY, RelayedMme


def percentiles(values: list[float]) -> str:
    if not values:
        return "no answers"
    v = sorted(values)

    def at(q: float) -> float:
        return v[min(len(v) - 1, int(q * len(v)))] * 1000

    return (f"p50 {at(0.5):.2f} ms, p99 {at(0.99):.2f} ms, p99.9 {at(0.999):.2f} ms, "
            f"max {v[-1] * 1000:.2f} ms")


class Deployment:
    def __init__(self, directory: Path, freediameterd: str) -> None:
        self.directory = directory
        self.freediameterd = freediameterd
        self.gateways = [GatewayProcess(f"eir{i}.example.net", directory / f"var{i}")
                         for i in (1, 2)]
        self.mme = RelayedMme()
        self.relay: asyncio.subprocess.Process | None = None
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Deployment:
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/CN={FD_IDENTITY}", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.server = await asyncio.start_server(self.mme.serve, "127.0.0.1", 0)
        await asyncio.gather(*(g.start() for g in self.gateways))
        conf = render_relay_config(
            self.directory, [(g.identity, g.port) for g in self.gateways],
            ("mme.relay.test", self.server.sockets[0].getsockname()[1]), FD_IDENTITY, cert, key,
        )
        self.relay = await asyncio.create_subprocess_exec(
            self.freediameterd, "-c", str(conf), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        await asyncio.wait_for(self.mme.connected.wait(), 30)
        for gateway in self.gateways:
            while await gateway.metric("diameter_peers", state="R_OPEN") < 1:
                await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.relay is not None and self.relay.returncode is None:
            self.relay.kill()
            await self.relay.wait()
        for gateway in self.gateways:
            await gateway.stop()
        if self.server is not None:
            self.server.close()


async def direct(gateway: GatewayProcess, rate: float, seconds: float) -> list[Outcome]:
    """The same ECRs straight to one gateway, over our Diameter client's raw path."""
    node = Node(
        PeerSettings(identity=LocalIdentity(origin_host="mme.direct.test", origin_realm="test")),
        [Application(S13_APPLICATION_ID, {}, vendor_id=VENDOR, name="S13")],
    )
    client = await Client.connect(node, "127.0.0.1", gateway.port, max_outstanding=1 << 20)
    template = ecr_template("mme.direct.test")

    def send(index: int, on_answer: Callable[[int | None], None]) -> None:
        client.send_raw(numbered(template, index),
                        lambda _, raw: on_answer(decode_message(raw).get("Result-Code")))

    try:
        return await drive(send, rate, seconds)
    finally:
        await client.close()


def latencies(outcomes: list[Outcome]) -> list[float]:
    return [o.answered - o.sent for o in outcomes if o.answered is not None]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--failover-rate", type=float, default=2000.0)
    args = parser.parse_args()
    freediameterd = shutil.which("freeDiameterd")
    if freediameterd is None or shutil.which("openssl") is None:
        sys.exit("needs freeDiameterd and openssl (Debian freediameterd, openssl)")
    print(f"# Python {platform.python_version()}, {platform.machine()}, open loop, one MME "
          "connection; freeDiameter 1.2.1 with the deploy/freediameter settings")
    with tempfile.TemporaryDirectory() as tmp:
        async with _fresh(Path(tmp) / "latency", freediameterd) as d:
            relayed = await drive(relay_sender(d.mme), args.rate, args.seconds)
            print(f"latency via relay at {args.rate:.0f}/s ({len(relayed)} ECRs, "
                  f"{sum(o.answered is None for o in relayed)} unanswered): "
                  f"{percentiles(latencies(relayed))}")
            straight = await direct(d.gateways[0], args.rate, args.seconds)
            print(f"latency direct at {args.rate:.0f}/s ({len(straight)} ECRs, "
                  f"{sum(o.answered is None for o in straight)} unanswered): "
                  f"{percentiles(latencies(straight))}")
        for name, sig in (("kill", signal.SIGKILL), ("stop", signal.SIGSTOP)):
            async with _fresh(Path(tmp) / name, freediameterd) as d:
                victim = d.gateways[0]
                seconds = 6.0
                outcomes = await drive(relay_sender(d.mme), args.failover_rate, seconds,
                                       events={seconds / 3: functools.partial(victim.signal, sig)})
                victim.signal(signal.SIGCONT)
                lost = sum(o.answered is None for o in outcomes)
                slow = sum(1 for x in latencies(outcomes) if x > 2.0)
                print(f"{name} one of two gateways at {args.failover_rate:.0f}/s: "
                      f"{len(outcomes)} ECRs, {lost} lost, longest gap without answers "
                      f"{longest_gap(outcomes) * 1000:.0f} ms, {slow} slower than 2 s, "
                      f"{percentiles(latencies(outcomes))}")


@contextlib.asynccontextmanager
async def _fresh(directory: Path, freediameterd: str) -> AsyncIterator[Deployment]:
    directory.mkdir(parents=True)
    async with Deployment(directory, freediameterd) as deployment:
        yield deployment


if __name__ == "__main__":
    asyncio.run(main())
