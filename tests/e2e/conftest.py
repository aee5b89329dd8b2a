"""A real gateway on loopback (port 0) and an MME-side Diameter client for end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diameter.application import Application
from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from diameter.node import Node
from diameter.settings import LocalIdentity, PeerSettings
from diameter.transport import Client
from gateway.config import load_config
from gateway.service import Gateway

ME_IDENTITY_CHECK = 324
FLAGS_REQUEST_PROXIABLE = 0xC0


def gateway_env(state_dir: Path, **overrides: str) -> dict[str, str]:
    env = {
        "EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:0",
        "EIR_METRICS_LISTEN": "127.0.0.1:0",
        "EIR_N5G_EIR_LISTEN": "http://127.0.0.1:0",
        "EIR_STATE_DIRECTORY": str(state_dir),
        "EIR_LISTS_POLL_INTERVAL_SECONDS": "0.1",
    }
    env.update(overrides)
    return env


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[StartGateway]:
    started: list[Gateway] = []

    async def start(**overrides: str) -> Gateway:
        config = load_config(None, env=gateway_env(tmp_path / f"var{len(started)}", **overrides))
        gateway = Gateway(config)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


class Mme:
    """An MME peer of the gateway: CER/CEA done, sends ME-Identity-Check-Requests."""

    def __init__(self, client: Client, node: Node) -> None:
        self.client = client
        self.node = node
        self._session = 0

    def micr(
        self,
        imei: str | None = None,
        *,
        sv: str | None = None,
        imsi: str | None = None,
        meid: bytes | None = None,
        terminal_information: bool = True,
        proxy_info: tuple[tuple[str, bytes], ...] = (),
        destination_realm: str = "localdomain",
    ) -> Message:
        self._session += 1
        message = Message(ME_IDENTITY_CHECK, S13_APPLICATION_ID, FLAGS_REQUEST_PROXIABLE)
        message.end_to_end = self.node.next_end_to_end()
        identity = self.node.identity
        message.add("Session-Id", f"{identity.origin_host};1;{self._session}")
        message.add(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
        )
        message.add("Auth-Session-State", 1)
        message.add("Origin-Host", identity.origin_host).add("Origin-Realm", identity.origin_realm)
        message.add("Destination-Realm", destination_realm)
        if terminal_information:
            children = []
            if imei is not None:
                children.append(Avp.new("IMEI", imei))
            if meid is not None:
                children.append(Avp.new("3GPP2-MEID", meid))
            if sv is not None:
                children.append(Avp.new("Software-Version", sv))
            message.add("Terminal-Information", children)
        if imsi is not None:
            message.add("User-Name", imsi)
        for host, state in proxy_info:
            message.add("Proxy-Info", [Avp.new("Proxy-Host", host), Avp.new("Proxy-State", state)])
        return message

    async def check(self, imei: str | None = None, **kwargs: Any) -> Message:
        return await self.client.request(self.micr(imei, **kwargs), timeout=5.0)

    async def send(self, message: Message) -> Message:
        return await self.client.request(message, timeout=5.0)

    async def close(self) -> None:
        await self.client.close()


async def connect_mme(gateway: Gateway, origin_host: str = "mme.test") -> Mme:
    node = Node(
        PeerSettings(identity=LocalIdentity(origin_host=origin_host, origin_realm="test")),
        [Application(S13_APPLICATION_ID, {}, vendor_id=VENDOR, name="S13")],
    )
    _, host, port = gateway.diameter_sockets[0]
    client = await Client.connect(node, host, port)
    return Mme(client, node)


async def scrape(gateway: Gateway, path: str = "/metrics") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{gateway.metrics_port}{path}") as response:
            return response.status, await response.text()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if "{" in head:
            metric, _, rest = head.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(",")))
        else:
            metric, got = head, ""
        if metric == name and got == wanted:
            return float(value)
    return 0.0


def reencode(message: Message) -> Message:
    return decode_message(message.encode())
