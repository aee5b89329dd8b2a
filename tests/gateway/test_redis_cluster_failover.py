"""Clone detection through a real Redis Cluster (3 masters, a replica each, started by the
fixture on free loopback ports) while a replica takes over: by ``CLUSTER FAILOVER`` (the old
master answers MOVED, the tracker follows it) and after its master is killed (unreachable
until the replica is promoted: counted and logged once each way, nothing lost)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.classify import Classifier, Pending
from gateway.clone_tracker import CloneTracker
from gateway.config import SharedConfig
from gateway.policy import Policy, Reason
from gateway.redis_clone import SharedCloneTracker, shared_clone_tracker
from gateway.tac import TacDatabase
from tests.redis_server import RedisCluster, running_cluster

TACS = TacDatabase.from_records({35209900: ("Example", "One")})
THRESHOLD = 2
IMEIS = [f"3520990017{n:04d}" for n in range(60)]  # spread over every master's slots


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    # A node silent for 1 s is failed, and its replica promoted.
    yield from running_cluster(tmp_path, masters=3, replicas=1, node_timeout=1000)


Gateway = tuple[Classifier, SharedCloneTracker, CollectorRegistry]


@pytest.fixture
async def gateways(cluster: RedisCluster) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two gateways' classifiers, each with its own local state, sharing the cluster."""
    made = []
    for _ in range(2):
        registry = CollectorRegistry()
        config = SharedConfig(cluster.url, "test", budget=5.0, timeout=2.0,
                              redis_cluster=True, retry_interval=0.2)
        tracker = shared_clone_tracker(CloneTracker(THRESHOLD, 3600.0), config, registry)
        made.append((Classifier(Policy(), TACS, clone=tracker), tracker, registry))
    yield made[0], made[1]
    for _, tracker, _ in made:
        await tracker.close()


async def check_all(classifier: Classifier, imsi: str) -> list[Reason]:
    pendings = [classifier.classify_sync(imei, imsi, "01") for imei in IMEIS]
    decisions = [await classifier.resolve(p) if isinstance(p, Pending) else p
                 for p in pendings]
    return [d.decisive for d in decisions]  # type: ignore[union-attr]


def master_and_replica(cluster: RedisCluster, imei_key: str) -> tuple[int, int]:
    """The ports of the master serving ``imei_key``'s slot and of its replica."""
    slot = int(cluster.command(cluster.nodes[0].port, "cluster", "keyslot", imei_key))
    # CLUSTER NODES: id address@bus flags master-id ping pong epoch link-state slot-ranges...
    nodes = [line.split() for line in cluster.command(cluster.nodes[0].port, "cluster",
                                                      "nodes").splitlines()]
    port = {f[0]: int(f[1].split("@")[0].rsplit(":", 1)[1]) for f in nodes}
    for f in nodes:
        if "master" in f[2] and any(
                int(first) <= slot <= int(last or first)
                for first, _, last in (span.partition("-") for span in f[8:])):
            return port[f[0]], next(port[r[0]] for r in nodes if r[3] == f[0])
    raise AssertionError(f"no master serves slot {slot}")


def replication(cluster: RedisCluster, port: int, field: str) -> str:
    """A field of ``INFO replication`` on the node at ``port``."""
    return next(line.split(":", 1)[1].strip() for line in cluster.command(
        port, "info", "replication").splitlines() if line.startswith(f"{field}:"))


def role(cluster: RedisCluster, port: int) -> str:
    return replication(cluster, port, "role")


def replicated(cluster: RedisCluster, master: int, replica: int) -> bool:
    """The replica has every write the master had. Replication is asynchronous: a master
    killed before its replica caught up loses its last writes (a Redis Cluster property,
    not the tracker's), which would make this test's count wrong under load."""
    return int(replication(cluster, replica, "slave_repl_offset")) >= int(
        replication(cluster, master, "master_repl_offset"))


async def wait_until(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.1)


def requests(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("eir_shared_state_requests_total",
                                     {"store": "redis", "outcome": outcome}) or 0.0


async def test_a_replica_taking_over_by_cluster_failover(
    cluster: RedisCluster, gateways: tuple[Gateway, Gateway], caplog: pytest.LogCaptureFixture,
) -> None:
    (classifier, tracker, registry), (other, other_tracker, other_registry) = gateways
    for imsi in ("001010000000001", "001010000000002"):
        assert set(await check_all(classifier, imsi)) == {Reason.CLEAN}
    await tracker.flush()
    master, replica = master_and_replica(cluster, tracker.key(IMEIS[0]))
    # Graceful: the replica catches up with its master's offset before it takes the slots.
    cluster.command(replica, "cluster", "failover")
    await wait_until(lambda: role(cluster, replica) == "master" and role(cluster, master)
                     == "slave")
    caplog.set_level(logging.INFO, logger="eir.shared")
    # A third IMSI, on the other gateway: a suspicion only from the shared sets, the moved
    # slots' too (the first gateway's client meets MOVED there and follows it).
    assert set(await check_all(other, "001010000000003")) == {Reason.CLONE_SUSPECTED}
    assert set(await check_all(classifier, "001010000000004")) == {Reason.CLONE_SUSPECTED}
    await tracker.flush()
    assert tracker.available and other_tracker.available
    assert await tracker.redis.zcard(tracker.key(IMEIS[0])) == THRESHOLD + 1  # capped
    assert [r for r in caplog.records if "Redis unreachable" in r.getMessage()] == []
    assert requests(registry, "ok") >= 3 and requests(other_registry, "ok") >= 1


async def test_a_killed_master_is_unreachable_once_then_back_once(
    cluster: RedisCluster, gateways: tuple[Gateway, Gateway], caplog: pytest.LogCaptureFixture,
) -> None:
    (classifier, tracker, registry), (other, _, _) = gateways
    caplog.set_level(logging.INFO, logger="eir.shared")
    for imsi in ("001010000000001", "001010000000002"):
        assert set(await check_all(classifier, imsi)) == {Reason.CLEAN}
    await tracker.flush()
    master, replica = master_and_replica(cluster, tracker.key(IMEIS[0]))
    await wait_until(lambda: replicated(cluster, master, replica))
    node = next(n for n in cluster.nodes if n.port == master)
    assert node.process is not None
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(10)
    node.process = None
    # Checks go on with the local count meanwhile: a third IMSI is a local suspicion only
    # where this process saw all three (here it did), answered without waiting for Redis.
    for imsi in ("001010000000003", "001010000000004"):
        assert set(await check_all(classifier, imsi)) == {Reason.CLONE_SUSPECTED}
    await wait_until(lambda: not tracker.available)
    await wait_until(lambda: role(cluster, replica) == "master")  # promoted after 1 s
    # Back: what was queued meanwhile reaches Redis (retried every 0.2 s), nothing lost.
    await wait_until(lambda: tracker.available)
    await tracker.flush()
    assert await tracker.redis.zcard(tracker.key(IMEIS[0])) == THRESHOLD + 1  # capped at 3
    # And the other gateway counts on the promoted replica's sets.
    assert set(await check_all(other, "001010000000005")) == {Reason.CLONE_SUSPECTED}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unreachable" in m for m in messages) == 1, messages
    assert sum("Redis answers again" in m for m in messages) == 1, messages
    assert requests(registry, "error") + requests(registry, "timeout") >= 1
    up = registry.get_sample_value("eir_shared_state_up", {"store": "redis"})
    assert up == 1
