"""The observation log's writer process: the wire between it and the gateway (sans-IO), the
writer's handling of messages, and the process itself (crash and restart, signals, a writer
that does not keep up, lookups in order with the writes)."""

from __future__ import annotations

import asyncio
import logging
import marshal
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import observation_process
from gateway import observation_wire as wire
from gateway.observation_process import ObservationProcessLog, WriterFailed
from gateway.observation_writer import Writer
from gateway.observations import LastImsi, SqliteObservations

texts = st.text(max_size=40)
numbers = st.floats(allow_nan=False, allow_infinity=False)
aggregates = st.dictionaries(
    st.tuples(texts, texts), st.tuples(numbers, numbers, st.integers(1, 2**62)), max_size=60
)


@given(aggregates)
def test_pairs_round_trip(aggregate: dict[tuple[str, str], tuple[float, float, int]]) -> None:
    decoded = wire.decode_pairs(wire.encode_pairs(aggregate))
    assert decoded == [(imei, imsi, a, b, n) for (imei, imsi), (a, b, n) in aggregate.items()]


@given(st.dictionaries(st.tuples(texts, st.text(max_size=3000)),
                       st.tuples(numbers, numbers, st.integers(1, 99)), max_size=2_500))
def test_slices_hold_every_pair_in_order_and_fit(
    aggregate: dict[tuple[str, str], tuple[float, float, int]],
) -> None:
    messages = wire.encode_slices(aggregate)
    rows = [row for message, _ in messages for row in wire.decode_pairs(message)]
    assert rows == [(imei, imsi, a, b, n) for (imei, imsi), (a, b, n) in aggregate.items()]
    for message, count in messages:
        assert len(wire.decode_pairs(message)) == count <= wire.SLICE_PAIRS
        assert len(message) <= wire.MAX_MESSAGE or count == 1


@given(st.lists(st.tuples(texts, numbers), max_size=50))
def test_lookups_round_trip(lookups: list[tuple[str, float]]) -> None:
    assert wire.decode_lookups(wire.encode_lookups(lookups)) == lookups


@given(st.lists(st.one_of(
    st.tuples(st.none(), st.booleans()),
    st.tuples(st.tuples(texts, numbers), st.just(False)),
), max_size=50))
def test_answers_round_trip(answers: list[tuple[LastImsi, bool]]) -> None:
    assert wire.decode_found(wire.encode_found(answers)) == answers
    assert wire.decode_written(wire.encode_written(3, 7, True)) == (3, 7, True)


def test_garbled_messages_are_refused() -> None:
    message = wire.encode_pairs({("35209900176148", "001010123456789"): (1.0, 2.0, 3)})
    for bad in (message[:3], message[:-1], message[:20], bytes((wire.LOOKUPS,)) + message[1:],
                b"", bytes((wire.PAIRS,)) + b"\xff\xfe",
                wire.encode_lookups([("35209900176148", 1.0)]).replace(b"L", b"P", 1)):
        with pytest.raises(wire.WireError):
            wire.decode_pairs(bad)
    with pytest.raises(wire.WireError):
        wire.decode_found(bytes((wire.FOUND,)) + marshal.dumps([(1, 2, 3)]))
    with pytest.raises(wire.WireError):
        wire.decode_lookups(bytes((wire.LOOKUPS,)) + marshal.dumps({"a": 1}))
    with pytest.raises(wire.WireError):
        wire.decode_written(wire.encode_written(1, 1, True)[:-1])
    assert wire.lookups_in(b"L") == 0


