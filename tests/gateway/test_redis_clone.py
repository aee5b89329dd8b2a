"""Clone detection shared through a real redis-server (started on a free loopback port)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.classify import Classifier, Decision, Pending
from gateway.clone_tracker import CloneTracker
from gateway.config import SharedConfig
from gateway.policy import EquipmentStatus, Policy, Reason
from gateway.redis_clone import SharedCloneTracker, shared_clone_tracker
from gateway.resp import Reply, command
from gateway.tac import TacDatabase
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, used by the tests below

IMEI = "35209900176148"
TACS = TacDatabase.from_records({35209900: ("Example", "One")})
THRESHOLD = 2
Make = Callable[..., tuple[Classifier, SharedCloneTracker, CollectorRegistry]]


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Make]:
    made: list[SharedCloneTracker] = []

    def build(url: str | None = None, **options: float) -> tuple[
        Classifier, SharedCloneTracker, CollectorRegistry
    ]:
        registry = CollectorRegistry()
        config = SharedConfig(url or redis_server.url, "test", **options)  # type: ignore[arg-type]
        tracker = shared_clone_tracker(CloneTracker(THRESHOLD, 3600.0), config, registry)
        made.append(tracker)
        return Classifier(Policy(), TACS, clone=tracker), tracker, registry

    yield build
    for tracker in made:
        await tracker.close()


@pytest.fixture
async def probe(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """redis-py, an independent client, to look at what the tracker stored."""
    client = redis.asyncio.from_url(redis_server.url)
    yield client
    await client.aclose()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def check(classifier: Classifier, imsi: str) -> Decision:
    return await classifier.classify(IMEI, imsi, "01")


async def test_two_gateways_count_one_imei_together(make: Make) -> None:
    # A generous budget: the shared machine may be slow, and this is not about the budget.
    first, _, _ = make(budget=5.0)
    second, _, registry = make(budget=5.0)
    # Two IMSIs on the first gateway, a third on the second: more than the threshold overall,
    # though each gateway saw at most two. The check that crosses it is the one flagged.
    for imsi in ("001010000000001", "001010000000002"):
        assert (await check(first, imsi)).status is EquipmentStatus.WHITELISTED
    pending = second.classify_sync(IMEI, "001010000000003", "01")
    assert isinstance(pending, Pending) and pending.clone_count is not None
    decision = await second.resolve(pending)
    assert decision.status is EquipmentStatus.GREYLISTED
    assert decision.decisive is Reason.CLONE_SUSPECTED
    assert "3 IMSIs within 3600 s" in decision.findings[-1].detail
    assert value(registry, "eir_shared_state_up", store="redis") == 1
    assert value(registry, "eir_shared_state_requests_total", store="redis", outcome="ok") >= 1


async def test_one_round_trip_per_tick_hash_tagged_keys_window_ttl(
    make: Make, probe: redis.asyncio.Redis
) -> None:
    classifier, tracker, registry = make()
    imeis = [f"3520990017{n:04d}" for n in range(300)]
    pendings = [classifier.classify_sync(imei, "001010000000001", "01") for imei in imeis]
    assert all(isinstance(p, Pending) for p in pendings)
    decisions = await asyncio.gather(*(classifier.resolve(p) for p in pendings))  # type: ignore[arg-type]
    assert {d.status for d in decisions} == {EquipmentStatus.WHITELISTED}
    await tracker.flush()
    # 300 checks of one tick: one pipelined round trip.
    assert value(registry, "eir_shared_state_requests_total", store="redis", outcome="ok") == 1
    key = tracker.key(imeis[0])
    assert key == f"test:clone:{{{imeis[0]}}}"
    assert 3_500_000 < await probe.pttl(key) <= 3_600_000
    members = await probe.zrange(key, 0, -1, withscores=True)
    assert len(members) == 1 and b"001010000000001" not in members[0][0]  # a digest, not the IMSI
    # Scored by when it was seen, in seconds (sent in milliseconds): what gateways of the
    # version before, which sent seconds, score by too.
    first = pendings[0]
    assert isinstance(first, Pending) and abs(members[0][1] - first.now) < 0.002


async def test_the_set_keeps_threshold_plus_one_imsis(
    make: Make, probe: redis.asyncio.Redis
) -> None:
    classifier, tracker, _ = make()
    for n in range(6):
        await check(classifier, f"00101000000001{n}")
    await tracker.flush()  # the checks past the threshold did not wait for Redis
    assert await probe.zcard(tracker.key(IMEI)) == THRESHOLD + 1


async def test_a_flushed_script_is_loaded_again(make: Make, probe: redis.asyncio.Redis) -> None:
    # A restarted Redis (or SCRIPT FLUSH) answers NOSCRIPT: the script is loaded again and the
    # same round trip retried, with no error and no check answered from the local count.
    classifier, tracker, registry = make(budget=5.0)
    await check(classifier, "001010000000001")
    await probe.script_flush()
    second = classifier.classify_sync(IMEI, "001010000000002", "01")
    assert isinstance(second, Pending)
    await classifier.resolve(second)
    await tracker.flush()
    assert await probe.zcard(tracker.key(IMEI)) == 2
    assert value(registry, "eir_shared_state_requests_total", store="redis", outcome="error") == 0


async def test_redis_down_checks_go_on_locally_then_replay(
    make: Make, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "eir.shared")
    classifier, tracker, registry = make(retry_interval=0.2, timeout=0.5)
    await check(classifier, "001010000000001")
    redis_server.stop()
    # The first check after the loss still waits (at most the budget); then none does.
    await check(classifier, "001010000000002")
    for _ in range(50):
        if not tracker.available:
            break
        await asyncio.sleep(0.05)
    assert not tracker.available
    assert value(registry, "eir_shared_state_up", store="redis") == 0
    result = classifier.classify_sync(IMEI, "001010000000003", "01")
    assert isinstance(result, Decision)  # answered at once, from this process's own count
    assert result.decisive is Reason.CLONE_SUSPECTED  # 3 IMSIs seen here: over the threshold
    errors = value(registry, "eir_shared_state_requests_total", store="redis", outcome="error")
    assert errors >= 1
    redis_server.start()  # same port: an empty Redis
    for _ in range(100):
        if tracker.available:
            break
        await asyncio.sleep(0.05)
    assert tracker.available and value(registry, "eir_shared_state_up", store="redis") == 1
    # What was seen while it was away was replayed (the first IMSI went with the old Redis).
    await tracker.flush()
    probe = redis.asyncio.from_url(redis_server.url)
    assert await probe.zcard(tracker.key(IMEI)) == 2
    await probe.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unreachable" in m for m in messages) == 1  # once per transition
    assert sum("Redis answers again" in m for m in messages) == 1


async def test_an_unreachable_redis_at_start_costs_one_budget_then_nothing(
    make: Make, redis_server: RedisServer
) -> None:
    port = redis_server.port
    redis_server.stop()
    classifier, tracker, _ = make(f"redis://127.0.0.1:{port}/0", budget=0.05, timeout=0.5)
    decision = await check(classifier, "001010000000001")
    assert decision.status is EquipmentStatus.WHITELISTED
    for _ in range(50):
        if not tracker.available:
            break
        await asyncio.sleep(0.05)
    assert isinstance(classifier.classify_sync(IMEI, "001010000000002", "01"), Decision)


async def test_n5g_eir_waits_for_the_shared_count_without_a_coroutine(make: Make) -> None:
    # TS 29.511 checks share the tracker with S13: the checks of one tick that wait for the
    # shared count go in one round trip and are answered from its callback, each a
    # DeferredAnswer (no coroutine, task or future) the HTTP/2 connection binds.
    from diameter.deferred import DeferredAnswer
    from gateway.imei import luhn_check_digit
    from gateway.n5g_eir.equipment_status import EquipmentIdentityCheck
    from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH

    def path(imei: str, imsi: str) -> bytes:
        pei = f"imei-{imei}{luhn_check_digit(imei)}"
        return f"{EQUIPMENT_STATUS_PATH}?pei={pei}&supi=imsi-{imsi}".encode()

    first, _, _ = make(budget=5.0)
    classifier, _, registry = make(budget=5.0)
    handler = EquipmentIdentityCheck(classifier)
    imeis = [f"3520990017{n:04d}" for n in range(40)]
    async def given(answers: list[object]) -> list[Any]:
        out: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        def collect(answer: DeferredAnswer) -> None:
            out.append(answer.answer)
            if len(out) == len(answers):
                done.set_result(None)

        for answer in answers:
            assert isinstance(answer, DeferredAnswer)  # no coroutine, task or future
            answer.bind(collect, None)
        await asyncio.wait_for(done, 10)
        return out

    waiting: list[object] = [handler.handle(b"GET", path(imei, "001010000000001"))
                             for imei in imeis]
    assert handler.in_flight == len(imeis)
    responses = await given(waiting)
    assert {(r.status, r.body) for r in responses} == {(200, b'{"status":"WHITELISTED"}')}
    assert handler.in_flight == 0
    assert value(registry, "eir_shared_state_requests_total", store="redis", outcome="ok") == 1
    # Two IMSIs with IMEI on another gateway, a third here: over the threshold overall.
    for imsi in ("001010000000002", "001010000000003"):
        await check(first, imsi)
    [answer] = await given([handler.handle(b"GET", path(IMEI, "001010000000004"))])
    assert answer.body == b'{"status":"GREYLISTED"}'


# The script of the release before (session 8), verbatim: the reference the differential
# below holds the current one to (counts, members, scores and expiry), replays included.
_OBSERVE_BEFORE = """
local window = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local counts = {}
local i = 0
for digest, ms in string.gmatch(ARGV[3], '(%x+) (%d+)') do
  i = i + 1
  local key = KEYS[i]
  local seen = tonumber(ms) / 1000
  redis.call('ZADD', key, 'GT', seen, digest)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (seen - window))
  local n = redis.call('ZCARD', key)
  if n > keep then
    redis.call('ZREMRANGEBYRANK', key, 0, n - keep - 1)
    n = keep
  end
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  counts[i] = n
end
if i ~= #KEYS then
  return redis.error_reply('observations and keys differ: ' .. i .. ' vs ' .. #KEYS)
end
return counts
"""

_EPOCH_MS = 1_733_389_100_123  # a real clock's milliseconds; 0 tries the shortest texts


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    threshold=st.integers(1, 4),
    # Windows long enough that no key expires in real time during the example; sightings
    # minutes apart in the scores' time, so that they leave the window.
    window=st.sampled_from([1_000.0, 2_500.0, 3_600.0, 3_600.0005]),
    start=st.sampled_from([0, 7, _EPOCH_MS]),
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5),
                  st.integers(-4_000, 4_000) | st.integers(-4_000_000, 4_000_000)),
        min_size=1, max_size=60,
    ),
    per_call=st.integers(1, 7),
)
def test_the_script_counts_and_stores_as_the_one_before(
    redis_server: RedisServer, threshold: int, window: float, start: int,
    steps: list[tuple[int, int, int]], per_call: int,
) -> None:
    """Differential: every sighting (times going back too: replays, ZADD GT) through
    _OBSERVE and through the release before's script, on keys of their own; the counts, and
    at the end every set's members, scores and expiry, are the same."""
    from gateway.redis_clone import _OBSERVE, _observations

    async def run() -> None:
        client = redis.asyncio.from_url(redis_server.url)
        prefix = f"diff{time.monotonic_ns()}"
        keep = threshold + 1
        ms, batch = start, []
        for imei, imsi, delta in steps:
            ms = max(0, ms + delta)
            batch.append((f"3520990017000{imei}", f"{imsi:016x}", ms / 1000))
        try:
            counts: dict[str, list[int]] = {"now": [], "before": []}
            for name, script in (("now", _OBSERVE), ("before", _OBSERVE_BEFORE)):
                for first in range(0, len(batch), per_call):
                    calls = batch[first:first + per_call]
                    keys = [f"{prefix}{name}:clone:{{{imei}}}" for imei, _, _ in calls]
                    counts[name] += await client.eval(  # type: ignore[misc]
                        script, len(keys), *keys, repr(window), keep, _observations(calls)
                    )
            assert counts["now"] == counts["before"]
            for imei in {imei for imei, _, _ in batch}:
                now_key, before_key = (f"{prefix}{n}:clone:{{{imei}}}" for n in ("now", "before"))
                assert (await client.zrange(now_key, 0, -1, withscores=True)
                        == await client.zrange(before_key, 0, -1, withscores=True))
                ttl_now, ttl_before = await client.pttl(now_key), await client.pttl(before_key)
                assert ttl_now > 0 and abs(ttl_now - ttl_before) <= 1_000
        finally:
            await client.aclose()

    asyncio.run(run())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    threshold=st.integers(1, 3),
    window=st.sampled_from([2, 5, 3600]),
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5), st.integers(1, 4)),
        min_size=1, max_size=40,
    ),
)
def test_one_gateways_shared_count_is_its_in_process_count(
    redis_server: RedisServer, threshold: int, window: int, steps: list[tuple[int, int, int]],
) -> None:
    """Differential: one gateway alone, each sighting (whole seconds, always later) counted by
    the in-process CloneTracker and, through Redis, by the shared tracker: the same clone
    suspicion each time (the in-process count is exact above the threshold, an upper bound
    below it)."""

    async def run() -> None:
        config = SharedConfig(redis_server.url, f"same{time.monotonic_ns()}", budget=30.0)
        tracker = shared_clone_tracker(CloneTracker(threshold, float(window)), config,
                                       CollectorRegistry())
        try:
            now = 1_733_389_100.0
            for imei_n, imsi_n, gap in steps:
                now += gap
                imei, imsi = f"3520990017000{imei_n}", f"00101000000000{imsi_n}"
                local = tracker.suspected(imei, imsi, now)
                count = tracker.shared_count(imei)
                assert count is not None
                shared = await asyncio.wait_for(count.wait(), 30.0)
                assert local == (shared if shared > threshold else 0), (imei, imsi, now)
        finally:
            await tracker.close()

    asyncio.run(run())


