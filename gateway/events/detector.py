"""Which events a decision raises (sans-IO: no I/O, time passed in)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.classify import Decision
from gateway.events.model import DecisionEvent, EventType
from gateway.events.new_imsi import ImsiHistory, NewImsiDetector
from gateway.policy import EquipmentStatus, Reason


class EventDetector:
    """Which events a decision raises. ``new_imsi`` is decided by :class:`NewImsiDetector` from
    the last IMSI of up to ``memory`` IMEIs and, for the others, the observation log
    (``history``; None: memory alone, so the first sighting after a restart raises nothing).
    Events decided at once are returned by :meth:`detect`; those decided after a lookup go to
    ``later`` (the bus sets it)."""

    def __init__(
        self, types: Iterable[EventType], memory: int = 100_000,
        history: ImsiHistory | None = None, max_lookups: int = 10_000,
    ) -> None:
        self.types = frozenset(types)
        self.later: Callable[[DecisionEvent], None] = lambda event: None
        self._now: list[DecisionEvent] | None = None  # collects, while detect runs
        self.new_imsi = NewImsiDetector(self._emit, memory, history, max_lookups)

    def _emit(self, event: DecisionEvent) -> None:
        if self._now is not None:
            self._now.append(event)
        else:
            self.later(event)

    def detect(
        self, decision: Decision, origin_host: str | None, interface: str, now: float
    ) -> list[DecisionEvent]:
        imei = decision.imei
        if imei is None or not self.types:
            return []
        types = self.types
        enforcement = decision.enforcement
        status = "EQUIPMENT_UNKNOWN" if enforcement is None else enforcement.name
        out: list[DecisionEvent] = []

        def event(kind: EventType) -> DecisionEvent:
            return DecisionEvent(kind, now, imei.body, decision.imsi, status,
                                 decision.decisive.value, origin_host, interface)

        if EventType.LISTED in types and enforcement in (
            EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED
        ):
            out.append(event(EventType.LISTED))
        reasons = decision.reasons
        if EventType.CLONE_SUSPECTED in types and Reason.CLONE_SUSPECTED in reasons:
            out.append(event(EventType.CLONE_SUSPECTED))
        if EventType.REGISTRY_REPORTED in types and Reason.REGISTRY_REPORTED in reasons:
            out.append(event(EventType.REGISTRY_REPORTED))
        if EventType.NEW_IMSI in types and decision.imsi:
            self._now = out
            try:
                self.new_imsi.observe(event(EventType.NEW_IMSI))
            finally:
                self._now = None
        return out