def test_writer_answers_lookups_after_the_writes_before_them(tmp_path: Path) -> None:
    writer = Writer(SqliteObservations(tmp_path / "o.sqlite"))
    imei = "35209900176148"
    first = wire.encode_pairs({(imei, "001010000000001"): (10.0, 20.0, 2)})
    second = wire.encode_pairs({(imei, "001010000000002"): (30.0, 30.0, 1)})
    ask = wire.encode_lookups([(imei, 100.0), (imei, 25.0), ("35209900000000", 100.0)])
    answers = writer.handle([first, ask, second, wire.encode_lookups([(imei, 100.0)])])
    assert len(answers) == 4
    assert wire.decode_written(answers[0]) == (1, 2, True)
    assert wire.decode_found(answers[1]) == [
        (("001010000000001", 20.0), False), (("001010000000001", 20.0), False), (None, False)]
    assert wire.decode_written(answers[2]) == (1, 1, True)
    assert wire.decode_found(answers[3]) == [(("001010000000002", 30.0), False)]
    # Back-to-back slices are one transaction; one garbled slice fails its transaction only.
    answers = writer.handle([first, first, first[:-2], second])
    assert answers == [wire.encode_written(4, 0, False)]
    assert writer.handle([first, second]) == [wire.encode_written(2, 3, True)]
    assert writer.store.history(imei) == [("001010000000001", 10.0, 20.0, 4),
                                          ("001010000000002", 30.0, 30.0, 2)]


def _count(db: Path) -> tuple[int, int]:
    row = sqlite3.connect(db).execute("SELECT count(*), sum(count) FROM observations").fetchone()
    return int(row[0]), int(row[1] or 0)


async def _until(condition: object, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")


def _record(log: ObservationProcessLog, start: int, n: int) -> None:
    for i in range(start, start + n):
        assert log.record(f"35209900{i:06d}", "001010000000001", now=float(i))


async def test_a_writer_that_dies_is_restarted_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "eir.observations")
    db = tmp_path / "o.sqlite"
    log = ObservationProcessLog(db, batch_size=100, flush_interval=0.05)
    log.start()
    try:
        _record(log, 0, 1_000)
        assert log.flush() == 1_000
        assert log._process is not None
        first = log._process.pid
        os.kill(first, signal.SIGKILL)
        _record(log, 1_000, 1_000)  # handed over while the writer is dead or restarting
        await _until(lambda: log.stats.writer_restarts == 1 and log._process is not None
                     and log._process.pid != first and log.waiting == 0)
        found: list[tuple[LastImsi, bool]] = []
        log.last_imsi("35209900001500", 1e9, lambda f, failed: found.append((f, failed)))
        await _until(lambda: found)
        assert found == [(("001010000000001", 1500.0), False)]
        lines = [r.getMessage() for r in caplog.records]
        assert any(f"process {first} ended" in line and "restarting" in line for line in lines)
        assert any("started again" in line for line in lines)
    finally:
        log.close()
    assert _count(db) == (2_000, 2_000)
    assert log.stats.written == 2_000 and log.stats.errors == 0


async def test_a_handed_over_aggregate_is_encoded_one_slice_per_loop_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []
    encode_slices = wire.encode_slices

    def counting(aggregate: dict[tuple[str, str], tuple[float, float, int]]) -> list[
        tuple[bytes, int]
    ]:
        encoded.append(len(aggregate))
        return encode_slices(aggregate)

    monkeypatch.setattr(wire, "encode_slices", counting)
    db = tmp_path / "o.sqlite"
    log = ObservationProcessLog(db, batch_size=1_000, flush_interval=60)
    log.start()
    try:
        await _until(lambda: log._attached)
        _record(log, 0, 1_000)  # the 1,000th pair hands the aggregate over
        assert encoded == [wire.SLICE_PAIRS]  # the rest waits for the loop's next callbacks
        await asyncio.sleep(0)
        assert encoded == [wire.SLICE_PAIRS] * 2
        found: list[tuple[LastImsi, bool]] = []
        log.last_imsi("35209900000999", 1e9, lambda f, failed: found.append((f, failed)))
        await _until(lambda: found)  # answered after every slice handed before it
        assert found == [(("001010000000001", 999.0), False)]
        assert encoded == [wire.SLICE_PAIRS] * 10
    finally:
        log.close()
    assert _count(db) == (1_000, 1_000) and log.stats.written == 1_000