async def test_a_hung_redis_times_the_round_trip_out_then_the_batch_is_replayed(
    make: Make, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped (SIGSTOP) in the steady state (connection open, script loaded): the
    check waits only its budget, the round trip ends at ``timeout`` as a timeout (metric, one
    log line), and once Redis runs again the sighting is sent and counted there."""
    import os
    import signal

    caplog.set_level(logging.WARNING, "eir.shared")
    classifier, tracker, registry = make(budget=0.05, timeout=0.3, retry_interval=0.1)
    await check(classifier, "001010000000001")
    # The check waits 50 ms at most: under load the connection and script are not ready by
    # then, and this test is about the steady state.
    await tracker.flush()
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        decision = await check(classifier, "001010000000002")
        assert decision.status is EquipmentStatus.WHITELISTED  # the local count, in budget
        for _ in range(100):
            if not tracker.available:
                break
            await asyncio.sleep(0.05)
        assert not tracker.available
        assert value(registry, "eir_shared_state_requests_total", store="redis",
                     outcome="timeout") == 1
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    for _ in range(100):
        if tracker.available:
            break
        await asyncio.sleep(0.05)
    assert tracker.available
    await tracker.flush()
    probe = redis.asyncio.from_url(redis_server.url)
    assert await probe.zcard(tracker.key(IMEI)) == 2
    await probe.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unreachable" in m for m in messages) == 1
    assert sum("Redis answers again" in m for m in messages) == 1


class _Rider:
    """Commands carried with the tracker's round trips (gateway.redis_connection.Rider): ECHOs,
    whatever came back kept."""

    def __init__(self) -> None:
        self.waiting: list[bytes] = []
        self.replies: list[list[Reply] | BaseException] = []
        self.told_uncarried = 0

    def carried(self) -> tuple[bytes, int, Callable[[list[Reply] | BaseException], None]] | None:
        if not self.waiting:
            return None
        words, self.waiting = self.waiting, []
        return b"".join(command("ECHO", w) for w in words), len(words), self.replies.append

    def uncarried(self) -> None:
        self.told_uncarried += 1


async def _until(condition: Callable[[], object]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 2 s")


async def test_a_riders_commands_go_with_the_round_trip(
    make: Make, probe: redis.asyncio.Redis
) -> None:
    """Before the steady state the rider is told to send its own way; then its commands follow
    the tick's calls in the same round trip and it gets their replies, the checks their
    counts; with no check waiting, a round trip of the rider's commands alone."""
    classifier, tracker, registry = make()
    rider = _Rider()
    tracker.carry(rider)
    assert not tracker.carrying  # no connection yet
    rider.waiting.append(b"early")
    tracker.carry_soon()
    await _until(lambda: rider.told_uncarried == 1)
    await check(classifier, "001010000000001")
    await tracker.flush()  # the check waits its budget at most: the round trip may go on
    assert tracker.carrying  # connection opened, script loaded
    rider.waiting += [b"a", b"b"]
    tracker.carry_soon()
    decision = await check(classifier, "001010000000002")
    assert decision.status is EquipmentStatus.WHITELISTED  # 2 IMSIs: not above THRESHOLD
    assert rider.replies == [[b"early", b"a", b"b"]]
    assert await probe.zcard(tracker.key(IMEI)) == 2
    rider.waiting.append(b"alone")
    tracker.carry_soon()
    await _until(lambda: len(rider.replies) == 2)
    assert rider.replies[1] == [b"alone"]
    assert value(registry, "eir_shared_state_requests_total", store="redis", outcome="ok") == 2


async def test_a_hung_redis_fails_the_riders_commands_too(
    make: Make, redis_server: RedisServer
) -> None:
    import os
    import signal

    classifier, tracker, _ = make(budget=0.05, timeout=0.3, retry_interval=0.1)
    rider = _Rider()
    tracker.carry(rider)
    await check(classifier, "001010000000001")
    await tracker.flush()  # the check waits its budget at most: the round trip may go on
    assert tracker.carrying  # connection opened, script loaded
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        rider.waiting.append(b"lost")
        tracker.carry_soon()
        await check(classifier, "001010000000002")
        await _until(lambda: rider.replies)
        assert isinstance(rider.replies[0], TimeoutError)
        assert not tracker.carrying
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)


