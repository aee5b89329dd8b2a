"""What the global IMEI registry (draft ITU-T Q.5057) says about one IMEI.

Shared by every backend (local, http, mirror) and by the gateway's classifier; the wire form is
``Verdict`` in ``shared/registry-api.yaml``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class RegistryStatus(enum.Enum):
    MANUFACTURED = "manufactured"
    NOT_MANUFACTURED = "not_manufactured"
    UNKNOWN = "unknown"

    # Members are singletons: identity hashing is correct and runs in C (Enum's __hash__ is
    # Python code; the classifier keys a table on the status of every fresh check's verdict).
    __hash__ = object.__hash__


class ReportType(enum.Enum):
    STOLEN = "stolen"
    LOST = "lost"
    DUPLICATE_IN_USE = "duplicate_in_use"
    COUNTERFEIT = "counterfeit"


class VerdictOrigin(enum.Enum):
    """Where the client got the verdict from (shown by `eir-gateway check`)."""

    CACHE = "cache"
    MIRROR = "mirror"
    ONLINE = "online"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Report:
    imei: str
    type: ReportType
    country: str
    since: str | None = None
    withdrawn: bool = False


class RegistryVerdict(NamedTuple):
    """A NamedTuple (immutable, as a frozen dataclass), since the embedded registry makes one
    per fresh check: a frozen dataclass's ``__init__`` costs several times as much."""

    imei: str  # 14-digit IMEI body (TAC + SNR)
    tac: str
    status: RegistryStatus
    manufacturer: str | None = None
    source: str = "none"  # declared_range | oem_query | none
    reports: tuple[Report, ...] = ()
    origin: VerdictOrigin = VerdictOrigin.ONLINE
    fetched_at: float = 0.0  # time.time() when the verdict was obtained

    @property
    def active_reports(self) -> tuple[Report, ...]:
        return tuple(r for r in self.reports if not r.withdrawn)

    # A verdict equals only a verdict with the same fields, never a plain tuple of them (as a
    # frozen dataclass would). Both operators: a tuple's own != would say the opposite, and
    # a tuple on the left defers to these (a subclass's reflected method goes first).
    def __eq__(self, other: object) -> bool:
        return type(other) is RegistryVerdict and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return tuple.__hash__(self)


class RegistryUnavailable(Exception):
    """No verdict could be obtained (timeout, breaker open, transport or protocol error)."""


class VerdictSource(Protocol):
    """The slot the classifier calls. ``cached`` never blocks; ``check`` may wait on the network."""

    def cached(self, imei: str) -> RegistryVerdict | None: ...

    async def check(self, imei: str) -> RegistryVerdict: ...

    async def close(self) -> None: ...
