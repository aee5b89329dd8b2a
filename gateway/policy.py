"""Reasons, Equipment-Status and the policy that maps one onto the other (DESIGN.md §4).

Equipment-Status wire values: TS 29.272 §7.3.51 (0 WHITELISTED, 1 BLACKLISTED, 2 GREYLISTED).
The classifier produces reasons in the order of :class:`Reason` (the DESIGN.md §4 table, with
``clone_suspected`` after ``tac_unknown``). The first *decisive* reason sets the answer, where a
reason is decisive when it is ``whitelisted`` (an exception wins over everything), when its
configured status is not WHITELISTED, or when it is in ``unknown_equipment`` (answer 5422
DIAMETER_ERROR_EQUIPMENT_UNKNOWN, TS 29.272 §7.4.3). With no decisive reason the answer is
WHITELISTED.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from diameter.dictionary.ts29272_s13 import EquipmentStatus

__all__ = ["DEFAULT_STATUS", "REASON_LABEL", "STATUS_LABEL", "EquipmentStatus", "Outcome", "Policy", "Reason"]


class Reason(enum.Enum):
    """Why a check came out as it did; definition order is precedence order."""

    WHITELISTED = "whitelisted"
    BLACKLISTED = "blacklisted"
    GREYLISTED = "greylisted"
    MALFORMED = "malformed"
    BAD_CHECK_DIGIT = "bad_check_digit"
    NULL_OR_TEST = "null_or_test"
    TAC_UNKNOWN = "tac_unknown"
    CLONE_SUSPECTED = "clone_suspected"
    REGISTRY_NOT_MANUFACTURED = "registry_not_manufactured"
    REGISTRY_REPORTED = "registry_reported"
    REGISTRY_UNKNOWN = "registry_unknown"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    CLEAN = "clean"

    # Members are singletons: identity hashing is correct and runs in C (Enum's own __hash__
    # is Python code, and reasons are hashed several times per check).
    __hash__ = object.__hash__


W, B, G = EquipmentStatus.WHITELISTED, EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED

DEFAULT_STATUS: Mapping[Reason, EquipmentStatus] = MappingProxyType(
    {
        Reason.WHITELISTED: W,
        Reason.BLACKLISTED: B,
        Reason.GREYLISTED: G,
        Reason.MALFORMED: B,
        Reason.BAD_CHECK_DIGIT: B,
        Reason.NULL_OR_TEST: G,
        Reason.TAC_UNKNOWN: G,
        Reason.CLONE_SUSPECTED: G,
        Reason.REGISTRY_NOT_MANUFACTURED: B,
        Reason.REGISTRY_REPORTED: B,
        Reason.REGISTRY_UNKNOWN: W,
        Reason.REGISTRY_UNAVAILABLE: W,  # fail open
        Reason.CLEAN: W,
    }
)

# Each reason's metric label (its value), read per check: Enum's ``value`` is a Python-level
# property, a dict look-up of a member hashes in C.
REASON_LABEL: dict[Reason, str] = {reason: reason.value for reason in Reason}

# The status label of eir_checks_total for each answer (None: unknown equipment), on every
# interface (S13, N5g-eir).
STATUS_LABEL: dict[EquipmentStatus | None, str] = {
    EquipmentStatus.WHITELISTED: "whitelisted",
    EquipmentStatus.BLACKLISTED: "blacklisted",
    EquipmentStatus.GREYLISTED: "greylisted",
    None: "equipment_unknown",
}

REASON_RANK: Mapping[Reason, int] = MappingProxyType({r: i for i, r in enumerate(Reason)})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the policy makes of a reason list. ``None`` status = 5422 EQUIPMENT_UNKNOWN."""

    status: EquipmentStatus | None  # what is answered
    enforcement: EquipmentStatus | None  # what enforcement answers (== status unless monitoring)
    decisive: Reason
    monitor_mode: bool


@dataclass(frozen=True, slots=True)
class Policy:
    status: Mapping[Reason, EquipmentStatus] = field(default_factory=lambda: DEFAULT_STATUS)
    unknown_equipment: frozenset[Reason] = frozenset()
    monitor_mode: bool = False
    _outcomes: dict[tuple[Reason, ...], Outcome] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def build(
        cls,
        overrides: Mapping[Reason, EquipmentStatus] | None = None,
        unknown_equipment: Iterable[Reason] = (),
        monitor_mode: bool = False,
    ) -> Policy:
        table = dict(DEFAULT_STATUS)
        table.update(overrides or {})
        return cls(MappingProxyType(table), frozenset(unknown_equipment), monitor_mode)

    def is_decisive(self, reason: Reason) -> bool:
        return (
            reason is Reason.WHITELISTED
            or reason in self.unknown_equipment
            or self.status[reason] is not EquipmentStatus.WHITELISTED
        )

    def first_decisive(self, reasons: Sequence[Reason]) -> Reason | None:
        for reason in reasons:
            if self.is_decisive(reason):
                return reason
        return None

    def decide(self, reasons: Sequence[Reason]) -> Outcome:
        key = tuple(reasons)
        cache = self._outcomes
        outcome = cache.get(key)
        if outcome is None:
            outcome = self._decide(key)
            if len(cache) < 4096:  # distinct reason lists are few; bound it anyway
                cache[key] = outcome
        return outcome

    def _decide(self, reasons: Sequence[Reason]) -> Outcome:
        decisive = self.first_decisive(reasons)
        if decisive is None:
            decisive = reasons[0] if reasons else Reason.CLEAN
        enforcement: EquipmentStatus | None
        if decisive in self.unknown_equipment:
            enforcement = None
        else:
            enforcement = self.status[decisive]
        if self.monitor_mode:
            return Outcome(EquipmentStatus.WHITELISTED, enforcement, decisive, True)
        return Outcome(enforcement, enforcement, decisive, False)
