"""Circuit breaker (closed / open / half-open), sans-IO: the caller passes ``now``.

    CLOSED    --failure x threshold (consecutive)-->  OPEN
    OPEN      --reset_timeout elapsed, a request-->   HALF_OPEN (that request is the probe)
    HALF_OPEN --probe succeeds-->                     CLOSED
    HALF_OPEN --probe fails-->                        OPEN (timer restarts)

While OPEN, and while a HALF_OPEN probe is in flight, requests are refused at once, so an outage
costs no time per check.
"""

from __future__ import annotations

import enum


class BreakerState(enum.IntEnum):
    # values are the registry_circuit_state gauge
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, failure_threshold: int, reset_timeout: float):
        self.failure_threshold = max(1, failure_threshold)
        self.reset_timeout = reset_timeout
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probe_in_flight = False

    def would_refuse(self, now: float) -> bool:
        """True when ``allow(now)`` would refuse; changes nothing."""
        if self.state is BreakerState.OPEN:
            return now - self.opened_at < self.reset_timeout
        if self.state is BreakerState.HALF_OPEN:
            return self._probe_in_flight
        return False

    def allow(self, now: float) -> bool:
        """May a request go out now? In OPEN past the timeout this admits the half-open probe."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.reset_timeout:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def success(self, now: float) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._probe_in_flight = False

    def failure(self, now: float) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        self.failures += 1
        if self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.failures = 0
        self._probe_in_flight = False
