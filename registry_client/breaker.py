"""Circuit breaker of the registry client (closed / open / half-open), sans-IO: ``now`` is passed in.

Every request the breaker lets out carries a ``Ticket`` naming the breaker's generation when it
was admitted; the generation moves on at every state change. The outcome of a request counts only
while its generation is current, and only once, so an answer to a request sent before the circuit
opened (a late success of a slow registry, a timeout of a hung one) can neither close it again nor
restart its timer, and in HALF_OPEN only the probe decides.

    state      input                                  next       action
    CLOSED     admit                                  CLOSED     ticket
    CLOSED     success                                CLOSED     failures = 0
    CLOSED     failure, failures + 1 < threshold      CLOSED     failures += 1
    CLOSED     failure, failures + 1 = threshold      OPEN       opened_at = now
    OPEN       admit, before opened_at + reset        OPEN       refuse
    OPEN       admit, at opened_at + reset or later   HALF_OPEN  ticket: the probe
    HALF_OPEN  admit, before probe_at + reset         HALF_OPEN  refuse (one probe at a time)
    HALF_OPEN  admit, at probe_at + reset or later    HALF_OPEN  ticket: a new probe (the
                                                                 old one is presumed lost)
    HALF_OPEN  success of the probe                   CLOSED     failures = 0
    HALF_OPEN  failure of the probe                   OPEN       opened_at = now
    any        outcome of an older generation,        unchanged  ignored
               or of a ticket already reported

While OPEN, and while the probe is out, requests are refused at once, so an outage costs no time
per check. In CLOSED, ``holding_back()`` tells the caller to send nothing more while as many
requests are out as it would take, with the failures so far, to open the circuit. A registry
that stops answering is only seen to fail when the first request outlives its budget; were
requests not held back before then, every check of that budget would reach the dead registry
(15 at 300 checks/s and 50 ms). Held back, it receives at most ``failure_threshold`` requests
before the circuit opens. The caller batches what waits meanwhile (client.py), so a healthy
registry loses no throughput. The caller reports exactly one outcome per ticket (a request that
outlives its budget is reported as a failure then; see client.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(enum.IntEnum):
    # values are the registry_circuit_state gauge
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one request: the ``serial``-th admitted, in ``generation``."""

    generation: int
    serial: int


class CircuitBreaker:
    def __init__(self, failure_threshold: int, reset_timeout: float):
        self.failure_threshold = max(1, failure_threshold)
        self.reset_timeout = reset_timeout
        self.state = BreakerState.CLOSED
        self.generation = 0
        self.failures = 0  # consecutive, in CLOSED
        self.opened_at = 0.0
        self.probe_at = 0.0  # when the half-open probe went out
        self.transitions = 0  # state changes so far (tests, logs)
        self._serial = 0
        self._out: set[int] = set()  # serials of this generation's tickets not reported yet

    def refuses(self, now: float) -> bool:
        """True when ``admit(now)`` would refuse; changes nothing."""
        if self.state is BreakerState.OPEN:
            return now < self.opened_at + self.reset_timeout
        if self.state is BreakerState.HALF_OPEN:
            return now < self.probe_at + self.reset_timeout
        return False

    def admit(self, now: float) -> Ticket | None:
        """A ticket for a request going out now, or None. OPEN past the timeout: the probe."""
        if self.state is not BreakerState.CLOSED:
            if self.refuses(now):
                return None
            self.probe_at = now
            self._enter(BreakerState.HALF_OPEN)
        self._serial += 1
        self._out.add(self._serial)
        return Ticket(self.generation, self._serial)

    def holding_back(self) -> bool:
        """CLOSED with enough requests out to open the circuit, should they all fail.

        Whether the registry has started failing or not yet shown it: no more is sent than it
        takes to open the circuit; the next request waits for one of those to end.
        """
        return (
            self.state is BreakerState.CLOSED
            and self.failures + len(self._out) >= self.failure_threshold
        )

    def _counts(self, ticket: Ticket) -> bool:
        """Is this the first outcome of a ticket of the current generation?"""
        if ticket.generation != self.generation or ticket.serial not in self._out:
            return False
        self._out.discard(ticket.serial)
        return True

    def success(self, ticket: Ticket, now: float) -> bool:
        """The request of ``ticket`` was answered in time; True when the state changed."""
        if not self._counts(ticket):
            return False
        self.failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self._enter(BreakerState.CLOSED)
            return True
        return False

    def failure(self, ticket: Ticket, now: float) -> bool:
        """The request of ``ticket`` failed or outlived its budget; True when the state changed."""
        if not self._counts(ticket):
            return False
        if self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures < self.failure_threshold:
                return False
        self.opened_at = now
        self._enter(BreakerState.OPEN)
        return True

    def _enter(self, state: BreakerState) -> None:
        self.state = state
        self.generation += 1
        self.failures = 0
        self.transitions += 1
        self._out.clear()
