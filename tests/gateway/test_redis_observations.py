"""The observation stream (``[shared] observation_stream``) against a real redis-server: two
gateways' sightings are each written once, by whichever consumer of the group reads them; with
Redis away they go to the process's own log at once, one log line per transition."""

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

from gateway.config import SharedConfig
from gateway.observations import ObservationLog
from gateway.redis_clone import SharedStateMetrics
from gateway.redis_observations import (
    GROUP,
    PER_ROUND_TRIP,
    ObservationStream,
    observation_stream,
)
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture

IMEI = "35209900176148"
Make = Callable[..., ObservationStream]


@pytest.fixture
async def make(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Make]:
    made: list[ObservationStream] = []

    def build(name: str) -> ObservationStream:
        local = ObservationLog(tmp_path / f"{name}.sqlite", flush_interval=0.05)
        config = SharedConfig(redis_server.url, "test", timeout=1.0, retry_interval=0.2)
        stream = observation_stream(local, config, SharedStateMetrics(CollectorRegistry()))
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
        summary = await client.xpending(a.key, GROUP)
        assert summary["pending"] == 0
        assert await client.xlen(a.key) == 31
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


async def test_entries_are_as_the_release_before_wrote_them(
    make: Make, redis_server: RedisServer
) -> None:
    """One XADD per sighting, fields imei, imsi and ts (seconds as decimal text), whatever
    the IMSI holds (User-Name is any UTF-8): consumers of either release read them (a rolling
    upgrade), across several script calls and a script Redis forgot (SCRIPT FLUSH)."""
    stream = make("a")  # appending only: no consumer takes the entries away
    now = 1_733_378_000.125
    imsis = ["001010000000001", "0010 1 000", "", "ünïcødé IMSI", "a\r\nb", *map(str, range(250))]
    await stream._append([(IMEI, imsi, now + i) for i, imsi in enumerate(imsis)])
    import redis.asyncio

    client = redis.asyncio.from_url(redis_server.url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    await stream._append([(IMEI, "001019999999999", now + 1_000)])
    entries = await _entries(redis_server.url, stream.key)
    assert [set(e) for e in entries] == [{b"imei", b"imsi", b"ts"}] * (len(imsis) + 1)
    assert [e[b"imsi"].decode() for e in entries] == [*imsis, "001019999999999"]
    assert {e[b"imei"] for e in entries} == {IMEI.encode()}
    assert [float(e[b"ts"]) for e in entries] == [
        round(now + i, 3) for i in [*range(len(imsis)), 1_000]
    ]
    assert entries[0][b"ts"] == b"1733378000.125"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"\A[0-9]{14}\Z"),
            st.text(max_size=20),
            st.floats(min_value=1e9, max_value=4e9, allow_nan=False),
        ),
        min_size=1,
        max_size=250,
    )
)
def test_the_script_appends_what_one_xadd_each_would(
    redis_server: RedisServer, batch: list[tuple[str, str, float]]
) -> None:
    """Differential: the script's entries against the release before's one XADD a sighting
    (its ts text then a float's repr: compared at the script's millisecond)."""

    async def run() -> None:
        config = SharedConfig(redis_server.url, f"prop{time.monotonic_ns()}", timeout=1.0)
        local = ObservationLog(Path("/nonexistent/not-opened.sqlite"))
        stream = observation_stream(local, config, SharedStateMetrics(CollectorRegistry()))
        try:
            await stream._append(batch)
            got = await _entries(redis_server.url, stream.key)
        finally:
            await stream.redis.aclose()
        expected = [
            {b"imei": imei.encode(), b"imsi": imsi.encode(), b"ts": int(ts * 1000)}
            for imei, imsi, ts in batch
        ]
        assert [{**e, b"ts": round(float(e[b"ts"]) * 1000)} for e in got] == expected

    asyncio.run(run())


async def test_entries_of_the_release_before_are_read_and_a_stranger_skipped(
    make: Make, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """What a gateway of the release before appended (one XADD, ts a float's repr) is folded
    in; an entry that is not an observation is skipped with a warning, the ones around it
    taken; nothing is left pending in the group."""
    import redis.asyncio

    stream = make("a")
    client = redis.asyncio.from_url(redis_server.url)
    now = time.time()
    try:
        await client.xgroup_create(stream.key, GROUP, id="0", mkstream=True)
        await client.xadd(stream.key, {"imei": IMEI, "imsi": "001010000000001", "ts": repr(now)})
        await client.xadd(stream.key, {"something": "else"})
        await client.xadd(stream.key, {"imei": IMEI, "imsi": "001010000000002", "ts": "bad"})
        await stream._append([(IMEI, "001010000000003", now + 1)])
        caplog.set_level(logging.WARNING, "eir.shared")
        await _started(stream)
        assert await _eventually(lambda: stream.local.stats.written == 2)
        rows = {imsi: (first, count) for imsi, first, _, count in stream.lookup(IMEI)}
        assert rows == {"001010000000001": (now, 1), "001010000000003": (int((now + 1) * 1000) / 1000, 1)}
        assert len([r for r in caplog.records if "not an observation" in r.getMessage()]) == 2
        assert (await client.xpending(stream.key, GROUP))["pending"] == 0
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