async def _steady(classifier: Classifier, tracker: SharedCloneTracker) -> None:
    """The connection open and the script loaded: round trips go from callbacks."""
    await check(classifier, "001010000000001")
    await tracker.flush()
    assert tracker.carrying


@contextlib.contextmanager
def _stopped(redis_server: RedisServer) -> Iterator[None]:
    """redis-server stopped (SIGSTOP) meanwhile: what is written to it waits."""
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)


def _tick_of(tracker: SharedCloneTracker, first: int, n: int) -> list[Any]:
    """``n`` checks of distinct IMEIs in one tick; their shared counts."""
    now = time.time()
    counts = []
    for i in range(first, first + n):
        imei = f"3520990018{i:04d}"
        tracker.suspected(imei, "001010000000001", now)
        counts.append(tracker.shared_count(imei))
    assert all(c is not None for c in counts)
    return counts


async def test_several_round_trips_in_flight_each_answered(
    make: Make, probe: redis.asyncio.Redis, redis_server: RedisServer
) -> None:
    """While a round trip is under way, a tick's batch of FOLLOW_UP observations or more goes
    at once rather than waiting for it (at most MAX_IN_FLIGHT); a smaller one waits. Each
    check gets its own count, in order."""
    from gateway.redis_clone import FOLLOW_UP, MAX_IN_FLIGHT

    classifier, tracker, registry = make(budget=5.0, timeout=5.0)
    await _steady(classifier, tracker)
    ok = value(registry, "eir_shared_state_requests_total", store="redis", outcome="ok")
    with _stopped(redis_server):  # the round trips stay under way, however slow the machine
        counts = _tick_of(tracker, 0, 1)
        await asyncio.sleep(0)  # the tick's end: its round trip written
        for t in range(MAX_IN_FLIGHT + 1):
            counts += _tick_of(tracker, 1 + t * FOLLOW_UP, FOLLOW_UP)
            await asyncio.sleep(0)
        counts += _tick_of(tracker, 10_000, 1)  # a small batch: waits for a round trip's end
        await asyncio.sleep(0)
    values = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in counts)), 10.0)
    assert values == [1] * len(counts)  # one IMSI each, counted in Redis
    trips = value(registry, "eir_shared_state_requests_total", store="redis", outcome="ok") - ok
    # MAX_IN_FLIGHT under way (the 1 and MAX_IN_FLIGHT - 1 batches of FOLLOW_UP), then the
    # last batch of FOLLOW_UP and the small one together, once a round trip ended.
    assert trips == MAX_IN_FLIGHT + 1
    for i in (0, MAX_IN_FLIGHT * FOLLOW_UP, 10_000):
        assert await probe.zcard(tracker.key(f"3520990018{i:04d}")) == 1


