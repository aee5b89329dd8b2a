"""Transport failure detection: the Diameter watchdog (RFC 6733 §5.5, RFC 3539 §3.4.1), sans-IO.

A transition table ``(WatchdogState, WatchdogInput) -> (actions, next_state)`` with the RFC 3539
rows above each entry. Time is passed in as ``now``; the random source for the jitter is injected.
The owner (the peer state machine) feeds inputs and carries out the actions it gets back:
``SEND_DWR``, ``CLOSE_CONNECTION``, ``FAILOVER``, ``FAILBACK``, ``THROWAWAY``.
"""

from __future__ import annotations

import enum
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

# RFC 3539 §3.4.1 [3]: "Tw ... MUST NOT be set lower than 6 seconds". Module constant, read at each
# use so that a test (and only a test) can lower it to drive real sockets with short timers.
TW_MINIMUM = 6.0
TW_DEFAULT = 30.0
JITTER_DEFAULT = 2.0


class WatchdogState(enum.Enum):
    """RFC 3539 §3.4.1 watchdog states."""

    INITIAL = "INITIAL"
    OKAY = "OKAY"
    SUSPECT = "SUSPECT"
    DOWN = "DOWN"
    REOPEN = "REOPEN"


class WatchdogInput(enum.Enum):
    CONNECTION_UP = "connection up"
    CONNECTION_DOWN = "connection down"
    RECEIVE_DWA = "receive DWA"
    RECEIVE_NON_DWA = "receive non-DWA"
    # "Timer expires" split by the guards of the RFC rows.
    TIMER_NOT_PENDING = "timer expires && !Pending"
    TIMER_PENDING = "timer expires && Pending"
    TIMER_PENDING_LAST = "timer expires && Pending && NumDWA < 0"
    RECEIVE_DWA_LAST = "receive DWA && NumDWA == 2"


class WatchdogAction(enum.Enum):
    SET_WATCHDOG = "SetWatchdog"
    SEND_WATCHDOG = "SendWatchdog"  # the owner sends a DWR
    PENDING_TRUE = "Pending = TRUE"
    PENDING_FALSE = "Pending = FALSE"
    FAILOVER = "Failover"
    FAILBACK = "Failback"
    CLOSE_CONNECTION = "CloseConnection"
    ATTEMPT_OPEN = "AttemptOpen"
    THROWAWAY = "Throwaway"
    NUM_DWA_ZERO = "NumDWA = 0"
    NUM_DWA_INCREMENT = "NumDWA++"
    NUM_DWA_MINUS_ONE = "NumDWA = -1"


S, In, A = WatchdogState, WatchdogInput, WatchdogAction

