"""new_imsi backed by the observation log: the detector's rules on a scripted history, a
hypothesis property against an unbounded reference, the real log (SQLite) after a restart, an
eviction and another worker's sightings, and a gateway restarted on its state directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncio_dgram
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events.detector import EventDetector
from gateway.events.model import DecisionEvent, EventType
from gateway.events.new_imsi import LookupOutcome, NewImsiDetector, Reply, Sighting
from gateway.observations import ObservationLog
from tests.e2e.conftest import StartGateway, connect_mme, start_gateway  # noqa: F401
from tests.events.test_events import parse_syslog

IMEI_A, IMEI_B, IMEI_C = "35209900000018", "35209900000026", "35209900000034"
IMSI_1, IMSI_2, IMSI_3 = "001010000000001", "001010000000002", "001010000000003"


def check(imei: str, imsi: str, at: float) -> DecisionEvent:
    return DecisionEvent(EventType.NEW_IMSI, at, imei, imsi, "WHITELISTED", "clean", None, "s13")


class ScriptedHistory:
    """Lookups wait until the test answers them."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float, Reply]] = []

    def last_imsi(self, imei: str, before: float, reply: Reply) -> None:
        self.asked.append((imei, before, reply))

    def answer(self, found: Sighting, failed: bool = False) -> None:
        _, _, reply = self.asked.pop(0)
        reply(found, failed)


def detector(history: ScriptedHistory | None, memory: int = 100,
             max_lookups: int = 10) -> tuple[NewImsiDetector, list[DecisionEvent]]:
    emitted: list[DecisionEvent] = []
    return NewImsiDetector(emitted.append, memory, history, max_lookups), emitted


def pairs(events: list[DecisionEvent]) -> list[tuple[str, str | None, str | None]]:
    return [(e.imei, e.previous_imsi, e.imsi) for e in events]


def test_an_imei_not_remembered_is_asked_and_decided_after_the_answer() -> None:
    history = ScriptedHistory()
    new_imsi, emitted = detector(history)
    new_imsi.observe(check(IMEI_A, IMSI_2, 10.0))
    new_imsi.observe(check(IMEI_A, IMSI_3, 11.0))  # waits behind the lookup, in order
    new_imsi.observe(check(IMEI_A, IMSI_3, 12.0))
    assert emitted == [] and [(i, b) for i, b, _ in history.asked] == [(IMEI_A, 10.0)]
    history.answer((IMSI_1, 5.0))  # seen with IMSI_1 before the restart
    assert pairs(emitted) == [(IMEI_A, IMSI_1, IMSI_2), (IMEI_A, IMSI_2, IMSI_3)]
    assert new_imsi.lookups[LookupOutcome.SEEN] == 1 and new_imsi.in_flight == 0
    new_imsi.observe(check(IMEI_A, IMSI_3, 13.0))  # remembered, same IMSI: nothing asked
    assert history.asked == [] and len(emitted) == 2


def test_first_sighting_and_failed_lookup_raise_nothing() -> None:
    history = ScriptedHistory()
    new_imsi, emitted = detector(history)
    new_imsi.observe(check(IMEI_A, IMSI_1, 1.0))
    new_imsi.observe(check(IMEI_B, IMSI_1, 1.0))
    history.answer(None)
    history.answer(None, failed=True)
    assert emitted == []
    assert new_imsi.lookups[LookupOutcome.UNSEEN] == 1
    assert new_imsi.lookups[LookupOutcome.FAILED] == 1
    new_imsi.observe(check(IMEI_B, IMSI_2, 2.0))  # remembered IMSI_1, now IMSI_2: verified
    history.answer((IMSI_1, 1.0))
    assert pairs(emitted) == [(IMEI_B, IMSI_1, IMSI_2)]


def test_the_later_sighting_wins() -> None:
    """Another worker saw IMSI_2 after this one remembered IMSI_1: IMSI_2 is no news."""
    history = ScriptedHistory()
    new_imsi, emitted = detector(history)
    new_imsi.observe(check(IMEI_A, IMSI_1, 1.0))
    history.answer(None)
    new_imsi.observe(check(IMEI_A, IMSI_2, 9.0))
    history.answer((IMSI_2, 5.0))  # the log's sighting (5.0) is later than ours (1.0)
    assert emitted == []
    new_imsi.observe(check(IMEI_A, IMSI_1, 10.0))
    history.answer((IMSI_1, 1.0))  # ours (9.0, IMSI_2) is later than the log's
    assert pairs(emitted) == [(IMEI_A, IMSI_2, IMSI_1)]