async def test_round_trips_in_flight_time_out_together_then_replay_in_order(
    make: Make, redis_server: RedisServer, probe: redis.asyncio.Redis,
    caplog: pytest.LogCaptureFixture
) -> None:
    """Redis hung with three round trips under way: one timeout (one metric, one log line),
    every check answered from the local count, every batch sent again once Redis answers."""
    import os
    import signal

    from gateway.redis_clone import FOLLOW_UP

    caplog.set_level(logging.WARNING, "eir.shared")
    classifier, tracker, registry = make(budget=0.05, timeout=0.3, retry_interval=0.1)
    await _steady(classifier, tracker)
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        counts = []
        for t in range(3):
            counts += _tick_of(tracker, t * FOLLOW_UP, FOLLOW_UP)
            await asyncio.sleep(0)
        values = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in counts)), 5.0)
        assert values == [0] * len(counts)  # past the budget: the local count stands
        await _until(lambda: not tracker.available)
        assert value(registry, "eir_shared_state_requests_total", store="redis",
                     outcome="timeout") == 1
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    await _until(lambda: tracker.available)
    await tracker.flush()
    for i in (0, FOLLOW_UP, 3 * FOLLOW_UP - 1):
        assert await probe.zcard(tracker.key(f"3520990018{i:04d}")) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unreachable" in m for m in messages) == 1
    assert sum("Redis answers again" in m for m in messages) == 1


