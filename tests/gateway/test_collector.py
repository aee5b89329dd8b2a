"""The gateway schedules Python's garbage collector (gateway.collector, gateway.service)."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import pytest

from gateway import aio
from gateway.collector import CollectorSchedule
from gateway.config import load_config
from gateway.service import GIL_SWITCH_INTERVAL, Gateway
from tests.e2e.conftest import connect_mme, gateway_env


async def test_young_collections_on_a_timer_full_only_after_garbage_in_cycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = 0
    calls: list[int] = []
    real_collect = gc.collect
    schedule = CollectorSchedule(
        young_interval=0.005, full_interval=0.02, full_after=1_000, garbage=lambda: found
    )
    schedule.start()  # the real collect freezes start-up's heap
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation) or 0)
    try:
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        for _ in range(1000):
            if len(calls) >= 10:
                break
            await asyncio.sleep(0.005)
        found = 999  # young collections found some cycles: not enough
        await asyncio.sleep(0.05)
        assert set(calls) == {1}  # young generations only
        found = 1_000
        for _ in range(200):
            if 2 in calls:
                break
            await asyncio.sleep(0.005)
        assert calls.count(2) == 1 and schedule.full_collections == 1
        await asyncio.sleep(0.05)
        assert calls.count(2) == 1  # counted again from the full collection on
    finally:
        monkeypatch.setattr(gc, "collect", real_collect)
        await schedule.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0


async def _simulated_mme(port: int, count: int) -> None:
    """An MME in a process of its own: only the gateway's objects are in this one."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "simulate", "--port", str(port),
        "--count", str(count), "--connections", "1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(process.wait(), 60) == 0


def test_a_closed_diameter_connection_leaves_no_garbage_cycles(tmp_path: Path) -> None:
    # A full collection walks every cached object (hundreds of ms): the gateway runs none for
    # the connections MMEs open and close, so their life on our side must leave no cycles.
    # On the gateway's own loop: asyncio's selector transports keep a cycle of their own.
    pytest.importorskip("uvloop", reason="the gateway's loop is uvloop where it is installed")

    async def serve() -> tuple[int, list[str]]:
        gateway = Gateway(load_config(None, env=gateway_env(tmp_path)))
        await gateway.start()
        try:
            port = gateway.diameter_sockets[0][2]
            await _simulated_mme(port, 20)  # imports, caches
            await asyncio.sleep(0.1)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage
            try:
                for _ in range(2):
                    await _simulated_mme(port, 50)
                for _ in range(200):
                    if gateway.metrics.connections_gone == 3:
                        break
                    await asyncio.sleep(0.01)
                assert gateway.metrics.connections_gone == 3
                found = gc.collect()
                return found, sorted(
                    {f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage}
                )
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
        finally:
            await gateway.stop()

    found, names = aio.run(serve())
    assert found == 0, " ".join(names)


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
        for _ in range(500):  # one every 10 ms
            if gateway.collector.young_collections > young:
                break
            await asyncio.sleep(0.01)
        assert gateway.collector.young_collections > young
    finally:
        await gateway.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0 and sys.getswitchinterval() == switch
