"""Hypothesis state machines: the RFC 3539 §3.4.1 watchdog and the RFC 6733 §5.6 peer state
machine driven by random orders of events, checked after every step against invariants read off
the RFCs' tables (not against a second copy of the tables)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from diameter.codec import FLAG_PROXIABLE, Avp, Message
from diameter.events import AnswerReceived, PeerDown, PeerUp, RequestReceived
from diameter.peer import TRANSITIONS, Peer, PeerState, Role
from diameter.watchdog import TW_MINIMUM, Watchdog, WatchdogAction, WatchdogState, WatchdogTimer
from tests.diameter.test_peer_helpers import (
    MME_HOST,
    REALM,
    REMOTE,
    S13,
    Recorder,
    answers,
    base_request,
    cer,
    ecr,
    ecr_message,
    eir_node,
    mme_node,
    serve,
)

STATEFUL = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------------------------
# RFC 3539 §3.4.1 watchdog

TW, JITTER = 30.0, 2.0


class WatchdogMachine(RuleBasedStateMachine):
    """Connection up/down, DWA and other messages received, and Tw expiring, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.dog = Watchdog(WatchdogTimer(TW, JITTER), random.Random(3))
        self.silent_expiries = 0  # Tw expiries since a message was last received (or conn. up)
        self.dwas_in_reopen = 0
        self.dwr_outstanding = False  # a DWR sent and nothing received since

    def _apply(self, actions: list[WatchdogAction], before: WatchdogState) -> None:
        after = self.dog.state
        if WatchdogAction.SEND_WATCHDOG in actions:
            # [2]: a DWR is sent only when none is pending; it is never resent.
            assert not self.dwr_outstanding or before is WatchdogState.DOWN
            self.dwr_outstanding = True
        if WatchdogAction.FAILOVER in actions:
            assert before is WatchdogState.OKAY and after in (
                WatchdogState.SUSPECT,
                WatchdogState.DOWN,
            )
        if WatchdogAction.FAILBACK in actions:
            assert after is WatchdogState.OKAY
            assert before in (WatchdogState.SUSPECT, WatchdogState.REOPEN)
        if before is WatchdogState.REOPEN and after is WatchdogState.OKAY:
            # RFC 3539 §3.4.1 / RFC 6733 §5.1: three watchdog exchanges before failback.
            assert self.dwas_in_reopen >= 3
        if after is WatchdogState.REOPEN and before is not WatchdogState.REOPEN:
            self.dwas_in_reopen = 0

    @rule()
    def connection_up(self) -> None:
        before = self.dog.state
        actions = self.dog.connection_up(self.now) if (
            before in (WatchdogState.INITIAL, WatchdogState.DOWN)
        ) else []
        if before in (WatchdogState.INITIAL, WatchdogState.DOWN):
            self.silent_expiries = 0
            self.dwr_outstanding = False
        self._apply(actions, before)

    @rule()
    def connection_down(self) -> None:
        before = self.dog.state
        actions = self.dog.connection_down(self.now)
        assert self.dog.state in (WatchdogState.DOWN, WatchdogState.INITIAL)
        self.dwr_outstanding = False
        self._apply(actions, before)

    # Nothing is received on a connection that is down (DOWN has no receive rows).
    @precondition(lambda self: self.dog.state is not WatchdogState.DOWN)
    @rule(is_dwa=st.booleans(), wait=st.floats(0.0, TW - JITTER - 0.001))
    def receive(self, is_dwa: bool, wait: float) -> None:
        deadline = self.dog.deadline
        self.now = self.now + wait if deadline is None else min(self.now + wait, deadline)
        before = self.dog.state
        actions = self.dog.receive(is_dwa, self.now)
        # REOPEN throws non-DWA messages away: they prove nothing about the connection.
        if before is not WatchdogState.INITIAL and (is_dwa or before is not WatchdogState.REOPEN):
            self.silent_expiries = 0
            if is_dwa:
                self.dwr_outstanding = False  # only a DWA answers the DWR (Pending = FALSE)
        if before is WatchdogState.REOPEN and is_dwa:
            self.dwas_in_reopen += 1
        if before is WatchdogState.OKAY and not is_dwa:
            # [1]: "any received message resets Tw".
            assert self.dog.deadline is not None
            assert TW - JITTER <= self.dog.deadline - self.now <= TW + JITTER
        self._apply(actions, before)

    @precondition(lambda self: self.dog.deadline is not None)
    @rule()
    def expire(self) -> None:
        assert self.dog.deadline is not None
        self.now = self.dog.deadline
        before = self.dog.state
        actions = self.dog.expire(self.now)
        self.silent_expiries += 1
        if WatchdogAction.CLOSE_CONNECTION in actions:
            # [4]: not closed until Tw expired twice without an answer to the DWR.
            assert self.silent_expiries >= 2
            assert self.dog.state is WatchdogState.DOWN
        self._apply(actions, before)

    @invariant()
    def tw_within_bounds(self) -> None:
        # [3]: Tw = Twinit (never below 6 s) +- jitter of at most 2 s, from the last SetWatchdog.
        deadline = self.dog.deadline
        if deadline is not None:
            assert deadline - self.now <= TW + JITTER
            assert deadline >= self.now
        assert TW_MINIMUM <= TW - JITTER

    @invariant()
    def pending_means_a_dwr_unanswered(self) -> None:
        if self.dog.state is not WatchdogState.DOWN:
            assert self.dog.pending == self.dwr_outstanding


