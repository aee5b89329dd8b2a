"""The circuit breaker as a sans-IO state machine: its table, generations, and a hypothesis model."""

from __future__ import annotations

from copy import deepcopy

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from registry_client.breaker import BreakerState, CircuitBreaker, Ticket

RESET = 10.0


def opened(threshold: int = 2, at: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, reset_timeout=RESET)
    tickets = [breaker.admit(at) for _ in range(threshold)]
    for ticket in tickets:
        assert ticket is not None
        breaker.failure(ticket, at)
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_closed_counts_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=RESET)
    a, b, c, d = (breaker.admit(0) for _ in range(4))
    assert a and b and c and d
    assert not breaker.failure(a, 1) and not breaker.failure(b, 1)
    assert not breaker.success(c, 1)  # a success resets the count
    assert breaker.failures == 0
    assert not breaker.failure(d, 2)
    assert breaker.state is BreakerState.CLOSED


def test_threshold_opens_and_open_refuses_until_the_reset_timeout() -> None:
    breaker = opened(threshold=2, at=5.0)
    assert breaker.opened_at == 5.0
    assert breaker.refuses(5.0 + RESET - 0.001) and breaker.admit(5.0 + RESET - 0.001) is None
    assert not breaker.refuses(5.0 + RESET)
    probe = breaker.admit(5.0 + RESET)
    assert probe is not None and breaker.state is BreakerState.HALF_OPEN


def test_half_open_admits_one_probe_and_it_alone_decides() -> None:
    breaker = opened()
    probe = breaker.admit(RESET)
    assert probe is not None
    assert breaker.admit(RESET) is None and breaker.refuses(RESET + 1)  # one probe at a time
    assert breaker.success(probe, RESET + 0.1)
    assert breaker.state is BreakerState.CLOSED and breaker.admit(RESET + 0.1) is not None


def test_failed_probe_reopens_with_a_fresh_timer() -> None:
    breaker = opened()
    probe = breaker.admit(RESET)
    assert probe is not None and breaker.failure(probe, RESET + 0.5)
    assert breaker.state is BreakerState.OPEN and breaker.opened_at == RESET + 0.5
    assert breaker.admit(2 * RESET) is None and breaker.admit(2 * RESET + 0.5) is not None


def test_outcomes_of_an_older_generation_change_nothing() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=RESET)
    early, late = breaker.admit(0), breaker.admit(0)
    assert early and late
    assert breaker.failure(early, 0.1)  # opens
    assert not breaker.success(late, 0.2)  # sent before it opened: does not close it
    assert breaker.state is BreakerState.OPEN
    probe = breaker.admit(RESET + 0.1)
    assert probe is not None
    assert not breaker.failure(late, RESET + 0.2)  # nor reopen the half-open circuit
    assert not breaker.failure(early, RESET + 0.2)  # however often it is reported
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.success(probe, RESET + 0.3)
    assert not breaker.failure(probe, RESET + 0.4)  # one outcome per ticket counts
    assert breaker.state is BreakerState.CLOSED


def test_no_more_out_than_it_takes_to_open() -> None:
    """Before any failure too: a registry that died is only seen failing a budget later."""
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=RESET)
    a, b = breaker.admit(0), breaker.admit(0)
    assert a and b and not breaker.holding_back()  # 2 out: not enough to open
    c = breaker.admit(0)
    assert c and breaker.holding_back()  # no failure yet, 3 out: enough to open
    breaker.success(a, 1)
    assert not breaker.holding_back()  # 2 out
    breaker.failure(b, 2)
    assert not breaker.holding_back()  # 1 failure + 1 out
    d = breaker.admit(2)
    assert d and breaker.holding_back()  # 1 failure + 2 out
    breaker.success(c, 2)
    assert not breaker.holding_back()  # a success: failures 0, 1 out
    e = breaker.admit(2)
    assert e
    breaker.failure(d, 3)
    assert not breaker.holding_back()  # 1 failure + 1 out
    f = breaker.admit(3)
    assert f and breaker.holding_back()
    breaker.failure(e, 3)
    breaker.failure(f, 3)
    assert breaker.state is BreakerState.OPEN and not breaker.holding_back()


