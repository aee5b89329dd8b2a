"""The observation stream (``[shared] observation_stream``) against a real redis-server: two
gateways' sightings are each written once, by whichever consumer of the group reads them; with
Redis away they go to the process's own log at once, one log line per transition; entries of
the release before (one a sighting, on the v1 key) read with the packed ones; the appends
carried by the shared clone count's round trips, in its write."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.clone_tracker import CloneTracker
from gateway.config import SharedConfig
from gateway.observations import ObservationLog
from gateway.redis_clone import SharedCloneTracker, SharedStateMetrics, shared_clone_tracker
from gateway.redis_observations import (
    GROUP,
    PER_ROUND_TRIP,
    ObservationStream,
    observation_stream,
)
from gateway.stream_entries import FIELD, pack, unpack
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture

IMEI = "35209900176148"
Make = Callable[..., ObservationStream]


@pytest.fixture
async def make(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Make]:
    made: list[ObservationStream] = []

    def build(name: str, carrier: SharedCloneTracker | None = None) -> ObservationStream:
        local = ObservationLog(tmp_path / f"{name}.sqlite", flush_interval=0.05)
        config = SharedConfig(redis_server.url, "test", timeout=1.0, retry_interval=0.2)
        stream = observation_stream(local, config, SharedStateMetrics(CollectorRegistry()),
                                    carrier)
        stream.consumer = name
        made.append(stream)
        return stream

    yield build
    for stream in made:
        await stream.aclose()
        stream.close()


async def _started(stream: ObservationStream) -> ObservationStream:
    stream.start(asyncio.get_running_loop())
    await stream.start_consuming()
    return stream


async def _eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_each_sighting_is_written_once_by_one_consumer(
    make: Make, redis_server: RedisServer
) -> None:
    a, b = await _started(make("a")), await _started(make("b"))
    now = time.time()
    for i in range(30):
        (a if i % 2 else b).record(IMEI, f"0010100000000{i:02d}", now + i)
    a.record(IMEI, "001010000000000", now + 100)  # a second sighting of a pair b made

    def written() -> int:
        return a.local.stats.written + b.local.stats.written

    assert await _eventually(lambda: written() == 31)
    rows = a.lookup(IMEI) + b.lookup(IMEI)
    assert sum(count for *_, count in rows) == 31
    assert {imsi for imsi, *_ in rows} == {f"0010100000000{i:02d}" for i in range(30)}
    # Everything read was acknowledged; nothing was left to the other's log by accident.
    import redis.asyncio

    client = redis.asyncio.from_url(redis_server.url)
    try:
        for key in a.keys:
            assert (await client.xpending(key, GROUP))["pending"] == 0
        assert await client.xlen(a.keys[0]) == 0  # v1: only the release before appends there
        assert len(await _sightings(redis_server.url, a.keys[1])) == 31
    finally:
        await client.aclose()


async def test_redis_away_observations_stay_local_one_line_per_transition(
    make: Make, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    stream = await _started(make("a"))
    caplog.set_level(logging.WARNING, "eir.shared")
    redis_server.stop()
    now = time.time()
    for i in range(5):
        stream.record(IMEI, f"00101000000001{i}", now + i)
        await asyncio.sleep(0.1)
    assert await _eventually(lambda: stream.local.stats.written == 5)
    assert not stream._state.available
    up = stream._state._up  # the gauge of store="redis_stream"
    assert up._value.get() == 0  # type: ignore[attr-defined]
    downs = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(downs) == 1
    redis_server.start()  # same port, an empty Redis
    assert await _eventually(lambda: up._value.get() == 1)  # type: ignore[attr-defined]
    assert len([r for r in caplog.records if "answers again" in r.getMessage()]) == 1
    stream.record(IMEI, "001010000000099", now + 10)
    assert await _eventually(lambda: stream.local.stats.written == 6)
    assert "001010000000099" in {imsi for imsi, *_ in stream.lookup(IMEI)}


async def _entries(url: str, key: str) -> list[dict[bytes, bytes]]:
    import redis.asyncio

    client = redis.asyncio.from_url(url)
    try:
        return [fields for _, fields in await client.xrange(key)]
    finally:
        await client.aclose()


async def _sightings(url: str, key: str) -> list[tuple[str, str, float]]:
    return [s for e in await _entries(url, key) for s in unpack(e[FIELD])]


async def test_a_ticks_sightings_are_packed_into_v2_entries(
    make: Make, redis_server: RedisServer
) -> None:
    """Up to 100 sightings an entry, one field, whatever the IMSI holds (User-Name is any
    UTF-8), on the v2 key only; across several entries a round trip and a script Redis forgot
    (SCRIPT FLUSH: appends need none)."""
    stream = make("a")  # appending only: no consumer takes the entries away
    now = 1_733_378_000.125
    imsis = ["001010000000001", "0010 1 000", "", "ünïcødé IMSI", "a\r\nb", *map(str, range(250))]
    batch = [(IMEI, imsi, now + i) for i, imsi in enumerate(imsis)]
    await stream._append(batch)
    import redis.asyncio

    client = redis.asyncio.from_url(redis_server.url)
    try:
        await client.script_flush()
        await stream._append([(IMEI, "001019999999999", now + 1_000)])
        assert await client.exists(stream.keys[0]) == 0
    finally:
        await client.aclose()
    entries = await _entries(redis_server.url, stream.keys[1])
    assert [set(e) for e in entries] == [{FIELD}] * 4
    assert [len(unpack(e[FIELD])) for e in entries] == [100, 100, 55, 1]
    assert await _sightings(redis_server.url, stream.keys[1]) == [
        *batch, (IMEI, "001019999999999", now + 1_000)]
    assert entries[0][FIELD].startswith(b"35209900176148 1733378000125 15 001010000000001 ")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"\A[0-9]{14}\Z"),
            st.text(max_size=20),
            st.integers(min_value=10**12, max_value=4 * 10**12).map(lambda ms: ms / 1000),
        ),
        min_size=1,
        max_size=250,
    )
)
def test_what_is_appended_is_what_is_read_back(
    redis_server: RedisServer, batch: list[tuple[str, str, float]]
) -> None:
    """Through Redis and back, every sighting as it was recorded, in order."""

    async def run() -> None:
        config = SharedConfig(redis_server.url, f"prop{time.monotonic_ns()}", timeout=1.0)
        local = ObservationLog(Path("/nonexistent/not-opened.sqlite"))
        stream = observation_stream(local, config, SharedStateMetrics(CollectorRegistry()))
        try:
            await stream._append(batch)
            got = await _sightings(redis_server.url, stream.keys[1])
        finally:
            await stream.redis.aclose()
        assert got == batch

    asyncio.run(run())


async def test_entries_of_the_release_before_are_read_with_v2_and_strangers_skipped(
    make: Make, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """What a gateway of the release before appended (one XADD a sighting on the v1 key, ts a
    float's repr) is folded in with the v2 entries, in one read; an entry that is not an
    observation, of either key, is skipped with a warning, the ones around it taken; nothing
    is left pending in the group on either key."""
    import redis.asyncio

    stream = make("a")
    client = redis.asyncio.from_url(redis_server.url)
    v1, v2 = stream.keys
    now = time.time()
    try:
        await client.xgroup_create(v1, GROUP, id="0", mkstream=True)  # as that release does
        await client.xadd(v1, {"imei": IMEI, "imsi": "001010000000001", "ts": repr(now)})
        await client.xadd(v1, {"something": "else"})
        await client.xadd(v1, {"imei": IMEI, "imsi": "001010000000002", "ts": "bad"})
        await stream._append([(IMEI, "001010000000003", now + 1)])
        await client.xadd(v2, {FIELD: b"35209900176148 1 3 abcd "})  # not 3 bytes
        await client.xadd(v2, {"other": "field"})
        await stream._append([(IMEI, "001010000000004", now + 2), (IMEI, "00101 5", now + 3)])
        caplog.set_level(logging.WARNING, "eir.shared")
        await _started(stream)
        assert await _eventually(lambda: stream.local.stats.written == 4)
        rows = {imsi: (first, count) for imsi, first, _, count in stream.lookup(IMEI)}
        assert rows == {"001010000000001": (now, 1),
                        "001010000000003": (round((now + 1) * 1000) / 1000, 1),
                        "001010000000004": (round((now + 2) * 1000) / 1000, 1),
                        "00101 5": (round((now + 3) * 1000) / 1000, 1)}
        skipped = [r.getMessage() for r in caplog.records if "not observations" in r.getMessage()]
        assert skipped == ["observation stream: 4 entries are not observations; skipped"]
        for key in stream.keys:
            assert (await client.xpending(key, GROUP))["pending"] == 0
    finally:
        await client.aclose()


async def test_aclose_ends_a_consumer_whose_cancellation_was_lost(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's asyncio.wait_for loses a cancellation that arrives as the awaited read
    completes (gh-86296): the consuming task then reads on. aclose() must end it anyway (it
    once hung a test teardown for 300 s). Here every wait_for loses it, and the consumer is
    always in a read (a full one each time: no pause between reads)."""
    real_wait_for = asyncio.wait_for
    lost: list[bool] = []

    async def losing_wait_for(awaitable: Any, timeout: float | None) -> Any:
        task = asyncio.ensure_future(awaitable)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            lost.append(True)
            return await task  # the read's result, the cancellation gone

    async def full_read() -> int:
        await asyncio.sleep(0.05)
        return PER_ROUND_TRIP

    stream = make("a")
    stream._read = full_read  # type: ignore[method-assign]
    await _started(stream)
    monkeypatch.setattr(asyncio, "wait_for", losing_wait_for)
    await asyncio.sleep(0.2)
    await real_wait_for(stream.aclose(), 10)
    assert lost  # aclose's cancellation fell in a read and was lost
    assert stream._consuming is not None and stream._consuming.done()


# -- the appends carried by the shared clone count's round trips --------------------------------
@pytest.fixture
async def tracker(redis_server: RedisServer) -> AsyncIterator[SharedCloneTracker]:
    """A shared clone tracker in its steady state (connection open, script loaded)."""
    config = SharedConfig(redis_server.url, "test", timeout=1.0, retry_interval=0.2)
    made = shared_clone_tracker(CloneTracker(3, 3600.0), config, CollectorRegistry())
    made.suspected("35209900000000", "001010000000000", time.time())
    await made.flush()
    assert made.carrying
    yield made
    await made.close()


class _CountingWrites:
    """A transport that counts what is written through it."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def test_a_ticks_appends_go_in_the_clone_counts_write(
    make: Make, tracker: SharedCloneTracker, redis_server: RedisServer
) -> None:
    """On a standalone Redis the tick's XADD follows the tick's EVALSHA in the one write of
    the tracker's connection, and its reply is read with the counts': redis-py's path is not
    taken."""
    stream = make("a", tracker)
    connection = tracker._connection
    assert connection is not None
    counting = connection._transport = _CountingWrites(connection._transport)  # type: ignore[assignment]
    own: list[bool] = []
    stream._send_now = lambda: own.append(True)  # type: ignore[method-assign]
    now = time.time()
    for i in range(5):
        imei, imsi = f"3520990017{i:04d}", f"00101000000000{i}"
        tracker.suspected(imei, imsi, now + i)
        stream.record(imei, imsi, now + i)
    await tracker.flush()
    assert len(counting.writes) == 1
    assert counting.writes[0].count(b"EVALSHA") == 1 and counting.writes[0].count(b"XADD") == 1
    assert not own and stream._state.available
    assert await _sightings(redis_server.url, stream.keys[1]) == [
        (f"3520990017{i:04d}", f"00101000000000{i}", round((now + i) * 1000) / 1000)
        for i in range(5)]
    # Sightings with no clone count to send (a round trip of the stream's alone), and more
    # than one round trip's worth: every one arrives, none through redis-py.
    for i in range(2_500):
        stream.record(IMEI, f"0010100001{i:05d}", now)
    assert await _eventually(lambda: not stream._queued and not stream._carried)
    await tracker.flush()
    assert not own
    assert len(await _sightings(redis_server.url, stream.keys[1])) == 2_505


async def test_redis_away_carried_appends_stay_local_one_line_per_transition(
    make: Make, tracker: SharedCloneTracker, redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The tracker's round trip failing fails the appends it carried: they go to the local
    log, the stream is down (one line), and back (one line) once Redis answers; then the
    appends go through the stream again (by redis-py while the tracker reconnects, then
    carried)."""
    stream = await _started(make("a", tracker))
    caplog.set_level(logging.WARNING, "eir.shared")
    redis_server.stop()
    now = time.time()
    for i in range(5):
        imsi = f"00101000000001{i}"
        tracker.suspected(IMEI, imsi, now + i)
        stream.record(IMEI, imsi, now + i)
        await asyncio.sleep(0.1)
    assert await _eventually(lambda: stream.local.stats.written == 5)
    assert not stream._state.available
    lost = "observations go to this process's own log"
    assert len([r for r in caplog.records if lost in r.getMessage()]) == 1
    redis_server.start()  # same port, an empty Redis
    assert await _eventually(lambda: stream._state.available)
    for i in range(20):  # until the tracker answers again too, and carries
        tracker.suspected(f"3520990017{i:04d}", "001010000000099", now + 10)
        stream.record(f"3520990017{i:04d}", "001010000000099", now + 10)
        await tracker.flush()
        await asyncio.sleep(0.1)
    assert tracker.carrying
    assert await _eventually(lambda: stream.local.stats.written == 25)
    assert len([r for r in caplog.records
                if "answers again" in r.getMessage() and "stream" in r.getMessage()]) == 1


# -- an append Redis refuses in part ------------------------------------------------------------
async def _refused_in_part(stream: ObservationStream, url: str,
                           carrier: SharedCloneTracker | None = None) -> None:
    """Past maxmemory (noeviction) Redis refuses each XADD from then on with OOM, the round
    trip's earlier XADDs having been appended: only the refused entries' sightings may go to
    the local log (all of them did: the appended ones were then written twice)."""
    import redis.asyncio

    stream.start(asyncio.get_running_loop())  # appending only: no consumer takes entries away
    client = redis.asyncio.from_url(url)
    try:
        used = (await client.info("memory"))["used_memory"]
        await client.config_set("maxmemory-policy", "noeviction")
        # Room for a few of the round trip's ten entries (64 KiB each), not for all.
        await client.config_set("maxmemory", used + 300_000)
        now = time.time()
        imsis = [f"{i:04d}" + "x" * 600 for i in range(1_000)]
        for imsi in imsis:
            stream.record(IMEI, imsi, now)
        if carrier is not None:
            carrier.suspected(IMEI, "001010000000001", now)
            await carrier.flush()
        assert await _eventually(lambda: not stream._queued and not stream._carried
                                 and stream._sending is None)
        await client.config_set("maxmemory", 0)
    finally:
        await client.aclose()
    assert not stream._state.available  # a refusal is a failure of the store
    in_stream = [imsi for _, imsi, _ in await _sightings(url, stream.keys[1])]
    local = stream.local
    assert await _eventually(lambda: local.stats.written == local.stats.recorded)
    kept = [imsi for imsi, _, _, count in stream.lookup(IMEI) for _ in range(count)]
    assert 0 < len(in_stream) < len(imsis)  # some appended, some refused
    assert sorted(in_stream + kept) == imsis


async def test_entries_redis_refuses_stay_local_and_only_those(
    make: Make, redis_server: RedisServer
) -> None:
    await _refused_in_part(make("a"), redis_server.url)


async def test_carried_entries_redis_refuses_stay_local_and_only_those(
    make: Make, tracker: SharedCloneTracker, redis_server: RedisServer
) -> None:
    await _refused_in_part(make("a", tracker), redis_server.url, tracker)


async def test_a_redis_busy_past_the_timeout_is_named_and_loses_nothing(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis busy (another client's script) past ``timeout``: the line says so (it said
    "Redis unreachable ()", a TimeoutError having no text), and the sightings stay local.
    Redis appends them once it is free: they are then in both (at least once)."""
    import threading

    import redis

    local = ObservationLog(tmp_path / "a.sqlite", flush_interval=0.05)
    config = SharedConfig(redis_server.url, "test", timeout=0.2, retry_interval=0.2)
    stream = observation_stream(local, config, SharedStateMetrics(CollectorRegistry()))
    stream.start(asyncio.get_running_loop())
    caplog.set_level(logging.WARNING, "eir.shared")
    busy_client = redis.Redis.from_url(redis_server.url)
    busy = threading.Thread(target=busy_client.eval, args=(
        "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') "
        "until (t[1] - t0[1]) * 1000000 + t[2] - t0[2] > 600000", 0))
    try:
        stream.record(IMEI, "001010000000000", time.time())  # connected before
        assert await _eventually(lambda: not stream._queued and stream._sending is None)
        busy.start()
        await asyncio.sleep(0.1)
        for i in range(10):
            stream.record(IMEI, f"00101000000001{i}", time.time())
        assert await _eventually(lambda: local.stats.written == 10)
        busy.join(10)
        assert [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()] == [
            "Redis unreachable (no reply within 0.2 s): observations go to this process's own "
            "log until it answers; retried every 0.2 s"]
    finally:
        busy_client.close()
        await stream.aclose()
        stream.close()


async def test_carried_appends_across_a_script_flush_are_each_appended_once(
    make: Make, tracker: SharedCloneTracker, redis_server: RedisServer
) -> None:
    """SCRIPT FLUSH while appends ride the clone count's round trips: the EVALSHA answers
    NOSCRIPT and its batch is sent again once the script is loaded; the XADDs in the same
    write were appended, and must be neither kept locally nor appended again."""
    import redis.asyncio

    stream = make("a", tracker)
    stream.start(asyncio.get_running_loop())  # appending only: no consumer takes entries away
    own: list[bool] = []
    stream._send_now = lambda: own.append(True)  # type: ignore[method-assign]
    client = redis.asyncio.from_url(redis_server.url)
    now = time.time()
    try:
        for round_ in range(3):
            for i in range(50):
                imei, imsi = f"35209900{round_:02d}{i:04d}", f"0010100000{round_:02d}{i:03d}"
                tracker.suspected(imei, imsi, now)
                stream.record(imei, imsi, now)
            await client.script_flush()
            await tracker.flush()
            assert await _eventually(lambda: not stream._queued and not stream._carried)
    finally:
        await client.aclose()
    assert tracker.carrying and stream._state.available and not own  # all carried
    appended = [imsi for _, imsi, _ in await _sightings(redis_server.url, stream.keys[1])]
    assert sorted(appended) == [f"0010100000{r:02d}{i:03d}" for r in range(3) for i in range(50)]
    assert stream.local.stats.recorded == 0


async def test_the_writer_threads_consumer_says_what_was_trimmed_unread(
    make: Make, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With the writer thread the gateway is the group's consumer: entries trimmed (XADD
    MAXLEN ~) before it read them are told once, with how many, as the writer process does,
    also before its group's first read."""
    import redis.asyncio

    caplog.set_level(logging.WARNING, "eir.shared")
    stream = make("a")
    client = redis.asyncio.from_url(redis_server.url)
    try:
        await stream._join_group()  # as it does at start; nothing read yet
        for i in range(1_000):  # a cap of ~200: trimmed by whole nodes of 100 entries
            await client.xadd(stream.keys[1], {FIELD: pack([(IMEI, f"{i:015d}", 1.0)])[0]},
                              maxlen=200, approximate=True)
        kept = await client.xlen(stream.keys[1])
    finally:
        await client.aclose()
    await _started(stream)
    told = f"{1_000 - kept} entries of {stream.keys[1]} trimmed"
    assert await _eventually(lambda: stream.local.stats.recorded == kept
                             and any(told in r.getMessage() for r in caplog.records))
    await asyncio.sleep(0.2)  # more empty reads: told once
    assert len([r for r in caplog.records if "trimmed" in r.getMessage()]) == 1
