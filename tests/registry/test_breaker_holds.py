"""The breaker holds, against the reference registry with injected faults on loopback.

Each test would fail with the breaker of before: late answers closing it, a hanging registry
seen only at request_timeout, concurrency above max_connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from registry_client.breaker import BreakerState
from registry_client.client import HttpRegistryClient
from registry_client.faults import Fault, FaultInjector
from registry_client.model import RegistryUnavailable, RegistryVerdict
from registry_client.server import RegistryServer
from tests.registry.conftest import OUTSIDE, STOLEN, ClientFactory, wait_until

Against = Callable[..., tuple[HttpRegistryClient, CollectorRegistry]]


@pytest.fixture
def against(faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory) -> Against:
    """``client, metrics = against(Fault.X, delay=..., **settings)``: the faulty registry now
    misbehaving so (answers ``delay`` s late when slow), and a client of it with its own metrics."""

    def build(
        fault: Fault, delay: float | None = None, **settings: Any
    ) -> tuple[HttpRegistryClient, CollectorRegistry]:
        faults.set_mode(fault)
        if delay is not None:
            faults.delay = delay
        metrics = CollectorRegistry()
        return make_client(faulty.url, metrics_registry=metrics, **settings), metrics

    return build


def requests(metrics: CollectorRegistry, *outcomes: str) -> float:
    """registry_requests_total summed over ``outcomes``."""
    return sum(
        metrics.get_sample_value("registry_requests_total", {"outcome": o}) or 0 for o in outcomes
    )


def imeis(count: int, tac: str = "35209900") -> list[str]:
    return [f"{tac}{n:06d}" for n in range(count)]


async def test_late_answers_do_not_close_the_circuit(
    faults: FaultInjector, against: Against
) -> None:
    """Slow answers open it (past the budget); their late successes leave it open."""
    client, _ = against(
        Fault.SLOW, 0.3, budget=0.05, batch_max=1, breaker_failure_threshold=3,
        breaker_reset_timeout=30.0,
    )
    batch = imeis(10)
    results = await asyncio.gather(*(client.check(i) for i in batch), return_exceptions=True)
    assert all(isinstance(r, RegistryUnavailable) for r in results)
    await wait_until(lambda: client.breaker.state is BreakerState.OPEN)
    # Three went out (enough to open it; the others were held back, then refused) ...
    assert faults.hits[Fault.SLOW] == 3
    # ... their answers arrive (late) and fill the cache ...
    await wait_until(lambda: sum(client.cached(i) is not None for i in batch) == 3, timeout=5.0)
    # ... but were asked before it opened: it stays open, opened once.
    assert client.breaker.state is BreakerState.OPEN and client.breaker.transitions == 1


async def test_no_retries_while_open(faults: FaultInjector, against: Against) -> None:
    client, metrics = against(
        Fault.SERVER_ERROR, budget=1.0, retries=3, backoff_base=0.01, backoff_max=0.02,
        batch_max=1, breaker_failure_threshold=5, breaker_reset_timeout=30.0,
    )
    # 20 checks at once: 5 requests go out (as many as open the circuit), they all fail and
    # open it, so none of their retries may go out, nor the 15 requests held back.
    results = await asyncio.gather(*(client.check(i) for i in imeis(20)), return_exceptions=True)
    assert all(isinstance(r, RegistryUnavailable) for r in results)
    assert client.breaker.state is BreakerState.OPEN
    assert faults.hits[Fault.SERVER_ERROR] == 5
    assert requests(metrics, "server_error") == 5
    assert requests(metrics, "circuit_open") == 20


async def test_a_reset_get_is_not_resent_behind_the_breaker(
    faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory
) -> None:
    """aiohttp would resend a GET whose connection broke; retries are the breaker's business."""
    client = make_client(faulty.url, budget=1.0, retries=0)
    await client.check(STOLEN)  # a kept-alive connection to break
    faults.set_mode(Fault.RESET)
    await _quietly(client.check(OUTSIDE))
    assert faults.hits[Fault.RESET] == 1


