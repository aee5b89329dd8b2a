"""The observation log's writer process on PostgreSQL, and the Redis observation stream drained
by writer processes (gateway.stream_drain), against a real PostgreSQL and redis-server: one
statement per batch folds repeated keys as SQLite's log does (differential); a writer killed
mid-run is restarted and nothing is lost; each sighting is written once across two gateways'
writers; v1 entries (the release before's) drained with v2 ones; Redis away sends observations
to the gateway's own log."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.config import SharedConfig
from gateway.observation_process import ObservationProcessLog
from gateway.observations import LastImsi, SqliteObservations
from gateway.redis_clone import SharedStateMetrics
from gateway.redis_observations import ObservationStream, observation_stream
from gateway.stream_drain import GROUP, taken
from gateway.stream_entries import FIELD, pack, packed_key
from tests.gateway.test_redis_observations import _started
from tests.postgres_server import PostgresServer, postgres_dsn, postgres_server
from tests.redis_server import RedisServer, redis_server

__all__ = ["postgres_dsn", "postgres_server", "redis_server"]  # the fixtures

IMEI = "35209900176148"


async def _until(condition: Callable[[], object], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached")


def _sqlite_rows(db: Path) -> dict[tuple[str, str], tuple[float, float, int]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT imei, imsi, first_seen, last_seen, count FROM observations")
        return {(a, b): (c, d, e) for a, b, c, d, e in rows}
    finally:
        conn.close()


def _pg_rows(dsn: str) -> dict[tuple[str, str], tuple[float, float, int]]:
    from gateway.pg.database import Database

    db = Database(dsn, max_connections=1)
    try:
        rows = db.run(lambda conn: conn.fetch(
            "SELECT imei, imsi, first_seen, last_seen, count FROM observations"))
        return {(a, b): (c, d, e) for a, b, c, d, e in rows}
    finally:
        db.close()


# -- PostgreSQL: one statement per batch -----------------------------------------------------

_rows = st.lists(
    st.tuples(
        st.sampled_from(["35209900176148", "35693803564380", "01234567890123"]),
        st.sampled_from(["001010000000001", "001010000000002", "ünïcødé", ""]),
        st.floats(min_value=1e9, max_value=2e9, allow_nan=False),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.integers(min_value=1, max_value=1_000),
    ).map(lambda r: (r[0], r[1], r[2], r[2] + r[3], r[4])),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_rows, min_size=1, max_size=4))
def test_postgresql_batches_fold_as_sqlite_does(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[str, str, float, float, int]]],
) -> None:
    """Differential: batches with repeated keys (within one and across several) upserted
    into PostgreSQL give the rows SQLite's log gives: earliest first seen, latest last seen,
    counts summed."""
    from gateway.pg.observations import PgObservations

    dsn = postgres_server.create_database()
    path = tmp_path_factory.mktemp("diff") / "o.sqlite"
    pg, lite = PgObservations(dsn), SqliteObservations(path)
    try:
        for batch in batches:
            pg.upsert(batch)
            lite.upsert(batch)
    finally:
        pg.close()
        lite.close()
    assert _pg_rows(dsn) == _sqlite_rows(path)


async def test_the_postgresql_writer_process_restarts_and_loses_nothing(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.pg.observations import PgObservationProcessLog

    log = PgObservationProcessLog(postgres_dsn, batch_size=100, flush_interval=0.05)
    log.start()
    try:
        assert log._process is not None
        assert "--postgresql" in log._process.args  # type: ignore[operator]
        assert postgres_dsn not in " ".join(map(str, log._process.args))  # type: ignore[arg-type]
        for i in range(1_000):
            log.record(f"35209900{i:06d}", "001010000000001", float(i))
        assert log.flush() == 1_000
        first = log._process.pid
        os.kill(first, signal.SIGKILL)
        for i in range(1_000, 2_000):  # handed over while the writer is dead or restarting
            log.record(f"35209900{i:06d}", "001010000000001", float(i))
        await _until(lambda: log.stats.writer_restarts == 1 and log._process is not None
                     and log._process.pid != first and log.waiting == 0)
        found: list[tuple[LastImsi, bool]] = []
        log.last_imsi("35209900001500", 1e9, lambda f, failed: found.append((f, failed)))
        await _until(lambda: found)
        assert found == [(("001010000000001", 1500.0), False)]
        assert log.lookup("35209900001999") == [("001010000000001", 1999.0, 1999.0, 1)]
    finally:
        log.close()
    rows = _pg_rows(postgres_dsn)
    assert len(rows) == 2_000 and sum(r[2] for r in rows.values()) == 2_000
    assert log.stats.written == 2_000 and log.stats.errors == 0


async def test_a_postgresql_writer_that_cannot_connect_fails_the_start(
    postgres_server: PostgresServer,
) -> None:
    from gateway.observation_process import WriterFailed
    from gateway.pg.observations import PgObservationProcessLog

    log = PgObservationProcessLog(postgres_server.dsn("no_such_database"))
    with pytest.raises(WriterFailed, match="no_such_database"):
        log.start()


# -- the stream drained by writer processes ---------------------------------------------------

Make = Callable[..., ObservationStream]


@pytest.fixture
async def make(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Make]:
    made: list[ObservationStream] = []

    def build(name: str, dsn: str | None = None) -> ObservationStream:
        if dsn is None:
            local: ObservationProcessLog = ObservationProcessLog(
                tmp_path / f"{name}.sqlite", flush_interval=0.05)
        else:
            from gateway.pg.observations import PgObservationProcessLog

            local = PgObservationProcessLog(dsn, flush_interval=0.05)
        config = SharedConfig(redis_server.url, "test", timeout=1.0, retry_interval=0.2)
        stream = observation_stream(local, config, SharedStateMetrics(CollectorRegistry()))
        stream.consumer = name
        assert local._drain is not None
        local._drain = dataclasses.replace(local._drain, consumer=f"{name}:writer")
        made.append(stream)
        return stream

    yield build
    for stream in made:
        await stream.aclose()
        stream.close()


async def _nothing_pending(url: str, key: str) -> bool:
    """Whether the group's pending lists empty, of the v1 stream ``key`` and its v2 stream
    (the last batch is acknowledged with the writer's next read)."""
    import redis.asyncio

    client = redis.asyncio.from_url(url)
    try:
        for _ in range(200):
            pending = [int((await client.xpending(k, GROUP))["pending"])
                       for k in (key, packed_key(key))]
            if pending == [0, 0]:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await client.aclose()


def test_drain_settings_travel_whole() -> None:
    from gateway.stream_drain import DrainSettings

    settings_ = DrainSettings("redis://:secret@127.0.0.1:1/0", "eir:observations", "h:1:writer",
                              cluster=True, timeout=0.5, retry_interval=2.0)
    assert DrainSettings.decode(settings_.encode()) == settings_


def test_entries_that_are_not_observations_are_skipped_and_still_acknowledged() -> None:
    v1 = [b"1-0", b"35209900176148", b"001010000000001", b"1733378000.125",
          b"2-0", False, False, False,  # trimmed away while pending
          b"3-0", b"35209900176148", b"001010000000002", b"bad",
          b"4-0", b"35209900176148", "ünï".encode(), b"1733378001"]
    v2 = [b"5-0", *pack([("35209900176148", "a b", 1733378002.5)] * 2),
          b"6-0", False,  # trimmed away while pending
          b"7-0", b"35209900176148 1 3 abcd ",  # not 3 bytes
          b"8-0", *pack([("35209900176149", "", 3.0)])]
    read = taken(v1, v2)
    assert read.sightings == [("35209900176148", "001010000000001", 1733378000.125),
                              ("35209900176148", "ünï", 1733378001.0),
                              ("35209900176148", "a b", 1733378002.5),
                              ("35209900176148", "a b", 1733378002.5),
                              ("35209900176149", "", 3.0)]
    assert read.v1_ids == [b"1-0", b"2-0", b"3-0", b"4-0"]
    assert read.v2_ids == [b"5-0", b"6-0", b"7-0", b"8-0"]
    assert read.skipped == 4 and read.entries == 8


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_each_sighting_is_written_once_by_the_writers(
    make: Make, redis_server: RedisServer, request: pytest.FixtureRequest, backend: str
) -> None:
    """Two gateways append; their writer processes are the group's consumers (the gateways
    read nothing): every sighting written once, counted by the gateway whose writer wrote
    it, nothing left pending."""
    dsn = None
    if backend == "postgresql":
        server = request.getfixturevalue("postgres_server")
        dsn = await asyncio.to_thread(server.create_database)
    a, b = await _started(make("a", dsn)), await _started(make("b", dsn))
    assert not a.consumes and not b.consumes
    now = time.time()
    for i in range(300):
        (a if i % 2 else b).record(IMEI, f"0010100000{i:05d}", now + i)
        if i % 50 == 0:
            await asyncio.sleep(0)
    a.record(IMEI, "001010000000000", now + 1_000)  # a second sighting of a pair b made

    def written() -> int:
        return a.local.stats.written + b.local.stats.written

    await _until(lambda: written() == 301)
    rows = a.lookup(IMEI) + ([] if dsn else b.lookup(IMEI))
    assert sum(count for *_, count in rows) == 301
    assert {imsi for imsi, *_ in rows} == {f"0010100000{i:05d}" for i in range(300)}
    assert await _nothing_pending(redis_server.url, a.key)


async def test_v1_and_v2_entries_are_drained_together(
    make: Make, redis_server: RedisServer
) -> None:
    """A rolling upgrade: gateways of the release before append one entry a sighting to the
    v1 stream while this release's append packed entries to v2; this release's writer reads
    both, each sighting once, and acknowledges both."""
    import redis.asyncio

    stream = make("a")
    client = redis.asyncio.from_url(redis_server.url)
    now = 1_733_378_000.0
    try:
        await client.xgroup_create(stream.key, GROUP, id="0", mkstream=True)
        for i in range(1_500):  # more than one read of v1 entries
            await client.xadd(stream.key, {"imei": IMEI, "imsi": f"0010100000{i:05d}",
                                           "ts": f"{now + i}"})
        await _started(stream)
        for i in range(1_500, 3_000):
            stream.record(IMEI, f"0010100000{i:05d}", now + i)
            if i % 100 == 0:
                await asyncio.sleep(0)
        await _until(lambda: stream.local.stats.written == 3_000)
        rows = _sqlite_rows(stream.local.path)
        assert len(rows) == 3_000 and {count for *_, count in rows.values()} == {1}
        assert rows[(IMEI, "001010000002999")][0] == now + 2_999
        assert await _nothing_pending(redis_server.url, stream.key)
        assert await client.xlen(stream.keys[1]) < 1_500 // 10  # packed
    finally:
        await client.aclose()


async def test_a_writer_killed_while_draining_loses_nothing(
    make: Make, redis_server: RedisServer
) -> None:
    """Entries a killed writer read and never acknowledged are read again by its successor
    (the same consumer name); entries appended meanwhile are drained too."""
    stream = await _started(make("a"))
    local = stream.local
    assert isinstance(local, ObservationProcessLog)
    now = time.time()
    for i in range(2_000):
        stream.record(IMEI, f"0010100000{i:05d}", now + i)
        if i % 100 == 0:
            await asyncio.sleep(0)
    assert local._process is not None
    first = local._process.pid
    os.kill(first, signal.SIGKILL)
    for i in range(2_000, 3_000):
        stream.record(IMEI, f"0010100000{i:05d}", now + i)
        if i % 100 == 0:
            await asyncio.sleep(0)
    await _until(lambda: local.stats.writer_restarts == 1 and local._process is not None
                 and local._process.pid != first)
    path = local.path

    def distinct() -> int:
        return len(_sqlite_rows(path))

    await _until(lambda: distinct() == 3_000, 40)
    rows = _sqlite_rows(path)
    # At least once: a batch committed just before the kill, and not acknowledged, counts
    # twice; every sighting is there.
    assert all(count >= 1 for *_, count in rows.values())
    assert await _nothing_pending(redis_server.url, stream.key)


async def test_redis_away_observations_go_to_the_gateways_own_writer(
    make: Make, redis_server: RedisServer
) -> None:
    stream = await _started(make("a"))
    redis_server.stop()
    now = time.time()
    for i in range(5):
        stream.record(IMEI, f"00101000000001{i}", now + i)
        await asyncio.sleep(0.1)
    await _until(lambda: stream.local.stats.written == 5)
    assert not stream._state.available
    redis_server.start()  # same port, an empty Redis: the writer joins the group again
    await _until(lambda: stream._state.available)
    stream.record(IMEI, "001010000000099", now + 10)
    await _until(lambda: stream.local.stats.written == 6)
    assert "001010000000099" in {imsi for imsi, *_ in stream.lookup(IMEI)}


@dataclasses.dataclass
class _Refusing:
    """A drain (its own thread) whose SQLite store is locked by another connection past its
    busy timeout, as PostgreSQL away would refuse; entries appended, the first refusal seen."""

    path: Path
    store: SqliteObservations
    client: Any  # redis.Redis
    blocker: sqlite3.Connection
    drain: Any  # StreamDrain
    key: str
    reports: list[tuple[int, bool]]

    def close(self) -> None:
        self.drain.stop(10)
        self.blocker.close()
        self.client.close()
        self.store.close()


def _refusing(redis_server: RedisServer, tmp_path: Path, consumer: str,
              entries: list[dict[str, str]]) -> _Refusing:
    import threading

    import redis

    from gateway.stream_drain import DrainSettings, StreamDrain

    path = tmp_path / "o.sqlite"
    store = SqliteObservations(path)
    store._conn.execute("PRAGMA busy_timeout = 100")
    settings_ = DrainSettings(redis_server.url, "t:observations", consumer, retry_interval=0.1)
    client = redis.Redis.from_url(redis_server.url)
    reports: list[tuple[int, bool]] = []
    drain = StreamDrain(settings_, store, threading.Lock(),
                        lambda n, ok: reports.append((n, ok)))
    client.xgroup_create(settings_.key, GROUP, id="0", mkstream=True)
    for fields in entries:
        client.xadd(settings_.key, fields)  # type: ignore[arg-type]
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    refusing = _Refusing(path, store, client, blocker, drain, settings_.key, reports)
    drain.start()
    deadline = time.monotonic() + 20
    while (0, False) not in reports and time.monotonic() < deadline:
        time.sleep(0.02)
    if (0, False) not in reports:
        refusing.close()
        raise AssertionError("the store never refused")
    return refusing


def test_a_batch_the_store_refuses_stays_pending_and_is_written_later(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The store refusing: the drain reports the failure, acknowledges nothing and writes the
    same entries once the store takes them; each once, none left pending; at stop it leaves
    the group."""
    entries = [{"imei": IMEI, "imsi": f"00101000000{i:04d}", "ts": f"{1_733_378_000 + i}.5"}
               for i in range(50)]
    refusing = _refusing(redis_server, tmp_path, "h:1:writer", entries)
    client, key, reports = refusing.client, refusing.key, refusing.reports
    try:
        assert client.xpending(key, GROUP)["pending"] == 50  # read, not acknowledged
        refusing.blocker.rollback()
        deadline = time.monotonic() + 20
        while sum(n for n, ok in reports if ok) < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        refusing.drain.stop(10)
        assert sum(n for n, ok in reports if ok) == 50
        rows = _sqlite_rows(refusing.path)
        assert len(rows) == 50 and {r[2] for r in rows.values()} == {1}
        assert rows[(IMEI, "001010000000007")][0] == 1_733_378_007.5
        assert client.xpending(key, GROUP)["pending"] == 0  # the last XACK at stop
        assert client.xinfo_consumers(key, GROUP) == []  # and it left the group
    finally:
        refusing.close()


def test_a_consumer_with_entries_pending_stays_in_the_group_at_stop(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Stopped while its store refuses: the entries it read stay pending to it (another
    consumer claims them after CLAIM_IDLE), so it does not leave the group."""
    entries = [{"imei": IMEI, "imsi": f"00101000000{i:04d}", "ts": "1.0"} for i in range(5)]
    refusing = _refusing(redis_server, tmp_path, "h:2:writer", entries)
    try:
        refusing.drain.stop(10)
        consumers = refusing.client.xinfo_consumers(refusing.key, GROUP)
        assert [(c["name"], c["pending"]) for c in consumers] == [(b"h:2:writer", 5)]
    finally:
        refusing.close()


def _read_by_a_consumer_that_dies(url: str, key: str) -> None:
    """A v1 entry and 150 sightings in two v2 entries, read by consumer ``dead`` of the group
    (never acknowledged)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for k in (key, packed_key(key)):
            client.xgroup_create(k, GROUP, id="0", mkstream=True)
        client.xadd(key, {"imei": IMEI, "imsi": "001010000000001", "ts": "1733378000.5"})
        for entry in pack([(IMEI, f"00101000001{i:04d}", 1_733_378_001.0 + i)
                           for i in range(150)]):
            client.xadd(packed_key(key), {FIELD: entry})
        client.xreadgroup(GROUP, "dead", {key: ">", packed_key(key): ">"})
        assert [client.xpending(k, GROUP)["pending"] for k in (key, packed_key(key))] == [1, 2]
    finally:
        client.close()
    time.sleep(0.1)  # past the CLAIM_IDLE of the tests below


def test_a_dead_consumers_entries_are_claimed_from_both_streams(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a consumer read and never acknowledged, in either stream, is taken by a writer's
    drain after CLAIM_IDLE (XAUTOCLAIM), written and acknowledged."""

    from gateway import stream_drain

    monkeypatch.setattr(stream_drain, "CLAIM_IDLE", 0.05)
    key = "c:observations"
    _read_by_a_consumer_that_dies(redis_server.url, key)
    drain, store, reports = _drain(redis_server, tmp_path, key, "alive")
    client = drain.redis
    try:
        drain.round()
        assert reports == [(1, True), (150, True)]
        assert [client.xpending(k, GROUP)["pending"] for k in drain.keys] == [0, 0]
        rows = _sqlite_rows(tmp_path / "o.sqlite")
        assert len(rows) == 151 and rows[(IMEI, "001010000010149")][0] == 1_733_378_150.0
    finally:
        client.close()
        store.close()


async def test_a_dead_consumers_entries_are_claimed_by_the_writer_thread_mode(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with the gateway as the consumer (observations.writer = "thread")."""
    import gateway.redis_observations
    from gateway.observations import ObservationLog

    monkeypatch.setattr(gateway.redis_observations, "CLAIM_IDLE", 0.05)
    config = SharedConfig(redis_server.url, "t", timeout=1.0, retry_interval=0.2)
    stream = observation_stream(ObservationLog(tmp_path / "o.sqlite", flush_interval=0.05),
                                config, SharedStateMetrics(CollectorRegistry()))
    await asyncio.to_thread(_read_by_a_consumer_that_dies, redis_server.url, stream.key)
    try:
        await _started(stream)
        await _until(lambda: stream.local.stats.written == 151)
        assert await _nothing_pending(redis_server.url, stream.key)
    finally:
        await stream.aclose()
        stream.close()


@pytest.mark.parametrize("read_before", [50, 0])
def test_entries_trimmed_before_any_consumer_read_them_are_counted_once(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    read_before: int,
) -> None:
    """XADD MAXLEN ~ trims the oldest entries, read or not: those trimmed before the group
    read them are lost, which the drain that next catches up says once, with how many, for
    either stream (another consumer, or the same one later, does not say it again). Also when
    the group had read nothing yet (made with ENTRIESREAD 0: else Redis guesses its count from
    the first entry left, as if the trimmed ones had been read)."""
    import threading

    import redis

    from gateway.stream_drain import DrainSettings, StreamDrain

    key = "m:observations"
    client = redis.Redis.from_url(redis_server.url)
    stores = [SqliteObservations(tmp_path / f"{name}.sqlite") for name in ("a", "b")]
    drains = [StreamDrain(DrainSettings(redis_server.url, key, name), store, threading.Lock(),
                          lambda n, ok: None, client=client)
              for name, store in zip(("a", "b"), stores, strict=True)]
    try:
        assert drains[0].round() == 0.0  # joins the group, nothing pending to it
        drains[0].round()
        for i in range(150):  # 50 read, the rest never
            client.xadd(packed_key(key), {FIELD: pack([(IMEI, f"{i:015d}", 1.0)])[0]})
            client.xadd(key, {"imei": IMEI, "imsi": f"{i:015d}", "ts": "1.0"})
        if read_before:
            client.xreadgroup(GROUP, "a", {key: ">", packed_key(key): ">"}, count=read_before)
        for _ in range(1_000):  # a writer's cap, trimmed by whole nodes of 100 entries
            client.xadd(packed_key(key), {FIELD: pack([(IMEI, "1", 2.0)])[0]}, maxlen=200,
                        approximate=True)
            client.xadd(key, {"imei": IMEI, "imsi": "1", "ts": "2.0"}, maxlen=200,
                        approximate=True)
        kept = [client.xlen(k) for k in drains[0].keys]
        capsys.readouterr()
        for _ in range(20):  # the 50 read and trimmed first (skipped), then the rest
            drains[0].round()
        told = [(int(n), k) for n, k in re.findall(r"(\d+) entries of (\S+)",
                                                  capsys.readouterr().err)]
        assert sorted(told) == sorted(zip([1_150 - read_before - n for n in kept], drains[0].keys,
                                               strict=True))
        for k in drains[0].keys:
            client.xadd(k, {FIELD: pack([(IMEI, "2", 3.0)])[0]} if "v2" in k
                        else {"imei": IMEI, "imsi": "2", "ts": "3.0"})
        for drain in drains:
            for _ in range(3):
                drain.round()
        assert "trimmed" not in capsys.readouterr().err
    finally:
        client.close()
        for store in stores:
            store.close()


@pytest.mark.parametrize(("imei", "ts"), [
    (IMEI, "nan"), (IMEI, "NaN"), (IMEI, "inf"), (IMEI, "-Infinity"), (IMEI, "1e999"),
    (IMEI, "1e300"), (IMEI, "253402300800"), (IMEI, "-1"),  # not a time a report prints
    ("3520990017614x", "1733378000.5"), ("", "1733378000.5"), ("٣٥٢٠٩٩", "1733378000.5"),
])
def test_a_v1_entry_that_is_not_a_sighting_is_skipped(
    redis_server: RedisServer, tmp_path: Path, imei: str, ts: str,
) -> None:
    """float() takes "nan" and "inf": a v1 entry holding one (a writer that is not a gateway)
    was taken as a sighting; SQLite stores NaN as NULL, its NOT NULL refused the whole batch,
    read again and refused for ever, and nothing after it was written (infinity was written,
    a time past every other). An IMEI that is not decimal digits was written as well (v2 reads
    only digits there)."""
    key = "n:observations"
    drain, store, reports = _drain(redis_server, tmp_path, key, "a")
    client = drain.redis
    try:
        drain.round()  # joins the group
        client.xadd(key, {"imei": imei, "imsi": "001010000000001", "ts": ts})
        client.xadd(key, {"imei": IMEI, "imsi": "001010000000002", "ts": "1733378000.5"})
        for _ in range(3):
            drain.round()
        assert reports == [(1, True)]
        assert list(_sqlite_rows(tmp_path / "o.sqlite")) == [(IMEI, "001010000000002")]
    finally:
        client.close()
        store.close()


def _drain(redis_server: RedisServer, tmp_path: Path, key: str,
           consumer: str) -> tuple[Any, SqliteObservations, list[tuple[int, bool]]]:
    """A writer's drain of ``key`` as ``consumer`` into an SQLite store (its client, redis-py's
    blocking one, is ``drain.redis``), what it reports."""
    import threading

    import redis

    from gateway.stream_drain import DrainSettings, StreamDrain

    store = SqliteObservations(tmp_path / "o.sqlite")
    reports: list[tuple[int, bool]] = []
    drain = StreamDrain(DrainSettings(redis_server.url, key, consumer), store, threading.Lock(),
                        lambda n, ok: reports.append((n, ok)),
                        client=redis.Redis.from_url(redis_server.url))
    return drain, store, reports


def test_an_imsi_with_a_nul_does_not_stall_the_postgresql_writer(
    redis_server: RedisServer, postgres_dsn: str,
) -> None:
    """User-Name is any UTF-8, NUL included (RFC 6733 §4.3.1), and PostgreSQL's text cannot
    hold a NUL: the batch holding one was refused whole, read again and refused for ever, and
    nothing after it was written. Now the NUL is stored as U+FFFD, the sighting kept."""
    import threading

    import redis

    from gateway.pg.observations import PgObservations
    from gateway.stream_drain import DrainSettings, StreamDrain

    key = "z:observations"
    store = PgObservations(postgres_dsn)
    reports: list[tuple[int, bool]] = []
    drain = StreamDrain(DrainSettings(redis_server.url, key, "a"), store, threading.Lock(),
                        lambda n, ok: reports.append((n, ok)),
                        client=redis.Redis.from_url(redis_server.url))
    try:
        drain.round()  # joins the group
        drain.redis.xadd(packed_key(key), {FIELD: pack([(IMEI, "0010\x001", 1.0)])[0]})
        drain.redis.xadd(packed_key(key), {FIELD: pack([(IMEI, "001010000000002", 2.0)])[0]})
        for _ in range(3):
            drain.round()
        assert reports == [(2, True)]
        assert _pg_rows(postgres_dsn) == {(IMEI, "0010\ufffd1"): (1.0, 1.0, 1),
                                          (IMEI, "001010000000002"): (2.0, 2.0, 1)}
    finally:
        drain.redis.close()
        store.close()


def test_a_redis_restarted_empty_is_drained_again_from_its_first_entry(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """Redis restarted without persistence: the group is gone with the stream. What gateways
    append once it is back (creating the stream before the drain makes the group again) is
    all written, once the drain's next read met NOGROUP."""
    key = "r:observations"
    drain, store, reports = _drain(redis_server, tmp_path, key, "a")
    drain.settings = dataclasses.replace(drain.settings, retry_interval=0.05)
    try:
        drain.round()  # joins the group
        drain.redis.xadd(packed_key(key), {FIELD: pack([(IMEI, "001010000000001", 1.0)])[0]})
        drain.round()
        redis_server.stop()
        redis_server.start()  # same port, empty
        drain.redis.xadd(packed_key(key), {FIELD: pack([(IMEI, "001010000000002", 2.0)])[0]})
        drain.start()
        deadline = time.monotonic() + 10
        while sum(n for n, _ in reports) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        drain.stop(10)
        assert reports == [(1, True), (1, True)]
        assert set(_sqlite_rows(tmp_path / "o.sqlite")) == {(IMEI, "001010000000001"),
                                                            (IMEI, "001010000000002")}
    finally:
        drain.redis.close()
        store.close()
