"""The per-request counters of a gateway: eir_checks_total, eir_check_duration_seconds,
diameter_messages_total and diameter_avp_flag_deviations_total.

Plain dict increments on the event loop's thread (no locks: prometheus_client's labelled
children take one per increment), compiled with the hot modules (``eir_compiled``), since every
check and every Diameter message counts here; ``gateway.metrics.HotPathCollector`` copies the
dicts at scrape time (one C-level copy each, atomic under the GIL) into metric families.
"""

from __future__ import annotations


class HotCounters:
    """Counts by label tuple; ``histograms`` holds per interface (s13, n5g_eir) the count of
    each bucket of ``bounds`` (the last one: +Inf) and the sum of the observations in [-1]."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.checks: dict[tuple[str, str, str], int] = {}
        self.histograms: dict[str, list[float]] = {}
        self.messages: dict[tuple[str, str, int | None], int] = {}
        self.flag_deviations: dict[str, int] = {}

    def count_check(self, status: str, reason: str, seconds: float, interface: str = "s13") -> None:
        key = (interface, status, reason)
        checks = self.checks
        checks[key] = checks.get(key, 0) + 1
        histogram = self.histograms.get(interface)
        if histogram is None:
            histogram = self.histograms[interface] = [0.0] * (len(self.bounds) + 2)
        # bisect_left, inline: a dozen compiled comparisons cost less than the C call.
        bucket = 0
        for bound in self.bounds:
            if bound >= seconds:
                break
            bucket += 1
        histogram[bucket] += 1
        histogram[-1] += seconds

    def on_message(
        self, direction: str, command: str, result_code: int | None, count: int = 1
    ) -> None:
        key = (direction, command, result_code)
        messages = self.messages
        messages[key] = messages.get(key, 0) + count

    def on_avp_flag_deviation(self, avp: str) -> None:
        # ``avp`` is a dictionary name: a bounded label set.
        deviations = self.flag_deviations
        deviations[avp] = deviations.get(avp, 0) + 1
