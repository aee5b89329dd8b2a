"""HTTP client against the reference server on loopback: verdicts, batching, cache, metrics."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client import CollectorRegistry

from registry_client.client import parse_max_age, parse_retry_after
from registry_client.local import LocalRegistry
from registry_client.model import (
    RegistryStatus,
    RegistryUnavailable,
    ReportType,
    VerdictOrigin,
)
from registry_client.server import RegistryServer
from registry_client.wire import luhn_check_digit
from tests.registry.conftest import (
    COUNTERFEIT,
    NON_PARTICIPATING,
    OUTSIDE,
    STOLEN,
    UNDECLARED,
    ClientFactory,
    FakeClock,
)


async def test_verdicts_online(server: RegistryServer, make_client: ClientFactory) -> None:
    client = make_client(server.url)
    stolen, counterfeit, outside, unknown, undeclared = await asyncio.gather(
        *(client.check(i) for i in (STOLEN, COUNTERFEIT, OUTSIDE, NON_PARTICIPATING, UNDECLARED))
    )
    assert stolen.status is RegistryStatus.MANUFACTURED and stolen.origin is VerdictOrigin.ONLINE
    assert stolen.active_reports[0].type is ReportType.STOLEN
    assert counterfeit.active_reports[0].type is ReportType.COUNTERFEIT
    assert outside.status is RegistryStatus.NOT_MANUFACTURED and not outside.reports
    assert unknown.status is RegistryStatus.UNKNOWN
    assert unknown.manufacturer == "Quiet Modules Inc"
    assert undeclared.status is RegistryStatus.UNKNOWN and undeclared.manufacturer is None
    assert stolen.fetched_at > 0


async def test_imei_forms_share_one_cache_entry(
    server: RegistryServer, make_client: ClientFactory
) -> None:
    client = make_client(server.url)
    fifteen = STOLEN + str(luhn_check_digit(STOLEN))
    first = await client.check(fifteen)
    assert first.imei == STOLEN and first.origin is VerdictOrigin.ONLINE
    for form in (STOLEN, fifteen, STOLEN + "42"):
        cached = client.cached(form)
        assert cached is not None and cached.origin is VerdictOrigin.CACHE
        assert (await client.check(form)).origin is VerdictOrigin.CACHE
    assert sum(server.request_counts.values()) == 1
    with pytest.raises(RegistryUnavailable):
        await client.check(STOLEN + str((luhn_check_digit(STOLEN) + 1) % 10))
    assert client.cached("not-an-imei") is None
    assert sum(server.request_counts.values()) == 1  # malformed IMEIs never leave the process


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_auth_failure_is_unavailable(
    server: RegistryServer, make_client: ClientFactory, token: str | None
) -> None:
    client = make_client(server.url, token=token)
    with pytest.raises(RegistryUnavailable, match="401"):
        await client.check(STOLEN)
    assert sum(server.request_counts.values()) == 1  # a 401 is not retried


@pytest.mark.parametrize("count", [1, 10, 999, 1000, 1001, 2500])
async def test_batching(server: RegistryServer, make_client: ClientFactory, count: int) -> None:
    # request_timeout as long as the budget: on a starved machine a 1,000-IMEI batch served by
    # the in-process registry took over the default 2 s, and its retry made a second request.
    client = make_client(server.url, batch_window=0.005, budget=5.0, request_timeout=5.0)
    imeis = [f"35209900{n:06d}" for n in range(count)]
    verdicts = await asyncio.gather(*(client.check(i) for i in imeis))
    assert [v.imei for v in verdicts] == imeis
    assert all(v.status is RegistryStatus.MANUFACTURED for v in verdicts)
    requests = server.request_counts["/v1/imeis:check"] + server.request_counts["/v1/imeis/{imei}"]
    assert requests <= math.ceil(count / 1000)


async def test_batch_max_splits(server: RegistryServer, make_client: ClientFactory) -> None:
    client = make_client(server.url, batch_max=10, batch_window=1.0)
    # batch_max reached -> flushed at once, not after the (long) window
    await asyncio.wait_for(
        asyncio.gather(*(client.check(f"35209900{n:06d}") for n in range(30))), 0.5
    )
    assert server.request_counts["/v1/imeis:check"] == 3


async def test_single_flight(server: RegistryServer, make_client: ClientFactory) -> None:
    client = make_client(server.url)
    forms = [STOLEN, STOLEN + str(luhn_check_digit(STOLEN)), STOLEN + "01"] * 40
    verdicts = await asyncio.gather(*(client.check(f) for f in forms))
    assert {v.imei for v in verdicts} == {STOLEN}
    assert sum(server.request_counts.values()) == 1


async def test_cache_honours_max_age(server: RegistryServer, make_client: ClientFactory) -> None:
    clock = FakeClock()
    client = make_client(server.url, clock=clock, cache_ttl=3600.0)
    await client.check(OUTSIDE)  # server: max-age=60
    clock.advance(59)
    assert client.cached(OUTSIDE) is not None
    clock.advance(2)
    assert client.cached(OUTSIDE) is None
    assert (await client.check(OUTSIDE)).origin is VerdictOrigin.ONLINE
    assert server.request_counts["/v1/imeis/{imei}"] == 2


async def test_negative_caching(server: RegistryServer, make_client: ClientFactory) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    client = make_client(server.url, clock=clock, negative_ttl=2.0, metrics_registry=registry)
    await asyncio.gather(client.check(NON_PARTICIPATING), client.check(STOLEN))
    clock.advance(1.5)
    negative = client.cached(NON_PARTICIPATING)
    assert negative is not None and negative.status is RegistryStatus.UNKNOWN
    clock.advance(1)  # unknown capped at negative_ttl=2 although the batch said max-age=5
    assert client.cached(NON_PARTICIPATING) is None
    assert client.cached(STOLEN) is not None
    sample = registry.get_sample_value
    assert sample("registry_cache_events_total", {"event": "negative_hit"}) == 1
    assert sample("registry_cache_events_total", {"event": "expired"}) == 1
    assert sample("registry_cache_events_total", {"event": "hit"}) == 1


async def test_cache_is_bounded(server: RegistryServer, make_client: ClientFactory) -> None:
    client = make_client(server.url, cache_size=5)
    imeis = [f"35209900{n:06d}" for n in range(8)]
    await asyncio.gather(*(client.check(i) for i in imeis))
    assert [client.cached(i) is not None for i in imeis] == [False] * 3 + [True] * 5


async def test_no_store_is_not_cached(local: LocalRegistry, make_client: ClientFactory) -> None:
    srv = RegistryServer(local, max_age=0, negative_max_age=0)
    await srv.start()
    try:
        client = make_client(srv.url)
        await client.check(STOLEN)
        assert client.cached(STOLEN) is None
    finally:
        await srv.stop()


async def test_metrics(server: RegistryServer, make_client: ClientFactory) -> None:
    registry = CollectorRegistry()
    client = make_client(server.url, metrics_registry=registry)
    make_client(server.url, metrics_registry=registry)  # a second client shares the collectors
    await client.check(STOLEN)
    client.cached(STOLEN)
    sample = registry.get_sample_value
    assert sample("registry_requests_total", {"outcome": "ok"}) == 1
    assert sample("registry_request_duration_seconds_count", {}) == 1
    assert sample("registry_cache_events_total", {"event": "hit"}) == 1
    assert sample("registry_cache_events_total", {"event": "miss"}) == 1
    assert sample("registry_circuit_state", {}) == 0


async def test_closed_client_refuses(server: RegistryServer, make_client: ClientFactory) -> None:
    client = make_client(server.url)
    await client.close()
    with pytest.raises(RegistryUnavailable):
        await client.check(STOLEN)


def test_header_parsers() -> None:
    assert parse_max_age("public, max-age=30") == 30
    assert parse_max_age("no-store") == 0
    assert parse_max_age(None) is None and parse_max_age("private") is None
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Fri, 27 Nov 2026 22:00:10 GMT", now=1795816800.0) == 10
    assert parse_retry_after("soon") is None
