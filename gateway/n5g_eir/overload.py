"""N5g-eir's overload signal from the Diameter node's overload control (``diameter.overload``).

That control measures the queueing delay on the event loop both interfaces share and keeps a
reduction percentage; N5g-eir refuses the same share of its new checks with 503 NF_CONGESTION and
Retry-After, spread evenly by the loss algorithm of RFC 7683 §6 (a credit counter of its own, so
that the Diameter side's count of 3004 answers stays S13's).
"""

from __future__ import annotations

from typing import Protocol


class ReductionSource(Protocol):
    reduction: int  # percent of new requests to refuse (diameter.overload.OverloadControl)


class DiameterOverload:
    """An :class:`~gateway.n5g_eir.settings.OverloadSignal` over the node's reduction."""

    def __init__(self, control: ReductionSource, retry_after: float) -> None:
        self._control = control
        self._retry_after = retry_after
        self._credit = 0

    def retry_after(self) -> float | None:
        reduction = self._control.reduction
        if not reduction:
            return None
        self._credit += reduction
        if self._credit < 100:
            return None
        self._credit -= 100
        return self._retry_after