async def test_the_writer_ignores_sigterm_and_writes_everything_at_close(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite"
    log = ObservationProcessLog(db, batch_size=100, flush_interval=60)
    log.start()
    assert log._process is not None
    await asyncio.sleep(0.1)
    os.kill(log._process.pid, signal.SIGTERM)  # as systemd signals the whole group
    _record(log, 0, 5_050)
    await asyncio.sleep(0.2)
    assert log._process.poll() is None and log.stats.writer_restarts == 0
    process = log._process
    log.close(10.0)
    assert process.returncode == 0
    assert _count(db) == (5_050, 5_050) and log.stats.written == 5_050


async def test_a_stalled_writer_never_blocks_the_loop_and_drops_past_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observation_process, "SEND_BUFFER", 100_000)  # holds a few slices
    db = tmp_path / "o.sqlite"
    log = ObservationProcessLog(db, queue_size=30_000, batch_size=1_000, flush_interval=60)
    log.start()
    await asyncio.sleep(0.05)
    assert log._process is not None
    os.kill(log._process.pid, signal.SIGSTOP)
    try:
        results = [log.record(f"35209900{i:06d}", "001010000000002", now=float(i))
                   for i in range(50_000)]  # ~2 MB of slices: more than the socket holds
        assert results == [True] * 30_000 + [False] * 20_000
        assert log.stats.dropped == 20_000 and log.waiting == 30_000
        assert log._outgoing  # what the socket could not take waits, in order
    finally:
        os.kill(log._process.pid, signal.SIGCONT)
    await _until(lambda: log.waiting == 0)
    assert log.record("35209900999999", "001010000000002", now=1.0)  # room again
    log.close()
    assert _count(db) == (30_001, 30_001)


async def test_a_writer_that_cannot_open_the_database_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    log = ObservationProcessLog(tmp_path / "file" / "o.sqlite")
    with pytest.raises(WriterFailed, match=r"o\.sqlite"):
        log.start()
    failed: list[bool] = []
    log.last_imsi("35209900176148", 1.0, lambda _, f: failed.append(f))
    assert failed == [True]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_writer_is_a_process_of_its_own_at_the_lowest_priority(tmp_path: Path) -> None:
    log = ObservationProcessLog(tmp_path / "o.sqlite")
    log.start()
    try:
        assert log._process is not None and log._process.pid != os.getpid()
        stat = Path(f"/proc/{log._process.pid}/stat").read_text()
        assert int(stat.rpartition(")")[2].split()[16]) == 19  # nice, field 19 of proc(5)
        # and the idle policy: a waking event loop preempts it at once
        assert os.sched_getscheduler(log._process.pid) == os.SCHED_IDLE
    finally:
        log.close()
    assert log._process.returncode == 0


async def test_lookups_outstanding_at_close_are_answered_on_the_loop_thread(
    tmp_path: Path,
) -> None:
    log = ObservationProcessLog(tmp_path / "o.sqlite", flush_interval=60)
    log.start()
    await asyncio.sleep(0.05)
    _record(log, 0, 10)
    log._hand_over()
    answered: list[tuple[LastImsi, bool, int]] = []
    for imei in ("35209900000003", "35209900999999"):
        log.last_imsi(imei, 1e9, lambda f, failed: answered.append(
            (f, failed, threading.get_ident())))
    await asyncio.to_thread(log.close)  # as the gateway stops: from another thread
    await _until(lambda: len(answered) == 2)
    assert answered == [(("001010000000001", 3.0), False, threading.get_ident()),
                        (None, False, threading.get_ident())]


async def test_flush_from_another_thread_while_the_loop_drives_the_writer(tmp_path: Path) -> None:
    # The API's reads flush from a worker thread (asyncio.to_thread) while the loop's reader is
    # attached to the socket: both must not wait for the same answer.
    db = tmp_path / "o.sqlite"
    log = ObservationProcessLog(db, batch_size=100, flush_interval=60)
    log.start()
    await _until(lambda: log._attached)
    try:
        for round_ in range(20):
            _record(log, round_ * 50, 50)
            written = await asyncio.wait_for(asyncio.to_thread(log.flush), 10)
            assert written == 50
            await asyncio.sleep(0)  # the loop's reader may run between flushes
    finally:
        log.close()
    assert _count(db) == (1_000, 1_000)
