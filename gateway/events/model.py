"""Decision events: their types and what one carries."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.observations import mask_imsi


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