def test_bounded_lookups_and_memory() -> None:
    history = ScriptedHistory()
    new_imsi, emitted = detector(history, memory=2, max_lookups=1)
    new_imsi.observe(check(IMEI_A, IMSI_1, 1.0))
    new_imsi.observe(check(IMEI_B, IMSI_1, 1.0))  # a second lookup: over the bound
    assert len(history.asked) == 1 and new_imsi.lookups[LookupOutcome.SKIPPED] == 1
    history.answer(None)
    new_imsi.observe(check(IMEI_C, IMSI_1, 2.0))
    history.answer(None)
    assert len(new_imsi._last) == 2 and emitted == []


def test_memory_alone_without_a_log() -> None:
    new_imsi, emitted = detector(None, memory=1)
    new_imsi.observe(check(IMEI_A, IMSI_1, 1.0))
    new_imsi.observe(check(IMEI_A, IMSI_2, 2.0))
    new_imsi.observe(check(IMEI_B, IMSI_1, 3.0))  # forgets IMEI_A
    new_imsi.observe(check(IMEI_A, IMSI_3, 4.0))
    assert pairs(emitted) == [(IMEI_A, IMSI_1, IMSI_2)]
    assert sum(new_imsi.lookups.values()) == 0


class PerfectLog:
    """A log holding every observation recorded before a lookup is asked (what the writer's
    ordering guarantees), answering after a delay the test chooses."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, float]] = {}
        self.waiting: list[tuple[Reply, Sighting]] = []

    def record(self, imei: str, imsi: str, at: float) -> None:
        self.last[imei] = (imsi, at)

    def last_imsi(self, imei: str, before: float, reply: Reply) -> None:
        self.waiting.append((reply, self.last.get(imei)))

    def answer(self, index: int) -> None:
        reply, found = self.waiting.pop(index % len(self.waiting))
        reply(found, False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([IMEI_A, IMEI_B, IMEI_C]),
                       st.sampled_from([IMSI_1, IMSI_2, IMSI_3]),
                       st.lists(st.integers(0, 5), max_size=3)), max_size=40),
    st.integers(1, 3),
)
def test_same_events_as_an_unbounded_memory(
    script: list[tuple[str, str, list[int]]], memory: int
) -> None:
    """Whatever the memory size and whenever the lookups are answered, the events are those of
    a detector that remembers everything: per IMEI, each change of IMSI, in order."""
    log = PerfectLog()
    new_imsi, emitted = detector(None, memory=memory, max_lookups=100)
    new_imsi.history = log
    reference: list[tuple[str, str | None, str | None]] = []
    last: dict[str, str] = {}
    for n, (imei, imsi, answers) in enumerate(script):
        if last.get(imei, imsi) != imsi:
            reference.append((imei, last[imei], imsi))
        last[imei] = imsi
        new_imsi.observe(check(imei, imsi, float(n)))
        log.record(imei, imsi, float(n))  # after the check, as the S13 handler does
        for index in answers:
            if log.waiting:
                log.answer(index)
    while log.waiting:
        log.answer(0)
    got = pairs(emitted)
    for imei in (IMEI_A, IMEI_B, IMEI_C):
        assert [p for p in got if p[0] == imei] == [p for p in reference if p[0] == imei]
    assert len(new_imsi._last) <= memory and new_imsi.in_flight == 0


# -- the real observation log ---------------------------------------------------------------------

async def observed(
    log: ObservationLog, new_imsi: NewImsiDetector, emitted: list[DecisionEvent],
    imei: str, imsi: str, at: float,
) -> list[DecisionEvent]:
    """A check as the S13 handler makes it (event detection, then the observation), and the
    events emitted once the lookup it may have started is answered (bounded wait)."""
    before = len(emitted)
    new_imsi.observe(check(imei, imsi, at))
    log.record(imei, imsi, at)
    for _ in range(500):
        if new_imsi.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert new_imsi.in_flight == 0
    return emitted[before:]


async def test_restart_eviction_and_another_worker_with_the_real_log(tmp_path: Path) -> None:
    database = tmp_path / "observations.sqlite"
    before = ObservationLog(database)
    before.start()
    before.record(IMEI_A, IMSI_1, 100.0)
    before.record(IMEI_B, IMSI_1, 100.0)
    before.close()  # the gateway stops; its log is written

    log = ObservationLog(database, flush_interval=0.05)
    log.start()
    other_worker = ObservationLog(database)
    other_worker.start()
    try:
        new_imsi, emitted = detector(None, memory=1)
        new_imsi.history = log
        # After the restart: the same IMSI is no news, another one is (memory was empty).
        assert await observed(log, new_imsi, emitted, IMEI_A, IMSI_1, 200.0) == []
        [event] = await observed(log, new_imsi, emitted, IMEI_B, IMSI_2, 201.0)
        assert (event.previous_imsi, event.imsi) == (IMSI_1, IMSI_2)
        # IMEI_A was pushed out of a memory of 1; once written, the log remembers it.
        log.flush()
        [event] = await observed(log, new_imsi, emitted, IMEI_A, IMSI_3, 202.0)
        assert (event.imei, event.previous_imsi) == (IMEI_A, IMSI_1)
        # Another worker (its own log writer on the same database) sees IMEI_A with IMSI_2;
        # this one, remembering IMSI_3, then sees IMSI_2 too: not new, the log has it later.
        other_worker.record(IMEI_A, IMSI_2, 203.0)
        other_worker.flush()
        assert await observed(log, new_imsi, emitted, IMEI_A, IMSI_2, 204.0) == []
        assert new_imsi.lookups[LookupOutcome.SEEN] == 4
        assert new_imsi.lookups[LookupOutcome.FAILED] == 0
    finally:
        other_worker.close()
        log.close()


async def test_lookups_are_answered_in_order_with_writes_and_at_close(tmp_path: Path) -> None:
    log = ObservationLog(tmp_path / "o.sqlite", batch_size=2, flush_interval=60)
    log.start()
    answers: list[tuple[Sighting, bool]] = []

    def reply(found: Sighting, failed: bool) -> None:
        answers.append((found, failed))

    log.record(IMEI_A, IMSI_1, 1.0)
    log.record(IMEI_B, IMSI_1, 1.0)  # a batch of 2: handed to the writer
    log.last_imsi(IMEI_A, 2.0, reply)  # asked after the hand-over: sees it
    log.record(IMEI_A, IMSI_2, 3.0)
    log.record(IMEI_C, IMSI_2, 3.0)  # handed after the question: not seen by it
    for _ in range(500):
        if answers:
            break
        await asyncio.sleep(0.01)
    assert answers == [((IMSI_1, 1.0), False)]
    log.last_imsi(IMEI_A, 1.0, reply)  # nothing before 1.0
    await asyncio.to_thread(log.close)  # answered by the close's flush
    await asyncio.sleep(0)
    assert answers[1] == (None, False)
    log.last_imsi(IMEI_A, 5.0, reply)  # closed: a failed lookup, answered at once
    assert answers[2] == (None, True)


async def test_gateway_restarted_on_its_state_remembers_imsis(
    tmp_path: Path, start_gateway: StartGateway,  # noqa: F811
) -> None:
    """A handset checked with one IMSI, the gateway restarted on the same state directory, the
    handset checked with another: a new_imsi event naming the first (memory alone, before,
    raised nothing here); the same IMSI again raises nothing."""
    server = await asyncio_dgram.bind(("127.0.0.1", 0))
    port = server.sockname[1]
    env: dict[str, str] = dict(
        EIR_EVENTS_TYPES="new_imsi", EIR_EVENTS_SYSLOG=f"udp://127.0.0.1:{port}",
        EIR_STATE_DIRECTORY=str(tmp_path / "state"),
    )
    imei = "35209900000018"
    try:
        first = await start_gateway(**env)
        mme = await connect_mme(first)
        await mme.check(imei, imsi=IMSI_1)
        await mme.close()
        await first.stop()
        second = await start_gateway(**env)
        mme = await connect_mme(second)
        try:
            await mme.check(imei, imsi=IMSI_2)
            await mme.check(imei, imsi=IMSI_2)
        finally:
            await mme.close()
        data, _ = await asyncio.wait_for(server.recv(), 10)
        got = parse_syslog(data.decode())
        assert got["msgid"] == "new_imsi"
        assert got["params"]["imsi"] == "00101**********"
        assert got["params"]["previousImsi"] == "00101**********"
        assert second.events is not None
        assert second.events.raised[EventType.NEW_IMSI] == 1
        lookups = second.events.detector.new_imsi.lookups
        assert lookups[LookupOutcome.SEEN] == 1
    finally:
        server.close()


def test_detector_returns_what_it_decides_at_once_and_hands_on_the_rest() -> None:
    history = ScriptedHistory()
    later: list[DecisionEvent] = []
    events = EventDetector([EventType.NEW_IMSI], history=history)
    events.later = later.append
    events.new_imsi.observe(check(IMEI_A, IMSI_1, 1.0))
    history.answer((IMSI_2, 0.5))
    assert [(e.previous_imsi, e.imsi) for e in later] == [(IMSI_2, IMSI_1)]