# RFC 3539 §3.4.1, the state machine (State / Event / Actions / New State).
TRANSITIONS: dict[tuple[WatchdogState, WatchdogInput], tuple[tuple[WatchdogAction, ...], WatchdogState]] = {
    # INITIAL  Connection up  SetWatchdog()  OKAY
    (S.INITIAL, In.CONNECTION_UP): ((A.SET_WATCHDOG,), S.OKAY),
    # OKAY  Receive DWA  Pending = FALSE, SetWatchdog()  OKAY
    (S.OKAY, In.RECEIVE_DWA): ((A.PENDING_FALSE, A.SET_WATCHDOG), S.OKAY),
    (S.OKAY, In.RECEIVE_DWA_LAST): ((A.PENDING_FALSE, A.SET_WATCHDOG), S.OKAY),
    # OKAY  Receive non-DWA  SetWatchdog()  OKAY
    (S.OKAY, In.RECEIVE_NON_DWA): ((A.SET_WATCHDOG,), S.OKAY),
    # OKAY  Timer expires & !Pending  SendWatchdog(), SetWatchdog(), Pending = TRUE  OKAY
    (S.OKAY, In.TIMER_NOT_PENDING): ((A.SEND_WATCHDOG, A.SET_WATCHDOG, A.PENDING_TRUE), S.OKAY),
    # OKAY  Timer expires & Pending  Failover(), SetWatchdog()  SUSPECT
    (S.OKAY, In.TIMER_PENDING): ((A.FAILOVER, A.SET_WATCHDOG), S.SUSPECT),
    (S.OKAY, In.TIMER_PENDING_LAST): ((A.FAILOVER, A.SET_WATCHDOG), S.SUSPECT),
    # OKAY  Connection down  Failover(), SetWatchdog()  DOWN
    (S.OKAY, In.CONNECTION_DOWN): ((A.FAILOVER, A.SET_WATCHDOG), S.DOWN),
    # SUSPECT  Receive DWA  Pending = FALSE, Failback(), SetWatchdog()  OKAY
    (S.SUSPECT, In.RECEIVE_DWA): ((A.PENDING_FALSE, A.FAILBACK, A.SET_WATCHDOG), S.OKAY),
    (S.SUSPECT, In.RECEIVE_DWA_LAST): ((A.PENDING_FALSE, A.FAILBACK, A.SET_WATCHDOG), S.OKAY),
    # SUSPECT  Receive non-DWA  Failback(), SetWatchdog()  OKAY
    (S.SUSPECT, In.RECEIVE_NON_DWA): ((A.FAILBACK, A.SET_WATCHDOG), S.OKAY),
    # SUSPECT  Timer expires  CloseConnection(), SetWatchdog()  DOWN
    (S.SUSPECT, In.TIMER_PENDING): ((A.CLOSE_CONNECTION, A.SET_WATCHDOG), S.DOWN),
    (S.SUSPECT, In.TIMER_PENDING_LAST): ((A.CLOSE_CONNECTION, A.SET_WATCHDOG), S.DOWN),
    (S.SUSPECT, In.TIMER_NOT_PENDING): ((A.CLOSE_CONNECTION, A.SET_WATCHDOG), S.DOWN),
    # SUSPECT  Connection down  CloseConnection(), SetWatchdog()  DOWN
    (S.SUSPECT, In.CONNECTION_DOWN): ((A.CLOSE_CONNECTION, A.SET_WATCHDOG), S.DOWN),
    # DOWN  Timer expires  AttemptOpen(), SetWatchdog()  DOWN
    (S.DOWN, In.TIMER_NOT_PENDING): ((A.ATTEMPT_OPEN, A.SET_WATCHDOG), S.DOWN),
    (S.DOWN, In.TIMER_PENDING): ((A.ATTEMPT_OPEN, A.SET_WATCHDOG), S.DOWN),
    (S.DOWN, In.TIMER_PENDING_LAST): ((A.ATTEMPT_OPEN, A.SET_WATCHDOG), S.DOWN),
    # DOWN  Connection up  NumDWA = 0, SendWatchdog(), SetWatchdog(), Pending = TRUE  REOPEN
    (S.DOWN, In.CONNECTION_UP): (
        (A.NUM_DWA_ZERO, A.SEND_WATCHDOG, A.SET_WATCHDOG, A.PENDING_TRUE),
        S.REOPEN,
    ),
    # REOPEN  Receive DWA & NumDWA < 2  Pending = FALSE, NumDWA++  REOPEN
    (S.REOPEN, In.RECEIVE_DWA): ((A.PENDING_FALSE, A.NUM_DWA_INCREMENT), S.REOPEN),
    # REOPEN  Receive DWA & NumDWA == 2  Pending = FALSE, Failback()  OKAY
    (S.REOPEN, In.RECEIVE_DWA_LAST): ((A.PENDING_FALSE, A.FAILBACK), S.OKAY),
    # REOPEN  Receive non-DWA  Throwaway()  REOPEN
    (S.REOPEN, In.RECEIVE_NON_DWA): ((A.THROWAWAY,), S.REOPEN),
    # REOPEN  Timer expires & !Pending  SendWatchdog(), SetWatchdog(), Pending = TRUE  REOPEN
    (S.REOPEN, In.TIMER_NOT_PENDING): ((A.SEND_WATCHDOG, A.SET_WATCHDOG, A.PENDING_TRUE), S.REOPEN),
    # REOPEN  Timer expires & Pending & NumDWA >= 0  NumDWA = -1, SetWatchdog()  REOPEN
    (S.REOPEN, In.TIMER_PENDING): ((A.NUM_DWA_MINUS_ONE, A.SET_WATCHDOG), S.REOPEN),
    # REOPEN  Timer expires & Pending & NumDWA < 0  CloseConnection(), SetWatchdog()  DOWN
    (S.REOPEN, In.TIMER_PENDING_LAST): ((A.CLOSE_CONNECTION, A.SET_WATCHDOG), S.DOWN),
    # REOPEN  Connection down  CloseConnection(), SetWatchdog()  DOWN
    (S.REOPEN, In.CONNECTION_DOWN): ((A.CLOSE_CONNECTION, A.SET_WATCHDOG), S.DOWN),
    # INITIAL/DOWN  Connection down: nothing to do (no row in RFC 3539; kept total).
    (S.INITIAL, In.CONNECTION_DOWN): ((), S.INITIAL),
    (S.DOWN, In.CONNECTION_DOWN): ((), S.DOWN),
}
del S, In, A
# Watchdog.receive takes this row without the table.
assert TRANSITIONS[(WatchdogState.OKAY, WatchdogInput.RECEIVE_NON_DWA)] == (
    (WatchdogAction.SET_WATCHDOG,),
    WatchdogState.OKAY,
)


