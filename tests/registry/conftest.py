"""Fixtures: the sample declarations, a reference server on loopback, clients with own metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from registry_client.client import HttpRegistryClient
from registry_client.local import LocalRegistry
from registry_client.server import RegistryServer
from registry_client.settings import RegistrySettings
from registry_client.wire import verdict_to_json

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "config" / "registry-declarations.json"
TOKEN = "test-token"

# Sample IMEIs (config/registry-declarations.json)
STOLEN = "35209900176148"  # TAC 35209900, inside 000000-499999, reported stolen (FR)
COUNTERFEIT = "35332011150007"  # TAC 35332011, inside 100000-199999, reported counterfeit
OUTSIDE = "35209900500000"  # TAC 35209900 participates, serial outside every range
NON_PARTICIPATING = "86000001000001"
UNDECLARED = "99000001000001"

ClientFactory = Callable[..., HttpRegistryClient]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalRegistry]:
    registry = LocalRegistry.open(tmp_path / "registry.sqlite", [SAMPLE])
    yield registry
    registry.close_sync()


@pytest.fixture
async def server(local: LocalRegistry) -> AsyncIterator[RegistryServer]:
    srv = RegistryServer(local, tokens=[TOKEN], max_age=60, negative_max_age=5)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Build clients (each with its own CollectorRegistry unless given one); closed afterwards."""
    clients: list[HttpRegistryClient] = []

    def factory(
        url: str,
        *,
        metrics_registry: CollectorRegistry | None = None,
        clock: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> HttpRegistryClient:
        fields: dict[str, Any] = {"backend": "http", "url": url, "token": TOKEN, "budget": 2.0}
        fields.update(overrides)
        kwargs: dict[str, Any] = {"metrics_registry": metrics_registry or CollectorRegistry()}
        if clock is not None:
            kwargs["clock"] = clock
        client = HttpRegistryClient(RegistrySettings(**fields), **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FaultServer:
    """A misbehaving registry on loopback. ``mode`` picks the misbehaviour; "ok" answers right.

    Modes: ok, slow (``delay`` then ok), error500, throttle (429 + ``retry_after``, then ok after
    ``throttle_times`` answers), badjson, wrongtype (JSON body labelled text/html), reset (the
    connection is closed without an answer).
    """

    def __init__(self, registry: LocalRegistry):
        self.registry = registry
        self.mode = "ok"
        self.delay = 1.0
        self.retry_after = "1"
        self.throttle_times = 1
        self.hits: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/imeis/{imei}", self._handle)
        app.router.add_post("/v1/imeis:check", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _verdicts(self, imeis: list[str]) -> list[dict[str, Any]]:
        return [verdict_to_json(self.registry.verdict(i)) for i in imeis]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[self.mode] += 1
        if request.method == "POST":
            imeis = (await request.json())["imeis"]
            good: Any = {"results": self._verdicts(imeis)}
        else:
            good = self._verdicts([request.match_info["imei"]])[0]
        mode = self.mode
        if mode == "slow":
            await asyncio.sleep(self.delay)
        elif mode == "error500":
            return web.json_response({"title": "boom", "status": 500}, status=500)
        elif mode == "throttle" and self.hits["throttle"] <= self.throttle_times:
            return web.json_response(
                {"title": "Too Many Requests", "status": 429},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        elif mode == "badjson":
            return web.Response(text='{"imei": "3520', content_type="application/json")
        elif mode == "wrongtype":
            return web.Response(text=json.dumps(good), content_type="text/html")
        elif mode == "reset":
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            # SO_LINGER 0: close sends RST (connection reset by peer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            await asyncio.sleep(0.05)
            return web.Response(status=204)
        return web.json_response(good, headers={"Cache-Control": "max-age=60"})


@pytest.fixture
async def faulty(local: LocalRegistry) -> AsyncIterator[FaultServer]:
    srv = FaultServer(local)
    await srv.start()
    yield srv
    await srv.stop()


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``condition`` on the loop (background tasks run meanwhile); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def timed(awaitable: Awaitable[Any]) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await awaitable
    return result, loop.time() - start
