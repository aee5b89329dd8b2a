"""Decision events and how a decision is turned into them (sans-IO: no I/O, time passed in)."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.classify import Decision
from gateway.observations import mask_imsi
from gateway.policy import EquipmentStatus, Reason


class EventType(enum.Enum):
    LISTED = "listed"  # a check answered (or, in monitor mode, decided) BLACKLISTED or GREYLISTED
    NEW_IMSI = "new_imsi"  # an IMEI seen with another IMSI than last time (SIM swap, resale)
    CLONE_SUSPECTED = "clone_suspected"
    REGISTRY_REPORTED = "registry_reported"  # the global registry reports it stolen/lost/...


@dataclass(frozen=True, slots=True)
class DecisionEvent:
    type: EventType
    at: float  # Unix time of the decision
    imei: str  # 14-digit body
    imsi: str | None
    status: str  # what enforcement answers: WHITELISTED, BLACKLISTED, GREYLISTED, EQUIPMENT_UNKNOWN
    reason: str  # the deciding reason
    origin_host: str | None  # the MME (or AMF) that asked
    interface: str  # "s13", ...
    previous_imsi: str | None = None  # NEW_IMSI: the IMSI seen before

    def as_json(self, mask: bool) -> dict[str, Any]:
        def imsi(value: str | None) -> str | None:
            return (mask_imsi(value) if mask else value) or None

        return {
            "type": self.type.value,
            "time": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="microseconds"),
            "imei": self.imei,
            "imsi": imsi(self.imsi),
            "previous_imsi": imsi(self.previous_imsi),
            "status": self.status,
            "reason": self.reason,
            "origin_host": self.origin_host,
            "interface": self.interface,
        }


class EventDetector:
    """Which events a decision raises. ``NEW_IMSI`` remembers the last IMSI of up to ``memory``
    IMEIs (least recently seen forgotten first): a restart forgets them, so the first sighting
    after it raises nothing."""

    def __init__(self, types: Iterable[EventType], memory: int = 100_000) -> None:
        self.types = frozenset(types)
        self.memory = memory
        self._last_imsi: OrderedDict[str, str] = OrderedDict()

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

        def raise_(kind: EventType, previous: str | None = None) -> None:
            out.append(DecisionEvent(kind, now, imei.body, decision.imsi, status,
                                     decision.decisive.value, origin_host, interface, previous))

        if EventType.LISTED in types and enforcement in (
            EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED
        ):
            raise_(EventType.LISTED)
        reasons = decision.reasons
        if EventType.CLONE_SUSPECTED in types and Reason.CLONE_SUSPECTED in reasons:
            raise_(EventType.CLONE_SUSPECTED)
        if EventType.REGISTRY_REPORTED in types and Reason.REGISTRY_REPORTED in reasons:
            raise_(EventType.REGISTRY_REPORTED)
        imsi = decision.imsi
        if EventType.NEW_IMSI in types and imsi:
            seen = self._last_imsi
            previous = seen.get(imei.body)
            if previous is None:
                seen[imei.body] = imsi
                if len(seen) > self.memory:
                    seen.popitem(last=False)
            else:
                seen.move_to_end(imei.body)
                if previous != imsi:
                    seen[imei.body] = imsi
                    raise_(EventType.NEW_IMSI, previous)
        return out
