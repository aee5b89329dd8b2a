"""``new_imsi``: an IMEI checked with another IMSI than the one it was last seen with (SIM swap,
resale). Sans-IO: decisions in, events out through ``emit``, time passed in.

The last IMSI of the ``memory`` most recently seen IMEIs is kept in memory. An IMEI not there
(first seen since a restart, forgotten, or seen by another worker), and an IMEI whose IMSI
differs from the remembered one (another worker may have seen the new one first), is asked of
the observation log (:class:`ImsiHistory`): the answer comes later, off the check path, and the
event, if any, is emitted then. Checks of that IMEI arriving meanwhile wait behind the lookup,
in order; at most ``max_lookups`` IMEIs are looked up at once, a check past that is decided from
memory alone and counted (``skipped``). Between the lookup's answer and the remembered entry,
the later sighting wins.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from gateway.events.model import DecisionEvent

# (IMSI, Unix time last seen) of an IMEI, or None when it has no history.
Sighting = tuple[str, float] | None
Reply = Callable[[Sighting, bool], None]  # (the last sighting, whether the lookup failed)


class ImsiHistory(Protocol):
    def last_imsi(self, imei: str, before: float, reply: Reply) -> None:
        """Call ``reply`` later (on the loop's thread) with the IMSI the IMEI body was last
        seen with before ``before``, among the observations recorded before this call."""


class LookupOutcome(enum.Enum):
    SEEN = "seen"  # the log knew the IMEI
    UNSEEN = "unseen"  # it did not: a first sighting
    FAILED = "failed"  # the log could not answer: taken as a first sighting
    SKIPPED = "skipped"  # too many lookups in flight: decided from memory alone


class NewImsiDetector:
    def __init__(
        self,
        emit: Callable[[DecisionEvent], None],
        memory: int = 100_000,
        history: ImsiHistory | None = None,
        max_lookups: int = 10_000,
    ) -> None:
        self.emit = emit
        self.memory = memory
        self.history = history
        self.max_lookups = max_lookups
        self.lookups: dict[LookupOutcome, int] = dict.fromkeys(LookupOutcome, 0)
        self._last: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # IMEI -> (the remembered sighting when the lookup started, checks waiting for it)
        self._waiting: dict[str, tuple[Sighting, list[DecisionEvent]]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def observe(self, event: DecisionEvent) -> None:
        """One check of ``event.imei`` with ``event.imsi`` (a NEW_IMSI event template, its
        ``previous_imsi`` unset); emits the NEW_IMSI event now, later or never."""
        imei, imsi = event.imei, event.imsi
        assert imsi is not None
        waiting = self._waiting.get(imei)
        if waiting is not None:
            waiting[1].append(event)
            return
        last = self._last
        known = last.get(imei)
        if known is not None and known[0] == imsi:
            last[imei] = (imsi, event.at)
            last.move_to_end(imei)
            return
        if self.history is None or len(self._waiting) >= self.max_lookups:
            if self.history is not None:
                self.lookups[LookupOutcome.SKIPPED] += 1
            self._decide(imei, known, [event])
            return
        self._waiting[imei] = (known, [event])
        self.history.last_imsi(
            imei, event.at, lambda found, failed: self._answered(imei, found, failed)
        )

    def _answered(self, imei: str, found: Sighting, failed: bool) -> None:
        known, events = self._waiting.pop(imei)
        outcome = (LookupOutcome.FAILED if failed
                   else LookupOutcome.UNSEEN if found is None else LookupOutcome.SEEN)
        self.lookups[outcome] += 1
        if found is None or (known is not None and known[1] >= found[1]):
            found = known
        self._decide(imei, found, events)

    def _decide(self, imei: str, previous: Sighting, events: list[DecisionEvent]) -> None:
        for event in events:
            assert event.imsi is not None
            if previous is not None and previous[0] != event.imsi:
                self.emit(dataclasses.replace(event, previous_imsi=previous[0]))
            previous = (event.imsi, event.at)
        assert previous is not None
        last = self._last
        last[imei] = previous
        last.move_to_end(imei)
        if len(last) > self.memory:
            last.popitem(last=False)