async def test_max_connections_is_a_hard_limit(faults: FaultInjector, against: Against) -> None:
    client, metrics = against(
        Fault.SLOW, 0.2, budget=0.5, batch_max=1, max_connections=4,
        breaker_failure_threshold=1000,
    )
    results = await asyncio.gather(*(client.check(i) for i in imeis(60)), return_exceptions=True)
    assert all(isinstance(r, RegistryVerdict | RegistryUnavailable) for r in results)
    await wait_until(lambda: faults.concurrent == 0 and not client._tasks, timeout=5.0)
    assert faults.max_concurrent == 4  # reached, never passed
    # Requests for checks that gave up while all four were out were never sent.
    dropped = requests(metrics, "pool_exhausted")
    assert dropped and dropped + faults.hits[Fault.SLOW] == 60
    verdicts = sum(isinstance(r, RegistryVerdict) for r in results)
    assert 0 < verdicts <= faults.hits[Fault.SLOW]


@pytest.mark.parametrize("fault", [Fault.HANG, Fault.SLOW])
async def test_a_registry_that_stops_answering_gets_threshold_requests_then_none(
    faults: FaultInjector, against: Against, fault: Fault
) -> None:
    """Hanging, or answering past the budget: seen only when a request outlives its budget."""
    # One IMEI a request: on a loaded machine two checks created in one loop tick went in one
    # batch, and the requests no longer counted the checks sent (56 + 3 != 60, a flake).
    client, metrics = against(
        fault, 0.5, budget=0.05, request_timeout=10.0, breaker_failure_threshold=3,
        breaker_reset_timeout=30.0, batch_max=1,
    )
    # A steady 300 checks/s for 0.2 s: 15 checks within the first budget alone.
    loop = asyncio.get_running_loop()
    checks = [loop.create_task(_quietly(client.check(imei))) for imei in imeis(1)]
    for imei in imeis(60)[1:]:
        await asyncio.sleep(1 / 300)
        checks.append(loop.create_task(_quietly(client.check(imei))))
    await asyncio.gather(*checks)
    assert client.breaker.state is BreakerState.OPEN
    # Open on requests unanswered past the budget, long before the first one timed out ...
    assert requests(metrics, "timeout") == 0
    # ... having sent no more than it takes to open: the other checks were held back (and
    # dropped unsent when their budget ran out), then refused.
    assert faults.hits[fault] == 3
    assert requests(metrics, "circuit_open", "pool_exhausted") + faults.hits[fault] == 60


async def test_a_hung_probe_reopens_and_the_next_one_closes(
    faults: FaultInjector, against: Against
) -> None:
    client, _ = against(
        Fault.HANG, budget=0.05, request_timeout=10.0, breaker_failure_threshold=1,
        breaker_reset_timeout=0.2,
    )
    await _quietly(client.check("35209900000001"))
    await wait_until(lambda: client.breaker.state is BreakerState.OPEN)
    await asyncio.sleep(0.2)
    probe = asyncio.create_task(_quietly(client.check("35209900000002")))
    await wait_until(lambda: client.breaker.state is BreakerState.HALF_OPEN)
    await probe  # refused at its budget, the probe still hanging
    await wait_until(lambda: client.breaker.state is BreakerState.OPEN)
    assert client.breaker.transitions == 3  # open, half-open, open
    faults.set_mode(Fault.OK)
    await asyncio.sleep(0.2)
    verdict = await client.check("35209900000003")
    assert verdict.imei == "35209900000003" and client.breaker.state is BreakerState.CLOSED


async def test_a_pause_of_our_own_loop_is_not_a_registry_failure(
    faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory
) -> None:
    client = make_client(faulty.url, budget=0.05, breaker_failure_threshold=1)
    await client.check(STOLEN)  # connection open
    faults.set_mode(Fault.SLOW)
    faults.delay = 0.02  # well inside the budget
    check = asyncio.create_task(_quietly(client.check(OUTSIDE)))
    await wait_until(lambda: faults.concurrent == 1)  # the request is at the registry
    time.sleep(0.2)  # this loop stalls (GC, CPU starvation): the registry is fine
    await check  # past its budget: unavailable, but the registry's answer ...
    await wait_until(lambda: client.cached(OUTSIDE) is not None)  # ... was there all along
    assert client.breaker.state is BreakerState.CLOSED and client.breaker.transitions == 0


async def _quietly(check: Awaitable[RegistryVerdict]) -> None:
    try:
        await check
    except RegistryUnavailable:
        pass