TestWatchdogMachine = WatchdogMachine.TestCase
TestWatchdogMachine.settings = settings(STATEFUL, max_examples=100)


# ---------------------------------------------------------------------------------------------
# RFC 6733 §5.6 peer state machine, responder side, against an arbitrary MME

# Every state change the table allows (by some event); closing the connection outside the table
# (unframeable data, watchdog, Stop mid-election) may lead to Closed from anywhere.
TABLE_MOVES = {(state, next_state) for (state, _), (_, next_state) in TRANSITIONS.items()}


class ResponderMachine(RuleBasedStateMachine):
    """An EIR connection fed whatever an MME might send, whenever, with time moving on."""

    @initialize()
    def start(self) -> None:
        self.now = 0.0
        self.node = eir_node(watchdog_interval=6.0, watchdog_jitter=0.0, dpa_timeout=5.0)
        self.peer = Peer(self.node, Role.RESPONDER, self.now, remote_address=REMOTE)
        self.pending: list[RequestReceived] = []
        self.sent_requests: set[int] = set()  # Hop-by-Hop of requests we (the MME) sent
        self.dwrs: list[Message] = []  # DWRs the EIR sent
        self.dpr: Message | None = None
        self.went_down = False
        self.garbled = False
        self.hop = 0x1000

    def _next_hop(self) -> int:
        self.hop += 1
        return self.hop

    def _feed(self, data: bytes, is_request: bool, hop_by_hop: int | None = None) -> None:
        before = self.peer.state
        if hop_by_hop is not None and is_request:
            self.sent_requests.add(hop_by_hop)
        events = self.peer.receive_data(data, self.now)
        self._events(events, before)

    def _events(self, events: list[object], before: PeerState) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                # §5.6: Process only in R-Open; not before the CER, not in Closing (issue 15).
                assert before is PeerState.R_OPEN
                self.pending.append(event)
            elif isinstance(event, PeerUp):
                assert self.peer.state is PeerState.R_OPEN
            elif isinstance(event, PeerDown):
                assert not self.went_down, "one PeerDown per connection"
                self.went_down = True
        self._drain()

    def _drain(self) -> None:
        for message in answers(self.peer):
            if message.is_request:
                # The EIR's own requests: DWR (watchdog) and DPR (Stop), only once open.
                assert message.command_code in (280, 282), message
                if message.command_code == 280:
                    self.dwrs.append(message)
                else:
                    assert self.dpr is None, "one DPR"
                    self.dpr = message
            elif not self.garbled:
                # An answer only to a request of ours, copying its Hop-by-Hop (§3, §6.2).
                # (After garbage, the framer reads a header out of it: 5011/5015 to that.)
                assert message.hop_by_hop in self.sent_requests, message

    # -- what the MME sends -------------------------------------------------------------------
    @rule(well_formed=st.sampled_from([True, True, True, False]))
    def send_cer(self, well_formed: bool) -> None:
        hop = self._next_hop()
        data = cer(hop_by_hop=hop) if well_formed else cer(hop_by_hop=hop, drop=("Origin-Realm",))
        self._feed(data, True, hop)

    @rule()
    def send_ecr(self) -> None:
        hop = self._next_hop()
        self._feed(ecr(hop_by_hop=hop, end_to_end=hop), True, hop)

    @rule()
    def send_dwr(self) -> None:
        hop = self._next_hop()
        self._feed(base_request(280, hop), True, hop)

    @rule(cause=st.sampled_from([None, 0, 2]))
    def send_dpr(self, cause: int | None) -> None:
        hop = self._next_hop()
        extra = [] if cause is None else [Avp.new("Disconnect-Cause", cause)]
        self._feed(base_request(282, hop, extra), True, hop)

    @rule()
    def answer_dwr(self) -> None:
        if not self.dwrs:
            return
        dwr = self.dwrs.pop(0)
        dwa = Message(280, 0, 0, dwr.hop_by_hop, dwr.end_to_end, [
            Avp.new("Result-Code", 2001), Avp.new("Origin-Host", MME_HOST),
            Avp.new("Origin-Realm", REALM),
        ])
        self._feed(dwa.encode(), False)

    @rule()
    def answer_dpr(self) -> None:
        if self.dpr is None:
            return
        dpa = Message(282, 0, 0, self.dpr.hop_by_hop, self.dpr.end_to_end, [
            Avp.new("Result-Code", 2001), Avp.new("Origin-Host", MME_HOST),
            Avp.new("Origin-Realm", REALM),
        ])
        was_closing = self.peer.state is PeerState.CLOSING
        self._feed(dpa.encode(), False)
        if was_closing:
            # Closing  Rcv-DPA  Disc  Closed; §5.4: the receiver of the DPA closes.
            assert self.peer.closed and self.peer.should_close

    @rule(hop=st.integers(0, 2**32 - 1))
    def unsolicited_answer(self, hop: int) -> None:
        answer = Message(324, S13, FLAG_PROXIABLE, hop, hop, [Avp.new("Result-Code", 2001)])
        state = self.peer.state
        self._feed(answer.encode(), False)
        if state in (PeerState.R_OPEN, PeerState.CLOSING) and not self.garbled:
            assert self.peer.state is state  # §3: an unknown Hop-by-Hop is discarded

    # The ends of a connection (bytes that cannot be framed, the transport lost) share one rule:
    # drawn as often as any other, they would leave few runs reaching the later states.
    @rule(garbage=st.one_of(st.none(), st.binary(min_size=1, max_size=40)))
    def connection_ends(self, garbage: bytes | None) -> None:
        before = self.peer.state
        if garbage is not None:
            self.garbled = True
            self._feed(garbage, False)
            return
        self._events(self.peer.connection_lost(self.now), before)
        assert self.peer.closed and self.peer.state is PeerState.CLOSED

    # -- the EIR side ---------------------------------------------------------------------------
    @rule()
    def serve_pending(self) -> None:
        if self.pending:
            serve(self.peer, self.pending.pop(0), self.now)
            self._drain()

    @rule(cause=st.sampled_from([0, 1, 2]))
    def stop(self, cause: int) -> None:
        before = self.peer.state
        self._events(self.peer.stop(cause, self.now), before)
        if before in (PeerState.R_OPEN,):
            assert self.peer.state is PeerState.CLOSING and self.dpr is not None

    @rule(seconds=st.sampled_from([0.5, 3.0, 7.0, 12.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        deadline = self.peer.next_deadline()
        if deadline is not None and deadline <= self.now:
            before = self.peer.state
            self._events(self.peer.handle_timeout(self.now), before)

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def moves_follow_the_table(self) -> None:
        observer = self.node.observer
        assert isinstance(observer, Recorder)
        moves = [(old, new) for p, old, new in observer.states if p is self.peer]
        assert moves[0] == (None, PeerState.CLOSED)
        for old, new in moves[1:]:
            if new is None:
                assert old is PeerState.CLOSED  # the connection ends in Closed
            else:
                assert new is PeerState.CLOSED or (old, new) in TABLE_MOVES, (old, new)

    @invariant()
    def closed_is_final(self) -> None:
        if self.peer.closed:
            assert self.peer.state is PeerState.CLOSED and self.peer.should_close
            assert self.went_down
            assert self.peer.receive_data(ecr(), self.now) == []
            assert self.peer.data_to_send() == b""

    @invariant()
    def in_flight_counts_unanswered_requests(self) -> None:
        assert self.peer.in_flight == len(self.pending)
        assert self.node.in_flight_total == len(self.pending)

    @invariant()
    def watchdog_runs_only_while_open(self) -> None:
        if not self.peer.is_open:
            assert self.peer.next_deadline() is None or self.peer.state in (
                PeerState.CLOSED,
                PeerState.CLOSING,
            )


TestResponderMachine = ResponderMachine.TestCase
TestResponderMachine.settings = STATEFUL


# ---------------------------------------------------------------------------------------------
# Both ends: an initiator (MME) and a responder (EIR) over an in-memory pipe that delivers bytes
# in arbitrary pieces, with stops, requests, answers and time interleaved at random


class _End:
    """One side of the pipe: its core, the bytes on their way to it, and what it got."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.inbox = bytearray()  # sent by the other side, not yet received
        self.lost = False  # connection_lost delivered


class PairMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.now = 0.0
        server = eir_node(watchdog_interval=6.0, watchdog_jitter=0.0, dpa_timeout=5.0)
        client = mme_node(watchdog_interval=6.0, watchdog_jitter=0.0, dpa_timeout=5.0)
        self.r = _End(Peer(server, Role.RESPONDER, self.now, remote_address=REMOTE))
        self.i = _End(Peer(client, Role.INITIATOR, self.now))
        self.i.peer.start(self.now)
        self.i.peer.connection_made(self.now)
        self.pending: list[RequestReceived] = []
        self.asked: dict[int, int] = {}  # Hop-by-Hop of the MME's requests -> answers received
        self.stopped = False
        self._move()

    def _other(self, end: _End) -> _End:
        return self.r if end is self.i else self.i

    def _handle(self, end: _End, events: list[object]) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                # Process only in the open state (§5.6; issue 15 for Closing).
                assert end is self.r and end.peer.state is PeerState.R_OPEN
                self.pending.append(event)
            elif isinstance(event, AnswerReceived):
                assert end is self.i and event.hop_by_hop in self.asked
                self.asked[event.hop_by_hop] += 1
                assert self.asked[event.hop_by_hop] == 1, "one answer per request"

    def _move(self) -> None:
        """Collect output into the pipe; a closed side's transport closes once its bytes left."""
        for end in (self.i, self.r):
            other = self._other(end)
            other.inbox += end.peer.data_to_send()
            if end.peer.should_close and not other.inbox and not other.lost:
                other.lost = True
                self._handle(other, other.peer.connection_lost(self.now))
                self._move()
            if end.peer.should_close and not end.lost:
                end.lost = True  # our own transport is closed: nothing more comes in
                end.inbox.clear()

    def _deliver(self, end: _End, size: int) -> None:
        if end.lost or not end.inbox:
            return
        chunk, end.inbox[:] = bytes(end.inbox[:size]), end.inbox[size:]
        for events in end.peer.receive_each(chunk, self.now):
            self._handle(end, events)
        self._move()

    @rule(to_responder=st.booleans(), size=st.sampled_from([1, 7, 20, 64, 4096]))
    def deliver(self, to_responder: bool, size: int) -> None:
        self._deliver(self.r if to_responder else self.i, size)

    @rule()
    def mme_sends_ecr(self) -> None:
        if self.i.peer.is_open:
            hop = self.i.peer.send_request(ecr_message(end_to_end=0), self.now)
            self.asked[hop] = 0
            self._move()

    @rule()
    def eir_answers(self) -> None:
        if self.pending:
            serve(self.r.peer, self.pending.pop(0), self.now)
            self._move()

    @rule(responder=st.booleans())
    def stop(self, responder: bool) -> None:
        end = self.r if responder else self.i
        self.stopped = True
        self._handle(end, end.peer.stop(0, self.now))
        self._move()

    @rule(seconds=st.sampled_from([0.5, 3.0, 7.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self._timeouts()

    def _timeouts(self) -> None:
        for end in (self.i, self.r):
            deadline = end.peer.next_deadline()
            if not end.lost and deadline is not None and deadline <= self.now:
                self._handle(end, end.peer.handle_timeout(self.now))
                self._move()

    @rule()
    def settle(self) -> None:
        """Deliver everything and let the timers run: a stopped pair ends closed on both sides
        (DPR/DPA, or the DPA and linger timeouts, RFC 6733 §5.4); otherwise both stay open."""
        both_open = self.i.peer.is_open and self.r.peer.is_open
        for _ in range(50):
            while (self.i.inbox and not self.i.lost) or (self.r.inbox and not self.r.lost):
                self._deliver(self.r, 1 << 20)
                self._deliver(self.i, 1 << 20)
            deadlines = [
                d for e in (self.i, self.r) if not e.lost
                if (d := e.peer.next_deadline()) is not None
            ]
            if self.stopped and not deadlines:
                break
            if not self.stopped and both_open:
                break
            self.now = max(self.now, min(deadlines)) if deadlines else self.now + 1.0
            self._timeouts()
        if self.stopped:
            assert self.i.peer.closed and self.r.peer.closed
            assert self.i.lost and self.r.lost
        elif both_open:
            assert self.i.peer.is_open and self.r.peer.is_open

    @invariant()
    def moves_follow_the_table(self) -> None:
        for end in (self.i, self.r):
            observer = end.peer.node.observer
            assert isinstance(observer, Recorder)
            moves = [(old, new) for p, old, new in observer.states if p is end.peer]
            for old, new in moves[1:]:
                assert new is None or new is PeerState.CLOSED or (old, new) in TABLE_MOVES

    @invariant()
    def in_flight_counts_unanswered_requests(self) -> None:
        assert self.r.peer.in_flight == len(self.pending)


TestPairMachine = PairMachine.TestCase
TestPairMachine.settings = settings(STATEFUL, max_examples=100)