async def test_a_flushed_script_with_round_trips_in_flight(
    make: Make, probe: redis.asyncio.Redis, redis_server: RedisServer
) -> None:
    """SCRIPT FLUSH, then three round trips under way: each meets NOSCRIPT, the script is
    loaded once again and every batch is sent again, each check waiting for its count (no
    error, nothing counted locally only)."""
    from gateway.redis_clone import FOLLOW_UP

    classifier, tracker, registry = make(budget=5.0, timeout=5.0)
    await _steady(classifier, tracker)
    await probe.script_flush()
    with _stopped(redis_server):  # the round trips stay under way
        counts = []
        for t in range(3):
            counts += _tick_of(tracker, t * FOLLOW_UP, FOLLOW_UP)
            await asyncio.sleep(0)
    # A later check of an IMEI whose first waits in a batch sent again: both get the count.
    counts += _tick_of(tracker, 0, 1)
    values = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in counts)), 10.0)
    assert values == [1] * len(counts)
    await tracker.flush()
    assert value(registry, "eir_shared_state_requests_total", store="redis", outcome="error") == 0
    assert tracker.carrying
    for i in (0, FOLLOW_UP, 3 * FOLLOW_UP - 1):
        assert await probe.zcard(tracker.key(f"3520990018{i:04d}")) == 1