def test_a_lost_probe_is_replaced_after_a_reset_interval() -> None:
    """A probe whose outcome never comes cannot hold the circuit half-open for ever."""
    breaker = opened()
    lost = breaker.admit(RESET)
    assert lost is not None
    assert breaker.admit(2 * RESET - 0.001) is None
    probe = breaker.admit(2 * RESET)
    assert probe is not None and probe != lost and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.success(lost, 2 * RESET)  # the lost one is of an older generation
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.success(probe, 2 * RESET)
    assert breaker.state is BreakerState.CLOSED


class BreakerModel(RuleBasedStateMachine):
    """Random orders of admissions, outcomes (in time or late) and clock steps.

    Checked after every step: outcomes of tickets admitted before the last state change never
    change the state; OPEN refuses until its timer runs out; HALF_OPEN has exactly one probe
    out; and, as liveness, a healthy registry closes the circuit within one reset interval plus
    one probe from any state.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threshold = 3
        self.breaker = CircuitBreaker(self.threshold, RESET)
        self.now = 0.0
        self.out: list[Ticket] = []  # admitted, no outcome reported yet
        self.stale: list[Ticket] = []  # reported already, or admitted before a state change

    @rule(seconds=st.sampled_from([0.0, 0.01, 1.0, RESET / 2, RESET]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def admit(self) -> None:
        before = self.breaker.state, self.breaker.generation
        refused = self.breaker.refuses(self.now)
        ticket = self.breaker.admit(self.now)
        assert (ticket is None) == refused
        if ticket is None:
            assert (self.breaker.state, self.breaker.generation) == before
            return
        if before[0] is BreakerState.CLOSED:
            assert self.breaker.state is BreakerState.CLOSED
        else:  # the probe: a state change, so every other ticket out is now stale
            assert self.breaker.state is BreakerState.HALF_OPEN
            self.stale.extend(self.out)
            self.out = []
        self.out.append(ticket)

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0, 100), ok=st.booleans())
    def report(self, index: int, ok: bool) -> None:
        ticket = self.out.pop(index % len(self.out))
        state, failures = self.breaker.state, self.breaker.failures
        changed = (self.breaker.success if ok else self.breaker.failure)(ticket, self.now)
        self.stale.append(ticket)
        if state is BreakerState.HALF_OPEN:
            assert changed  # only the probe is out in HALF_OPEN: it decides
            assert self.breaker.state is (BreakerState.CLOSED if ok else BreakerState.OPEN)
        elif ok:
            assert not changed and self.breaker.failures == 0
        else:
            assert changed == (failures + 1 >= self.threshold)
        if changed:
            self.stale.extend(self.out)
            self.out = []

    @precondition(lambda self: self.stale)
    @rule(index=st.integers(0, 100), ok=st.booleans())
    def report_stale(self, index: int, ok: bool) -> None:
        ticket = self.stale[index % len(self.stale)]
        before = self.breaker.state, self.breaker.generation, self.breaker.failures
        changed = (self.breaker.success if ok else self.breaker.failure)(ticket, self.now)
        assert not changed
        assert (self.breaker.state, self.breaker.generation, self.breaker.failures) == before

    @invariant()
    def states_are_consistent(self) -> None:
        breaker = self.breaker
        if breaker.state is BreakerState.OPEN:
            assert not self.out  # nothing admitted since it opened
            assert breaker.refuses(self.now) == (self.now < breaker.opened_at + RESET)
        if breaker.state is BreakerState.HALF_OPEN:
            assert len(self.out) == 1  # the probe
        if breaker.state is BreakerState.CLOSED:
            assert breaker.failures < self.threshold and not breaker.refuses(self.now)
        # Holding back counts exactly the tickets out that could still open the circuit.
        assert breaker.holding_back() == (
            breaker.state is BreakerState.CLOSED
            and breaker.failures + len(self.out) >= self.threshold
        )

    @invariant()
    def heals_within_one_reset_interval_and_one_probe(self) -> None:
        copy = deepcopy(self.breaker)
        later = self.now + RESET
        ticket = copy.admit(later)
        assert ticket is not None
        copy.success(ticket, later)
        assert copy.state is BreakerState.CLOSED


TestBreakerModel = BreakerModel.TestCase
TestBreakerModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
