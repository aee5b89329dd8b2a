"""The gateway schedules Python's garbage collector (gateway.collector, gateway.service)."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import pytest

from gateway.collector import CollectorSchedule
from gateway.config import load_config
from gateway.service import GIL_SWITCH_INTERVAL, Gateway
from tests.e2e.conftest import connect_mme, gateway_env


async def test_young_collections_on_a_timer_full_only_after_connections_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = 0
    calls: list[int] = []
    real_collect = gc.collect
    schedule = CollectorSchedule(lambda: closed, young_interval=0.005, full_interval=0.02)
    schedule.start()  # the real collect freezes start-up's heap
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation) or 0)
    try:
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        for _ in range(1000):
            if len(calls) >= 10:
                break
            await asyncio.sleep(0.005)
        assert set(calls) == {1}  # nothing closed: young generations only
        closed = 1  # a connection is gone
        for _ in range(200):
            if 2 in calls:
                break
            await asyncio.sleep(0.005)
        assert calls.count(2) == 1 and schedule.full_collections == 1
        await asyncio.sleep(0.05)
        assert calls.count(2) == 1  # once per change, not at every interval
    finally:
        monkeypatch.setattr(gc, "collect", real_collect)
        await schedule.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0


async def test_serving_gateway_schedules_and_restores_the_collector(tmp_path: Path) -> None:
    switch = sys.getswitchinterval()
    gateway = Gateway(load_config(None, env=gateway_env(tmp_path)))
    await gateway.start()
    try:
        assert not gc.isenabled() and sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL)
        mme = await connect_mme(gateway)
        await mme.check("35209900123456")
        await mme.close()
        for _ in range(200):  # the gateway sees the connection go after our DPR
            if gateway.metrics.connections_gone:
                break
            await asyncio.sleep(0.01)
        assert gateway.metrics.connections_gone == 1
        young = gateway.collector.young_collections
        for _ in range(500):  # one every 50 ms
            if gateway.collector.young_collections > young:
                break
            await asyncio.sleep(0.01)
        assert gateway.collector.young_collections > young
    finally:
        await gateway.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0 and sys.getswitchinterval() == switch
