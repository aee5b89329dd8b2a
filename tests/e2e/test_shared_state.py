"""Two gateways sharing a real redis-server (and one state directory): clone detection, list
changes, monitor mode and observations seen across both, over real S13 connections."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.imei import luhn_check_digit
from gateway.lists import make_entry
from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH
from tests.e2e.conftest import StartGateway, connect_mme, metric_value, scrape
from tests.n5g_eir.test_server import h2c_client
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture

IMEI = "35209900123456"
WHITELISTED, BLACKLISTED, GREYLISTED = 0, 1, 2


async def test_two_gateways_share_clone_counts_lists_and_observations(
    start_gateway: StartGateway, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "EIR_SHARED_REDIS_URL": redis_server.url,
        "EIR_CLONE_DETECTION_ENABLED": "true",
        "EIR_CLONE_DETECTION_THRESHOLD": "2",
        "EIR_STATE_DIRECTORY": str(tmp_path / "state"),
        "EIR_OBSERVATIONS_FLUSH_INTERVAL_SECONDS": "0.1",
        # Observations through the Redis stream, drained by the two gateways' consumers.
        "EIR_SHARED_OBSERVATION_STREAM": "true",
        # Not about the budget: a loaded machine must not turn a shared count into a local one.
        "EIR_SHARED_BUDGET_SECONDS": "5",
    }
    first = await start_gateway(**env)
    second = await start_gateway(**env)
    a, b = await connect_mme(first, "mme-a.test"), await connect_mme(second, "mme-b.test")
    try:
        # Two IMSIs through the first gateway, the third through the second: flagged there.
        for imsi in ("001010000000011", "001010000000022"):
            answer = await a.check(IMEI, sv="01", imsi=imsi)
            assert answer.get("Equipment-Status") == WHITELISTED
        answer = await b.check(IMEI, sv="01", imsi="001010000000033")
        assert answer.get("Equipment-Status") == GREYLISTED
        # ... and so is a further check through the first one, which saw only two itself.
        answer = await a.check(IMEI, sv="01", imsi="001010000000011")
        assert answer.get("Equipment-Status") == GREYLISTED

        # A list change written by one side reaches both (the lists version poll).
        assert first.classifier is not None and first.classifier.lists.store is not None
        first.classifier.lists.store.add(make_entry("black", "imei", "35209900100007"))
        deadline = time.monotonic() + 10
        statuses: set[int] = set()
        while time.monotonic() < deadline:
            statuses = {
                (await mme.check("35209900100007", sv="01")).get("Equipment-Status")
                for mme in (a, b)
            }
            if statuses == {BLACKLISTED}:
                break
            await asyncio.sleep(0.1)
        assert statuses == {BLACKLISTED}

        # Both write their observations to the one log (through the stream).
        assert second.observations is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = {row[0] for row in second.observations.lookup(IMEI)}
            if len(seen) == 3:
                break
            await asyncio.sleep(0.1)
        assert seen == {"001010000000011", "001010000000022", "001010000000033"}
    finally:
        await a.close()
        await b.close()


async def test_monitor_mode_records_a_clone_seen_across_gateways(
    start_gateway: StartGateway, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "EIR_SHARED_REDIS_URL": redis_server.url,
        "EIR_SHARED_BUDGET_SECONDS": "5",
        "EIR_CLONE_DETECTION_ENABLED": "true",
        "EIR_CLONE_DETECTION_THRESHOLD": "1",
    }
    enforcing = await start_gateway(**env)
    monitoring = await start_gateway(**env, EIR_POLICY_MONITOR_MODE="true")
    a, b = await connect_mme(enforcing, "mme-a.test"), await connect_mme(monitoring, "mme-b.test")
    try:
        answer = await a.check(IMEI, sv="01", imsi="001010000000011")
        assert answer.get("Equipment-Status") == WHITELISTED
        # The second IMSI arrives at the gateway in monitor mode: answered WHITELISTED, and
        # counted as what enforcement would have answered.
        answer = await b.check(IMEI, sv="01", imsi="001010000000022")
        assert answer.get("Equipment-Status") == WHITELISTED
        _, text = await scrape(monitoring)
        assert metric_value(
            text, "eir_checks_total", interface="s13", status="greylisted", reason="clone_suspected"
        ) == 1
        assert metric_value(text, "eir_monitor_mode") == 1
        # The enforcing one, which saw one IMSI itself, greylists the next check.
        answer = await a.check(IMEI, sv="01", imsi="001010000000011")
        assert answer.get("Equipment-Status") == GREYLISTED
    finally:
        await a.close()
        await b.close()


async def test_n5g_eir_is_answered_from_the_shared_count(
    start_gateway: StartGateway, redis_server: RedisServer, tmp_path: Path
) -> None:
    """An AMF's checks that wait for the shared clone count are answered from the count's
    callback (a deferred response, no future each): many streams of one HTTP/2 connection,
    each with its own IMEI seen with two other IMSIs through the other gateway over S13."""
    env = {
        "EIR_SHARED_REDIS_URL": redis_server.url,
        "EIR_SHARED_BUDGET_SECONDS": "5",
        "EIR_CLONE_DETECTION_ENABLED": "true",
        "EIR_CLONE_DETECTION_THRESHOLD": "2",
    }
    first, second = await start_gateway(**env), await start_gateway(**env)
    mme = await connect_mme(first, "mme-a.test")
    imeis = [f"3520990012{n:04d}" for n in range(40)]
    try:
        for imei in imeis:
            for imsi in ("001010000000011", "001010000000022"):
                answer = await mme.check(imei, sv="01", imsi=imsi)
                assert answer.get("Equipment-Status") == WHITELISTED
    finally:
        await mme.close()

    def query(imei: str) -> dict[str, str]:
        return {"pei": f"imei-{imei}{luhn_check_digit(imei)}", "supi": "imsi-001010000000033"}

    async with h2c_client(second) as amf:
        responses = await asyncio.gather(
            *(amf.get(EQUIPMENT_STATUS_PATH, params=query(imei)) for imei in imeis)
        )
        unseen = await amf.get(EQUIPMENT_STATUS_PATH, params=query("35209900129999"))
    assert [(r.status_code, r.json()) for r in responses] == [
        (200, {"status": "GREYLISTED"})
    ] * len(imeis)
    assert (unseen.status_code, unseen.json()) == (200, {"status": "WHITELISTED"})
    _, text = await scrape(second)
    assert metric_value(text, "eir_checks_total", interface="n5g_eir", status="greylisted",
                        reason="clone_suspected") == len(imeis)
    assert second.n5g_eir is not None and second.n5g_eir.handler.in_flight == 0