@dataclass(frozen=True, slots=True)
class WatchdogTimer:
    """How Tw is drawn: RFC 3539 §3.4.1 [3], Tw = Twinit + jitter in [-jitter, +jitter]."""

    interval: float = TW_DEFAULT
    jitter: float = JITTER_DEFAULT

    def draw(self, uniform: Callable[[float, float], float]) -> float:
        twinit = max(self.interval, TW_MINIMUM)
        return twinit + uniform(-self.jitter, self.jitter) if self.jitter else twinit


class Watchdog:
    """One connection's watchdog. ``deadline`` is when Tw expires next (None before the start).

    Tw (``tw``) is drawn, jitter and all, each time the table's SetWatchdog() arms the timer:
    at connection up, at each expiry, on a DWA. Any other received message resets the timer
    to ``now + tw`` with the Tw of the current arming, not a new draw per message: the timer
    still expires a uniformly jittered Tw after the last message, as RFC 3539 §3.4.1 [3]
    wants (the draw is independent of when that message comes), for a float addition where a
    random draw was made on every message."""

    __slots__ = ("_uniform", "deadline", "num_dwa", "pending", "state", "timer", "tw")

    def __init__(
        self,
        timer: WatchdogTimer = WatchdogTimer(),
        rng: _random.Random | None = None,
        state: WatchdogState = WatchdogState.INITIAL,
    ) -> None:
        self.timer = timer
        self._uniform = (rng or _random.Random()).uniform
        self.state = state
        self.pending = False
        self.num_dwa = 0
        self.deadline: float | None = None
        self.tw = 0.0  # drawn by SetWatchdog() (_fire) before any message resets the timer

    def connection_up(self, now: float) -> list[WatchdogAction]:
        return self._fire(WatchdogInput.CONNECTION_UP, now)

    def connection_down(self, now: float) -> list[WatchdogAction]:
        actions = self._fire(WatchdogInput.CONNECTION_DOWN, now)
        self.deadline = None  # the connection object is gone: nothing more to time here
        return actions

    def receive(self, is_dwa: bool, now: float) -> list[WatchdogAction]:
        """Any received message (RFC 3539 §3.4.1 [1]: "any received message resets Tw")."""
        state = self.state
        if state is WatchdogState.OKAY and not is_dwa:
            # The row for nearly every message (OKAY, Receive non-DWA): SetWatchdog(), OKAY,
            # with the Tw of the current arming (see the class).
            self.deadline = now + self.tw
            return []
        if state is WatchdogState.INITIAL:
            return []
        if is_dwa:
            # REOPEN: "NumDWA == 2" picks the row that goes back to OKAY.
            last = self.state is WatchdogState.REOPEN and self.num_dwa >= 2
            return self._fire(
                WatchdogInput.RECEIVE_DWA_LAST if last else WatchdogInput.RECEIVE_DWA, now
            )
        return self._fire(WatchdogInput.RECEIVE_NON_DWA, now)

    def expire(self, now: float) -> list[WatchdogAction]:
        """Tw expired (the owner calls it once ``now >= deadline``)."""
        if self.state is WatchdogState.INITIAL:
            return []
        if not self.pending:
            event = WatchdogInput.TIMER_NOT_PENDING
        elif self.num_dwa < 0:
            event = WatchdogInput.TIMER_PENDING_LAST
        else:
            event = WatchdogInput.TIMER_PENDING
        return self._fire(event, now)

    def _fire(self, event: WatchdogInput, now: float) -> list[WatchdogAction]:
        actions, next_state = TRANSITIONS[(self.state, event)]
        out: list[WatchdogAction] = []
        for action in actions:
            if action is WatchdogAction.SET_WATCHDOG:
                self.tw = self.timer.draw(self._uniform)
                self.deadline = now + self.tw
            elif action is WatchdogAction.PENDING_TRUE:
                self.pending = True
            elif action is WatchdogAction.PENDING_FALSE:
                self.pending = False
            elif action is WatchdogAction.NUM_DWA_ZERO:
                self.num_dwa = 0
            elif action is WatchdogAction.NUM_DWA_INCREMENT:
                self.num_dwa += 1
            elif action is WatchdogAction.NUM_DWA_MINUS_ONE:
                self.num_dwa = -1
            else:
                out.append(action)
        self.state = next_state
        return out
