"""Clone detection and the observation stream on a real Redis Cluster (3 masters started by the
fixture on free loopback ports): a script call's keys must share one hash slot there, so a
tick's observations, spread over every slot, go by slot and still arrive in one pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.classify import Classifier, Pending
from gateway.clone_tracker import CloneTracker
from gateway.config import SharedConfig
from gateway.observation_process import ObservationProcessLog
from gateway.observations import ObservationLog
from gateway.policy import EquipmentStatus, Policy, Reason
from gateway.redis_clone import SharedCloneTracker, SharedStateMetrics, shared_clone_tracker
from gateway.redis_observations import ObservationStream, observation_stream
from gateway.stream_entries import FIELD, unpack
from gateway.tac import TacDatabase
from tests.redis_server import RedisCluster, redis_cluster

__all__ = ["redis_cluster"]  # the fixture

TACS = TacDatabase.from_records({35209900: ("Example", "One")})
THRESHOLD = 2
Make = Callable[[], tuple[Classifier, SharedCloneTracker, CollectorRegistry]]


def _config(cluster: RedisCluster) -> SharedConfig:
    # A generous budget: the shared machine may be slow, and this is not about the budget.
    return SharedConfig(cluster.url, "test", budget=5.0, timeout=5.0, redis_cluster=True)


@pytest.fixture
async def make(redis_cluster: RedisCluster) -> AsyncIterator[Make]:
    made: list[SharedCloneTracker] = []

    def build() -> tuple[Classifier, SharedCloneTracker, CollectorRegistry]:
        registry = CollectorRegistry()
        tracker = shared_clone_tracker(
            CloneTracker(THRESHOLD, 3600.0), _config(redis_cluster), registry
        )
        made.append(tracker)
        return Classifier(Policy(), TACS, clone=tracker), tracker, registry

    yield build
    for tracker in made:
        await tracker.close()


def _ok(registry: CollectorRegistry) -> float:
    return registry.get_sample_value(
        "eir_shared_state_requests_total", {"store": "redis", "outcome": "ok"}
    ) or 0.0


async def test_a_tick_over_every_slot_is_one_pipeline_counted_across_gateways(
    make: Make, redis_cluster: RedisCluster
) -> None:
    first, tracker, registry = make()
    second, _, _ = make()
    imeis = [f"3520990017{n:04d}" for n in range(300)]
    assert len({tracker._key_slot(tracker.key(imei).encode()) for imei in imeis}) > 250
    for imsi in ("001010000000001", "001010000000002"):
        pendings = [first.classify_sync(imei, imsi, "01") for imei in imeis]
        assert all(isinstance(p, Pending) for p in pendings)
        decisions = await asyncio.gather(*(first.resolve(p) for p in pendings))  # type: ignore[arg-type]
        assert {d.status for d in decisions} == {EquipmentStatus.WHITELISTED}
    await tracker.flush()
    assert _ok(registry) == 2  # a tick's 300 observations, one pipeline each time
    assert tracker.available
    # Every IMEI's set holds both IMSIs, and the sets lie on every master.
    for imei in imeis:
        assert await tracker.redis.zcard(tracker.key(imei)) == 2
    sizes = [int(await tracker.redis.execute_command(
        "DBSIZE", target_nodes=tracker.redis.get_node("127.0.0.1", node.port))) for node in
        redis_cluster.nodes]
    assert sum(sizes) == 300 and min(sizes) > 0, sizes
    # A third IMSI on the other gateway crosses the threshold for each IMEI: the shared count.
    pendings = [second.classify_sync(imei, "001010000000003", "01") for imei in imeis]
    decisions = await asyncio.gather(*(second.resolve(p) for p in pendings))  # type: ignore[arg-type]
    assert {d.decisive for d in decisions} == {Reason.CLONE_SUSPECTED}


async def test_one_slot_many_observations_split_per_call(make: Make) -> None:
    # One IMEI seen with many IMSIs in one tick: one slot, more observations than one call
    # carries; every count is that IMEI's, in order, capped at threshold + 1.
    _, tracker, _ = make()
    imei = "35209900176148"
    now = time.time()
    batch = [(imei, tracker._digest(f"00101{n:010d}"), now + n) for n in range(250)]
    assert [len(c) for c in tracker._calls(batch)] == [100, 100, 50]
    counts = await tracker._observe(batch)
    assert counts == [1, 2] + [THRESHOLD + 1] * 248


async def test_script_reloaded_after_a_master_forgets_it(make: Make) -> None:
    classifier, tracker, registry = make()
    await classifier.classify("35209900176148", "001010000000001", "01")
    await tracker.redis.script_flush()  # on every node
    assert await tracker.redis.script_exists(tracker._sha) == [False]
    await classifier.classify("35209900176149", "001010000000001", "01")
    await tracker.flush()
    assert _ok(registry) == 2 and tracker.available
    assert await tracker.redis.zcard(tracker.key("35209900176149")) == 1


@pytest.fixture
async def stream(redis_cluster: RedisCluster, tmp_path: Path) -> AsyncIterator[ObservationStream]:
    local = ObservationLog(tmp_path / "observations.sqlite", flush_interval=0.05)
    made = observation_stream(local, _config(redis_cluster), SharedStateMetrics(CollectorRegistry()))
    made.start(asyncio.get_running_loop())
    await made.start_consuming()
    yield made
    await made.aclose()
    made.close()


async def test_the_observation_stream_on_a_cluster(stream: ObservationStream) -> None:
    now = time.time()
    imeis = [f"3520990017{n:04d}" for n in range(50)]
    for n, imei in enumerate(imeis):
        stream.record(imei, "001010000000001", now + n)
    deadline = time.monotonic() + 20
    while stream.local.stats.written < 50 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert stream.local.stats.written == 50
    assert all(stream.lookup(imei)[0][0] == "001010000000001" for imei in imeis)
    entries = await stream.redis.xrange(stream.keys[1])  # v2: in the v1 stream's slot
    assert sum(len(unpack(fields[FIELD])) for _, fields in entries) == 50
    assert await stream.redis.xlen(stream.key) == 0


async def test_the_observation_stream_drained_by_a_writer_process_on_a_cluster(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    local = ObservationProcessLog(tmp_path / "observations.sqlite", flush_interval=0.05)
    made = observation_stream(local, _config(redis_cluster), SharedStateMetrics(CollectorRegistry()))
    assert not made.consumes  # the writer process is the group's consumer
    made.start(asyncio.get_running_loop())
    await made.start_consuming()
    try:
        now = time.time()
        imeis = [f"3520990017{n:04d}" for n in range(50)]
        for n, imei in enumerate(imeis):
            made.record(imei, "001010000000001", now + n)
        deadline = time.monotonic() + 20
        while local.stats.written < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert local.stats.written == 50
        assert all(made.lookup(imei)[0][0] == "001010000000001" for imei in imeis)
    finally:
        await made.aclose()
        made.close()
