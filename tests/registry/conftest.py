"""Fixtures: the sample declarations, a reference server on loopback, clients with own metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from registry_client.client import HttpRegistryClient
from registry_client.faults import FaultInjector
from registry_client.local import LocalRegistry
from registry_client.server import RegistryServer
from registry_client.settings import RegistrySettings

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


@pytest.fixture
async def faulty(local: LocalRegistry) -> AsyncIterator[RegistryServer]:
    """The reference registry with a fault injector (``faulty.faults``), answering right first."""
    srv = RegistryServer(
        local, tokens=[TOKEN], max_age=60, negative_max_age=5, faults=FaultInjector()
    )
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def faults(faulty: RegistryServer) -> FaultInjector:
    assert faulty.faults is not None
    return faulty.faults


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
