"""Two gateways sharing one PostgreSQL (and nothing else: each its own state directory), over
real S13 connections: a list change written by one, or by the CLI in a process of its own,
is applied by both; both write their observations to the one log; a gateway in monitor mode
answers WHITELISTED and counts what enforcement would have answered."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.lists import ListColour, make_entry
from tests.e2e.conftest import Mme, StartGateway, connect_mme, metric_value, scrape

pytest.importorskip("asyncpg", reason="asyncpg is not installed (the 'postgresql' extra)")

from gateway.pg.lists import PgListStore

IMEI = "35209900111111"  # clean under the embedded default
WHITELISTED, BLACKLISTED, GREYLISTED = 0, 1, 2


async def _statuses(mmes: tuple[Mme, ...], imei: str, wanted: set[int]) -> set[int]:
    """The statuses the MMEs get for ``imei``, asked again until they are ``wanted`` (10 s)."""
    deadline = time.monotonic() + 10
    statuses: set[int] = set()
    while time.monotonic() < deadline:
        statuses = {(await mme.check(imei, sv="01")).get("Equipment-Status") for mme in mmes}
        if statuses == wanted:
            break
        await asyncio.sleep(0.05)
    return statuses


async def test_two_gateways_share_lists_and_observations(
    start_gateway: StartGateway, postgres_dsn: str
) -> None:
    env = {
        "EIR_STATE_BACKEND": "postgresql",
        "EIR_STATE_DSN": postgres_dsn,
        "EIR_OBSERVATIONS_FLUSH_INTERVAL_SECONDS": "0.1",
        # Only the NOTIFY hint and the store's own 1 s poll bring changes: not the e2e 0.1 s.
        "EIR_LISTS_POLL_INTERVAL_SECONDS": "30",
    }
    first = await start_gateway(**env)
    second = await start_gateway(**env)
    a, b = await connect_mme(first, "mme-a.test"), await connect_mme(second, "mme-b.test")
    try:
        assert await _statuses((a, b), IMEI, {WHITELISTED}) == {WHITELISTED}
        # Written through the first gateway's store (what its provisioning API does).
        assert first.classifier is not None and first.classifier.lists.store is not None
        first.classifier.lists.store.put(make_entry("black", "imei", IMEI), "api:test")
        assert await _statuses((a, b), IMEI, {BLACKLISTED}) == {BLACKLISTED}
        # Written by the CLI, another process.
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "lists", "add", "white", "pair", IMEI,
            "--imsi", "001010000000099",
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode == 0, err.decode()
        for mme in (a, b):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                answer = await mme.check(IMEI, sv="01", imsi="001010000000099")
                if answer.get("Equipment-Status") == WHITELISTED:
                    break
                await asyncio.sleep(0.05)
            assert answer.get("Equipment-Status") == WHITELISTED
        # Applied as changes (the IMEI sits in the snapshot's overlay, not in the sorted array
        # a full load builds), up to the store's version.
        version = first.classifier.lists.store.version()
        for gateway in (first, second):
            assert gateway.classifier is not None
            snapshot = gateway.classifier.lists.snapshot
            assert snapshot.version == version
            assert int(IMEI) in snapshot._colours[ListColour.BLACK].added
        _, text = await scrape(second)
        assert metric_value(text, "eir_lists_version") == version

        # Both write their observations to the one log.
        await a.check(IMEI, sv="01", imsi="001010000000011")
        await b.check(IMEI, sv="01", imsi="001010000000022")
        assert second.observations is not None
        deadline = time.monotonic() + 10
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = {row[0] for row in second.observations.lookup(IMEI)}
            if len(seen) == 3:
                break
            await asyncio.sleep(0.1)
        assert seen == {"001010000000011", "001010000000022", "001010000000099"}
    finally:
        await a.close()
        await b.close()


async def test_monitor_mode_with_lists_from_postgresql(
    start_gateway: StartGateway, postgres_dsn: str
) -> None:
    env = {"EIR_STATE_BACKEND": "postgresql", "EIR_STATE_DSN": postgres_dsn}
    enforcing = await start_gateway(**env)
    monitoring = await start_gateway(**env, EIR_POLICY_MONITOR_MODE="true")
    a, b = await connect_mme(enforcing, "mme-a.test"), await connect_mme(monitoring, "mme-b.test")
    try:
        assert monitoring.classifier is not None and monitoring.classifier.lists.store is not None
        monitoring.classifier.lists.store.put(make_entry("grey", "tac", IMEI[:8]), "api:test")
        assert await _statuses((a,), IMEI, {GREYLISTED}) == {GREYLISTED}
        # Answered WHITELISTED, counted as greylisted.
        deadline = time.monotonic() + 10
        counted = 0.0
        while time.monotonic() < deadline and not counted:
            assert (await b.check(IMEI, sv="01")).get("Equipment-Status") == WHITELISTED
            _, text = await scrape(monitoring)
            counted = metric_value(text, "eir_checks_total", interface="s13",
                                   status="greylisted", reason="greylisted")
            await asyncio.sleep(0.05)
        assert counted >= 1
        assert metric_value(text, "eir_monitor_mode") == 1
    finally:
        await a.close()
        await b.close()


async def test_gateways_of_one_host_map_one_snapshot_file(
    start_gateway: StartGateway, postgres_dsn: str, tmp_path: Path
) -> None:
    # lists.shared_snapshot: two gateways with one state directory (the workers of a host)
    # map one file per colour; a bulk write (a reload change) brings both to the next
    # version's file.
    state = tmp_path / "host-state"
    env = {"EIR_STATE_BACKEND": "postgresql", "EIR_STATE_DSN": postgres_dsn,
           "EIR_STATE_DIRECTORY": str(state)}
    first = await start_gateway(**env)
    second = await start_gateway(**env)
    a, b = await connect_mme(first, "mme-a.test"), await connect_mme(second, "mme-b.test")
    try:
        assert first.classifier is not None and second.classifier is not None
        store = first.classifier.lists.store
        assert isinstance(store, PgListStore)
        listed = "35209900222222"
        store.bulk_add_imeis(ListColour.BLACK, [int(listed), *range(35209900300000,
                                                                    35209900320000)], "bulk")
        assert await _statuses((a, b), listed, {BLACKLISTED}) == {BLACKLISTED}
        version = store.version()
        for gateway in (first, second):
            assert gateway.classifier is not None
            imeis = gateway.classifier.lists.snapshot._colours[ListColour.BLACK].imeis
            assert imeis.path is not None and imeis.contains(int(listed))
            assert len(imeis) > 20_000  # with the sample lists file's
            assert imeis.path.name.endswith(f"-{version}-black.imeis")
        assert len(list(state.glob(f"lists-*-{version}-black.imeis"))) == 1
    finally:
        await a.close()
        await b.close()


pytestmark = pytest.mark.timeout(120)
