"""The gateway keeps full garbage collections off the hot path (gateway.service)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.service import Gateway, young_collections_only
from tests.e2e.conftest import connect_mme, gateway_env


def test_young_collections_only_and_restored() -> None:
    before = gc.get_threshold()
    old = young_collections_only()
    try:
        assert old == before
        now = gc.get_threshold()
        assert now[:2] == before[:2] and now[2] >= 1 << 30
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


async def test_full_collection_only_after_connections_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = Gateway(load_config(None, env=gateway_env(tmp_path)))
    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: collections.append(generation) or 0)
    task = asyncio.create_task(gateway._collect(0.01))
    try:
        await asyncio.sleep(0.05)
        assert collections == []  # nothing closed: nothing to reclaim
        gateway.metrics.on_peer_state(object(), "CLOSED", None)  # a connection is gone
        for _ in range(100):
            if collections:
                break
            await asyncio.sleep(0.01)
        assert collections == [2]
        await asyncio.sleep(0.05)
        assert collections == [2]  # once per batch of closes
    finally:
        task.cancel()


async def test_serving_gateway_restores_the_collector(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gateway = Gateway(load_config(None, env=gateway_env(tmp_path)))
    await gateway.start()
    try:
        assert gc.get_threshold()[2] >= 1 << 30
        mme = await connect_mme(gateway)
        await mme.check("35209900123456")
        await mme.close()
        for _ in range(200):  # the gateway sees the connection go after our DPR
            if gateway.metrics.connections_gone:
                break
            await asyncio.sleep(0.01)
        assert gateway.metrics.connections_gone == 1
    finally:
        await gateway.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
