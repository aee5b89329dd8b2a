"""Fault injection on loopback: every failure is RegistryUnavailable within the budget."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client import CollectorRegistry

from registry_client.breaker import BreakerState
from registry_client.faults import Fault, FaultInjector
from registry_client.model import RegistryStatus, RegistryUnavailable, VerdictOrigin
from registry_client.server import RegistryServer
from tests.registry.conftest import (
    OUTSIDE,
    STOLEN,
    ClientFactory,
    timed,
    wait_until,
)

BUDGET = 0.3
SLACK = 0.1  # scheduling slack on a loaded CI machine


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [
        (Fault.SLOW, "timeout"),
        (Fault.HANG, "timeout"),
        (Fault.SERVER_ERROR, "server_error"),
        (Fault.THROTTLED, "throttled"),
        (Fault.RESET, "connection_error"),
        (Fault.GARBAGE, "connection_error"),
        (Fault.PARTIAL_BODY, "connection_error"),
        (Fault.BAD_JSON, "invalid_response"),
        (Fault.DEEP_JSON, "invalid_response"),
        (Fault.WRONG_TYPE, "invalid_response"),
    ],
)
@pytest.mark.parametrize("batch", [1, 3])
async def test_failure_is_unavailable_within_budget(
    faulty: RegistryServer,
    faults: FaultInjector,
    make_client: ClientFactory,
    mode: Fault,
    outcome: str,
    batch: int,
) -> None:
    faults.set_mode(mode)
    registry = CollectorRegistry()
    client = make_client(
        faulty.url,
        budget=BUDGET,
        # Past the budget only where the fault is lateness: a 0.2 s timeout on the others
        # turned a full suite's pause (a collection) into "timeout", not their outcome.
        request_timeout=0.2 if mode in (Fault.SLOW, Fault.HANG) else 5.0,
        retries=2,
        backoff_base=0.01,
        backoff_max=0.02,
        breaker_failure_threshold=100,
        metrics_registry=registry,
    )
    imeis = [f"35209900{n:06d}" for n in range(batch)]
    # (That no check waits past the budget is measured in bench/registry_faults.py.)
    results = await asyncio.gather(*(client.check(i) for i in imeis), return_exceptions=True)
    assert all(type(r) is RegistryUnavailable for r in results), results
    await wait_until(  # a round trip may end after the budget (hang: at request_timeout)
        lambda: bool(registry.get_sample_value("registry_requests_total", {"outcome": outcome})),
        timeout=5.0,
    )


async def test_retries_5xx_inside_budget(faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory) -> None:
    faults.set_mode(Fault.SERVER_ERROR)
    client = make_client(
        faulty.url, budget=1.0, retries=3, backoff_base=0.01, breaker_failure_threshold=100
    )
    with pytest.raises(RegistryUnavailable):
        await client.check(STOLEN)
    assert faults.hits[Fault.SERVER_ERROR] == 4  # first try + 3 retries


async def test_recovers_after_a_transient_reset(
    faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory
) -> None:
    faults.set_mode(Fault.RESET)
    client = make_client(faulty.url, budget=1.0, retries=5, backoff_base=0.02)
    task = asyncio.create_task(client.check(STOLEN))
    while faults.hits[Fault.RESET] == 0:
        await asyncio.sleep(0.005)
    faults.set_mode(Fault.OK)
    verdict = await task
    assert verdict.imei == STOLEN and verdict.origin is VerdictOrigin.ONLINE


async def test_retry_after_is_honoured(faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory) -> None:
    faults.set_mode(Fault.THROTTLED)
    faults.retry_after, faults.throttle_times = "1", 1
    client = make_client(faulty.url, budget=2.0, retries=2, backoff_base=0.001)
    verdict, elapsed = await timed(client.check(OUTSIDE))
    assert verdict.status is RegistryStatus.NOT_MANUFACTURED
    assert faults.hits[Fault.THROTTLED] == 2
    # Waited Retry-After (1 s), not the 1 ms backoff; a verdict at all means within the 2 s
    # budget (no upper bound asserted: a loaded machine stretches it, timings are bench/'s).
    assert elapsed >= 1.0


async def test_retry_after_past_the_budget_gives_up_at_once(
    faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory
) -> None:
    faults.set_mode(Fault.THROTTLED)
    faults.retry_after = "30"
    client = make_client(faulty.url, budget=BUDGET, retries=5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(RegistryUnavailable, match="429"):
        await client.check(OUTSIDE)
    assert loop.time() - start < BUDGET / 2  # no pointless wait for a retry it cannot make
    assert faults.hits[Fault.THROTTLED] == 1


async def test_connection_refused(make_client: ClientFactory) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", budget=BUDGET, backoff_base=0.01)
    _, elapsed = await timed(asyncio.gather(client.check(STOLEN), return_exceptions=True))
    assert elapsed < BUDGET + SLACK


async def test_breaker_opens_and_recovers(faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory) -> None:
    faults.set_mode(Fault.SERVER_ERROR)
    registry = CollectorRegistry()
    client = make_client(
        faulty.url,
        budget=BUDGET,
        retries=0,
        breaker_failure_threshold=3,
        breaker_reset_timeout=0.2,
        metrics_registry=registry,
    )
    for n in range(3):
        with pytest.raises(RegistryUnavailable):
            await client.check(f"35209900{n:06d}")
    assert client.breaker.state is BreakerState.OPEN
    assert registry.get_sample_value("registry_circuit_state") == 2
    hits = faults.hits[Fault.SERVER_ERROR]

    # Open: answered at once, no request, no time spent.
    results, elapsed = await timed(
        asyncio.gather(
            *(client.check(f"35209900{n:06d}") for n in range(100)), return_exceptions=True
        )
    )
    assert all(isinstance(r, RegistryUnavailable) for r in results)
    assert elapsed < 0.05 and faults.hits[Fault.SERVER_ERROR] == hits
    assert registry.get_sample_value("registry_requests_total", {"outcome": "circuit_open"}) == 100

    # Half-open probe fails: open again.
    await asyncio.sleep(0.2)
    with pytest.raises(RegistryUnavailable):
        await client.check(STOLEN)
    assert client.breaker.state is BreakerState.OPEN and faults.hits[Fault.SERVER_ERROR] == hits + 1

    # Half-open probe succeeds: closed; a concurrent check during the probe is refused.
    faults.set_mode(Fault.SLOW)
    faults.delay = 0.05
    await asyncio.sleep(0.2)
    probe = asyncio.create_task(client.check(OUTSIDE))
    await asyncio.sleep(0.02)
    assert client.breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(RegistryUnavailable, match="open"):
        await client.check("35209900000001")
    assert (await probe).status is RegistryStatus.NOT_MANUFACTURED
    assert client.breaker.state is BreakerState.CLOSED
    assert registry.get_sample_value("registry_circuit_state") == 0


async def test_slow_server_does_not_stall_other_checks(
    faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory
) -> None:
    """Cache hits answer while a batch hangs on a slow registry."""
    client = make_client(faulty.url, budget=BUDGET)
    await client.check(STOLEN)
    faults.set_mode(Fault.SLOW)
    faults.delay = 5.0
    pending = asyncio.create_task(client.check(OUTSIDE))
    await asyncio.sleep(0.01)
    hit = client.cached(STOLEN)
    assert hit is not None and hit.origin is VerdictOrigin.CACHE
    with pytest.raises(RegistryUnavailable):
        await pending


async def test_late_answer_fills_the_cache(faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory) -> None:
    """Past the budget the check gives up, but the round trip goes on and its verdict is kept."""
    faults.set_mode(Fault.SLOW)
    faults.delay = 0.4
    client = make_client(faulty.url, budget=0.1, request_timeout=2.0)
    (result,), elapsed = await timed(asyncio.gather(client.check(OUTSIDE), return_exceptions=True))
    assert isinstance(result, RegistryUnavailable) and elapsed < 0.1 + SLACK
    assert client.cached(OUTSIDE) is None
    await wait_until(lambda: client.cached(OUTSIDE) is not None)
    assert faults.hits[Fault.SLOW] == 1


async def test_outage_logged_per_transition_not_per_check(
    faulty: RegistryServer, faults: FaultInjector, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    faults.set_mode(Fault.SERVER_ERROR)
    client = make_client(
        faulty.url, budget=BUDGET, retries=0, breaker_failure_threshold=3, breaker_reset_timeout=0.2
    )
    with caplog.at_level("WARNING", logger="registry_client.client"):
        for n in range(3):  # three failures open the circuit
            with pytest.raises(RegistryUnavailable):
                await client.check(f"35209900{n:06d}")
        for n in range(50):  # refused by the open circuit: nothing more to say
            with pytest.raises(RegistryUnavailable):
                await client.check(f"35209901{n:06d}")
        faults.set_mode(Fault.OK)
        await asyncio.sleep(0.2)
        await client.check(STOLEN)  # the probe succeeds
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "registry request failed: registry answered 503"),
        (
            "WARNING",
            "registry circuit open (registry answered 503): checks answer registry_unavailable, "
            "next probe in 0.2 s",
        ),
        ("WARNING", "registry answering again: circuit closed"),
    ]


async def test_refusals_logged_as_errors_at_most_once_a_minute(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry_client import client as client_module

    now = [1000.0]
    monkeypatch.setattr(client_module.time, "monotonic", lambda: now[0])
    client = make_client("http://127.0.0.1:9")
    refused = client_module._Failure("registry answered 401", retryable=False)
    with caplog.at_level("WARNING", logger="registry_client.client"):
        for _ in range(5):
            client._log_failure(refused)  # a wrong token: every check would say it
        now[0] += 61.0
        client._log_failure(refused)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "registry request failed: registry answered 401"),
        ("ERROR", "registry request failed: registry answered 401 (4 more since the last report)"),
    ]
