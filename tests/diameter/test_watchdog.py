"""RFC 3539 §3.4.1 watchdog table, with a fake clock and a controlled random source."""

from __future__ import annotations

import random

import pytest

from diameter import watchdog as wd
from diameter.watchdog import (
    TRANSITIONS,
    Watchdog,
    WatchdogAction,
    WatchdogInput,
    WatchdogState,
    WatchdogTimer,
)


class Extreme(random.Random):
    """uniform() returns one end of the range: low or high."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def okay(interval: float = 30.0, jitter: float = 0.0) -> Watchdog:
    dog = Watchdog(WatchdogTimer(interval, jitter), random.Random(1))
    assert dog.connection_up(0.0) == []
    assert dog.state is WatchdogState.OKAY
    return dog


def test_states_named_as_rfc_3539() -> None:
    assert {s.name for s in WatchdogState} == {"INITIAL", "OKAY", "SUSPECT", "DOWN", "REOPEN"}


def test_every_state_answers_timer_and_connection_down() -> None:
    for state in WatchdogState:
        assert (state, WatchdogInput.CONNECTION_DOWN) in TRANSITIONS
        if state is not WatchdogState.INITIAL:
            assert (state, WatchdogInput.TIMER_PENDING) in TRANSITIONS
            assert (state, WatchdogInput.TIMER_NOT_PENDING) in TRANSITIONS


def test_default_tw_is_30_seconds() -> None:
    dog = okay()
    assert dog.deadline == 30.0


@pytest.mark.parametrize("high", [False, True])
def test_jitter_bounds_are_plus_minus_two_seconds(high: bool) -> None:
    timer = WatchdogTimer(30.0, 2.0)
    expected = 32.0 if high else 28.0
    assert timer.draw(Extreme(high).uniform) == expected


def test_jitter_drawn_each_time_the_timer_is_armed_within_bounds() -> None:
    dog = Watchdog(WatchdogTimer(30.0, 2.0), random.Random(5))
    dog.connection_up(0.0)
    seen = set()
    for _ in range(200):
        assert dog.deadline is not None
        armed = dog.deadline
        now = armed - 10.0
        dog.receive(False, now)  # traffic resets the timer with this arming's Tw
        tw = dog.deadline - now
        assert 28.0 <= tw <= 32.0
        dog.receive(False, now + 1.0)
        assert dog.deadline - (now + 1.0) == pytest.approx(tw)
        seen.add(round(tw, 6))
        dog.expire(dog.deadline)  # DWR sent, the timer armed again: a new Tw
        dog.receive(True, dog.deadline - 20.0)  # its DWA: armed again, another new Tw
    assert len(seen) > 150  # a new value at each arming


def test_expiry_after_the_last_message_is_jittered_uniformly() -> None:
    # RFC 3539 §3.4.1 [3]: Tw = Twinit + jitter after the last message, whatever came before
    # it. Over many connections the time from the last message to the expiry spreads over
    # the whole [-2, +2] s, evenly.
    spans = []
    for seed in range(400):
        dog = Watchdog(WatchdogTimer(30.0, 2.0), random.Random(seed))
        dog.connection_up(0.0)
        for now in (1.0, 2.5, 7.0):
            dog.receive(False, now)
        assert dog.deadline is not None
        spans.append(dog.deadline - 7.0)
    assert min(spans) >= 28.0 and max(spans) <= 32.0
    quarters = [sum(1 for s in spans if 28.0 + q <= s < 29.0 + q) for q in range(4)]
    assert all(60 <= n <= 140 for n in quarters), quarters


def test_tw_never_below_six_seconds() -> None:
    assert WatchdogTimer(1.0, 0.0).draw(random.Random().uniform) == 6.0
    assert WatchdogTimer(0.0, 2.0).draw(Extreme(False).uniform) == 4.0  # 6 s, jitter -2
    assert WatchdogTimer(0.0, 2.0).draw(Extreme(True).uniform) == 8.0


def test_minimum_is_a_constant_tests_can_lower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wd, "TW_MINIMUM", 0.05)
    assert WatchdogTimer(0.1, 0.0).draw(random.Random().uniform) == 0.1


def test_okay_expiry_without_pending_sends_dwr() -> None:
    dog = okay()
    assert dog.expire(30.0) == [WatchdogAction.SEND_WATCHDOG]
    assert dog.pending and dog.state is WatchdogState.OKAY
    assert dog.deadline == 60.0


def test_okay_expiry_with_pending_goes_suspect_then_down() -> None:
    dog = okay()
    dog.expire(30.0)
    assert dog.expire(60.0) == [WatchdogAction.FAILOVER]
    assert dog.state is WatchdogState.SUSPECT
    # RFC 3539: close only after Tw expired twice without an answer (the DWR is not resent).
    assert dog.expire(90.0) == [WatchdogAction.CLOSE_CONNECTION]
    assert dog.state is WatchdogState.DOWN


def test_dwa_clears_pending() -> None:
    dog = okay()
    dog.expire(30.0)
    assert dog.receive(True, 31.0) == []
    assert not dog.pending
    assert dog.deadline == 61.0
    assert dog.expire(61.0) == [WatchdogAction.SEND_WATCHDOG]


def test_suspect_dwa_fails_back() -> None:
    dog = okay()
    dog.expire(30.0)
    dog.expire(60.0)
    assert dog.receive(True, 61.0) == [WatchdogAction.FAILBACK]
    assert dog.state is WatchdogState.OKAY and not dog.pending


def test_suspect_non_dwa_fails_back_but_stays_pending() -> None:
    dog = okay()
    dog.expire(30.0)
    dog.expire(60.0)
    assert dog.receive(False, 61.0) == [WatchdogAction.FAILBACK]
    assert dog.state is WatchdogState.OKAY and dog.pending


def test_any_traffic_resets_tw() -> None:
    dog = okay()
    dog.receive(False, 20.0)
    assert dog.deadline == 50.0
    assert dog.expire(50.0) == [WatchdogAction.SEND_WATCHDOG]


def test_connection_down_from_okay_and_suspect() -> None:
    dog = okay()
    assert dog.connection_down(1.0) == [WatchdogAction.FAILOVER]
    assert dog.state is WatchdogState.DOWN
    dog = okay()
    dog.expire(30.0)
    dog.expire(60.0)
    assert dog.connection_down(61.0) == [WatchdogAction.CLOSE_CONNECTION]


def test_initial_ignores_traffic_and_timer() -> None:
    dog = Watchdog(WatchdogTimer(30.0, 0.0))
    assert dog.receive(False, 1.0) == [] and dog.expire(1.0) == []
    assert dog.state is WatchdogState.INITIAL and dog.deadline is None


def test_reopen_needs_three_dwas() -> None:
    dog = Watchdog(WatchdogTimer(30.0, 0.0), state=WatchdogState.DOWN)
    assert dog.expire(0.0) == [WatchdogAction.ATTEMPT_OPEN]
    assert dog.connection_up(1.0) == [WatchdogAction.SEND_WATCHDOG]
    assert dog.state is WatchdogState.REOPEN and dog.pending
    assert dog.receive(False, 2.0) == [WatchdogAction.THROWAWAY]
    dog.receive(True, 3.0)
    assert dog.num_dwa == 1 and dog.state is WatchdogState.REOPEN
    assert dog.expire(31.0) == [WatchdogAction.SEND_WATCHDOG]
    dog.receive(True, 32.0)
    assert dog.num_dwa == 2
    assert dog.receive(True, 33.0) == [WatchdogAction.FAILBACK]
    assert dog.state is WatchdogState.OKAY


def test_reopen_closes_after_two_unanswered_expiries() -> None:
    dog = Watchdog(WatchdogTimer(30.0, 0.0), state=WatchdogState.DOWN)
    dog.connection_up(0.0)
    assert dog.expire(30.0) == []
    assert dog.num_dwa == -1
    assert dog.expire(60.0) == [WatchdogAction.CLOSE_CONNECTION]
    assert dog.state is WatchdogState.DOWN
