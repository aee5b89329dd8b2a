"""Counters, latency percentiles and the final report of a simulator run (text and JSON).

Latencies are kept as floats in chunked arrays (8 bytes each, :class:`Samples`; a run is
bounded in count and time), so percentiles are exact: the nearest-rank method,
p = sorted[ceil(q * n) - 1].
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))
# Latency histogram bucket upper bounds, in milliseconds (the last bucket is open).
HISTOGRAM_BOUNDS_MS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)
MAX_EXAMPLES = 10
S13_GOOD_RESULTS = frozenset(("2001", "5422"))

# How each interface names what the report shows: what a result key is, the answers' status,
# and what requests are matched by (RFC 6733 §6.2 for S13; the stream, RFC 9113 §5.1, for
# HTTP/2).
_WORDING = {
    "s13": ("results", "Equipment-Status",
            "{ids} End-to-End/Session-Id mismatches, {unmatched} answers with an unknown "
            "Hop-by-Hop"),
    "n5g-eir": ("HTTP status (cause)", "EquipmentStatus",
                "{unmatched} responses on an unknown stream"),
}


class Samples:
    """Float samples in chunks of at most CHUNK: appending never moves what is stored.

    One growing ``array`` is reallocated as it grows, and glibc may copy it whole to do so (it
    does once a freed large block has raised its mmap threshold, with another buffer growing
    beside it, as latencies and send lags do): measured up to 22 ms of CPU at 4 million samples,
    a stall of the generator's loop that the report would then count as the server's latency.
    A chunk's own growth copies at most CHUNK samples (32 KiB).
    """

    __slots__ = ("_chunks", "_last", "_len")
    CHUNK = 4096

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._last = array("d")
        self._chunks = [self._last]
        self._len = 0
        self.extend(values)

    def append(self, value: float) -> None:
        last = self._last
        if len(last) >= self.CHUNK:
            last = self._last = array("d")
            self._chunks.append(last)
        last.append(value)
        self._len += 1

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.append(value)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[float]:
        for chunk in self._chunks:
            yield from chunk

    def __getitem__(self, index: int) -> float:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("sample index out of range")
        return self._chunks[index // self.CHUNK][index % self.CHUNK]


def percentile(ordered: array | list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    n = len(ordered)
    if not n:
        return 0.0
    rank = max(1, math.ceil(q * n))
    return float(ordered[min(rank, n) - 1])


def latency_summary(values: Samples | array | list[float]) -> dict[str, float]:
    """Seconds in, milliseconds out: min, mean, p50, p90, p99, p99.9, max."""
    ordered = sorted(values)
    n = len(ordered)
    out = {"min": ordered[0] * 1e3 if n else 0.0, "mean": (sum(ordered) / n * 1e3) if n else 0.0}
    for name, q in PERCENTILES:
        out[name] = percentile(ordered, q) * 1e3
    out["max"] = ordered[-1] * 1e3 if n else 0.0
    return {k: round(v, 4) for k, v in out.items()}


def latency_histogram(values: Samples | array | list[float]) -> dict[str, int]:
    """Counts per bucket, labelled ``le_<bound>ms`` and ``gt_<last>ms``."""
    counts = [0] * (len(HISTOGRAM_BOUNDS_MS) + 1)
    bounds = [b / 1e3 for b in HISTOGRAM_BOUNDS_MS]
    for v in values:
        for i, b in enumerate(bounds):
            if v <= b:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    labels = [f"le_{b:g}ms" for b in HISTOGRAM_BOUNDS_MS] + [f"gt_{HISTOGRAM_BOUNDS_MS[-1]:g}ms"]
    return dict(zip(labels, counts, strict=True))


@dataclass(slots=True)
class Stats:
    """Everything counted during a run; updated on the hot path, so plain attributes."""

    sent: int = 0
    answered: int = 0
    timed_out: int = 0
    late: int = 0  # answers that came after their request had timed out
    lost: int = 0  # requests whose connection closed before the answer
    dropped: int = 0  # open loop: not sent, too many outstanding
    throttled: int = 0  # --doic: not sent, abated as the EIR's OC-OLR asked (RFC 7683 §6)
    send_errors: int = 0  # the connection refused to send (not open)
    id_mismatches: int = 0  # End-to-End or Session-Id of the answer differs from the request
    verified: int = 0  # answers compared with an expected outcome
    mismatches: int = 0  # ... that differed
    results: Counter[str] = field(default_factory=Counter)  # result code -> answers
    outcomes: Counter[str] = field(default_factory=Counter)  # outcome name -> answers
    categories: Counter[str] = field(default_factory=Counter)  # generator category -> sent
    latencies: Samples = field(default_factory=Samples)
    send_lag: Samples = field(default_factory=Samples)  # open loop: actual - scheduled
    mismatch_examples: list[dict[str, Any]] = field(default_factory=list)
    id_mismatch_examples: list[dict[str, Any]] = field(default_factory=list)
    # (check index, outcome) -> its example, if it got one: a check sent once per cycle through
    # the checks is reported once, with a count, instead of once per cycle.
    mismatch_by_check: dict[tuple[int, str], dict[str, Any] | None] = field(
        default_factory=dict
    )
    # Result keys that are answers rather than errors: S13's 2001 and 5422; N5g-eir's 200 and
    # 404 ERROR_EQUIPMENT_UNKNOWN.
    good_results: frozenset[str] = S13_GOOD_RESULTS

    @property
    def errors(self) -> int:
        """Answers that are not good results, plus requests never answered."""
        good = self.good_results
        bad_answers = sum(n for code, n in self.results.items() if code not in good)
        return bad_answers + self.timed_out + self.lost + self.dropped + self.send_errors

    def add_mismatch(
        self, imei: str, expected: str, got: str, check: int | None = None,
        line: int | None = None,
    ) -> None:
        """Count a mismatch; ``check`` (its index in the checks sent) groups repeats of one
        check, ``line`` is its line in an IMEI file."""
        self.mismatches += 1
        key = None if check is None else (check, got)
        if key is not None and key in self.mismatch_by_check:
            example = self.mismatch_by_check[key]
            if example is not None:
                example["count"] += 1
            return
        example = None
        if len(self.mismatch_examples) < MAX_EXAMPLES:
            example = {"imei": imei, "expected": expected, "got": got, "count": 1}
            if line is not None:
                example["line"] = line
            self.mismatch_examples.append(example)
        if key is not None:
            self.mismatch_by_check[key] = example

    @property
    def mismatching_checks(self) -> int:
        """Distinct checks (and outcomes) that mismatched, when checks were identified."""
        return len(self.mismatch_by_check) if self.mismatch_by_check else min(
            self.mismatches, len(self.mismatch_examples))

    def add_id_mismatch(self, what: str, sent: str, got: str) -> None:
        self.id_mismatches += 1
        if len(self.id_mismatch_examples) < MAX_EXAMPLES:
            self.id_mismatch_examples.append({"field": what, "sent": sent, "got": got})


@dataclass(slots=True)
class Report:
    """The final report: the method (what was asked) and the figures (what happened)."""

    method: dict[str, Any]
    stats: Stats
    duration: float  # first send to last answer (or stop), seconds
    unmatched_answers: int = 0  # answers the peer core discarded: unknown Hop-by-Hop
    connections_up: int = 0
    # Why the EIR ended the run early (a DPR with its Disconnect-Cause, a closed connection),
    # one entry per connection; empty when the run ended by its own limits.
    cut_short: list[str] = field(default_factory=list)
    # The simulator's own CPU (its thread: user + system) from the first send to the end of
    # the drain, and that span's wall time: whether the generator, not the server, set the rate.
    cpu_seconds: float = 0.0
    cpu_wall_seconds: float = 0.0

    @property
    def achieved_rate(self) -> float:
        return self.stats.answered / self.duration if self.duration > 0 else 0.0

    @property
    def cpu_us_per_answer(self) -> float:
        """The simulator's CPU per answer, µs (sending its request, reading and checking it)."""
        answered = self.stats.answered
        return self.cpu_seconds / answered * 1e6 if answered else 0.0

    @property
    def busy(self) -> float:
        """The simulator's share of one core over the run."""
        return self.cpu_seconds / self.cpu_wall_seconds if self.cpu_wall_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Every request answered, every answer matched and as expected."""
        s = self.stats
        return (
            s.sent > 0
            and s.answered == s.sent
            and s.mismatches == 0
            and s.id_mismatches == 0
            and self.unmatched_answers == 0
            and s.dropped == 0
            and s.send_errors == 0
            and not self.cut_short
        )

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        out: dict[str, Any] = {
            "method": self.method,
            "duration_seconds": round(self.duration, 6),
            "connections_up": self.connections_up,
            "sent": s.sent,
            "answered": s.answered,
            "timed_out": s.timed_out,
            "late_answers": s.late,
            "lost": s.lost,
            "dropped": s.dropped,
            "throttled": s.throttled,
            "send_errors": s.send_errors,
            "errors": s.errors,
            "achieved_rate": round(self.achieved_rate, 1),
            "results": dict(sorted(s.results.items())),
            "equipment_status": {
                k: v for k, v in sorted(s.outcomes.items())
                if not k.startswith(("RESULT_", "HTTP_"))
            },
            "outcomes": dict(sorted(s.outcomes.items())),
            "categories": dict(sorted(s.categories.items())),
            "latency_ms": latency_summary(s.latencies),
            "latency_histogram": latency_histogram(s.latencies),
            "matching": {
                "checked": s.answered,
                "id_mismatches": s.id_mismatches,
                "unmatched_answers": self.unmatched_answers,
                "examples": s.id_mismatch_examples,
            },
            "verification": {
                "verified": s.verified,
                "mismatches": s.mismatches,
                "mismatching_checks": s.mismatching_checks,
                "examples": s.mismatch_examples,
            },
            "cut_short": self.cut_short or None,
            "simulator": {
                "cpu_seconds": round(self.cpu_seconds, 6),
                "cpu_us_per_answer": round(self.cpu_us_per_answer, 2),
                "busy": round(self.busy, 3),
            },
            "ok": self.ok,
        }
        if len(s.send_lag):
            out["send_lag_ms"] = latency_summary(s.send_lag)
        return out

    def render_text(self) -> str:
        d = self.to_dict()
        m = self.method
        lat = d["latency_ms"]
        results_name, status_name, matching = _WORDING[m.get("interface") or "s13"]
        lines = [
            f"interface {m.get('interface') or 's13'}  "
            f"mode {m.get('mode')}  connections {m.get('connections')}  "
            + (f"window {m.get('window')}" if m.get("mode") == "closed" else f"rate {m.get('rate')}/s")
            + f"  transport {m.get('transport')}  target {m.get('target')}",
            f"duration {d['duration_seconds']:.3f} s  sent {d['sent']}  answered {d['answered']}  "
            f"timed out {d['timed_out']}  lost {d['lost']}  dropped {d['dropped']}  "
            + (f"throttled (DOIC) {d['throttled']}  " if m.get("doic") else "")
            + f"errors {d['errors']}",
            f"achieved {d['achieved_rate']:.1f} answers/s",
            f"{results_name}: " + ", ".join(f"{k}: {v}" for k, v in d["results"].items()),
            f"{status_name}: "
            + (", ".join(f"{k}: {v}" for k, v in d["equipment_status"].items()) or "none"),
            "latency ms: "
            + "  ".join(f"{k} {lat[k]:.3f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
            "matching: " + matching.format(ids=d["matching"]["id_mismatches"],
                                           unmatched=d["matching"]["unmatched_answers"])
            + f", {d['late_answers']} late",
            f"verification: {d['verification']['verified']} verified, "
            f"{d['verification']['mismatches']} mismatches"
            + (f" ({d['verification']['mismatching_checks']} distinct checks)"
               if d["verification"]["mismatches"] else ""),
        ]
        sim = d["simulator"]
        lines.append(f"simulator CPU: {sim['cpu_us_per_answer']:.1f} µs per answer, "
                     f"{sim['busy']:.0%} of a core"
                     + (" (the simulator may have set the rate)" if sim["busy"] >= 0.9 else ""))
        if "send_lag_ms" in d:
            lag = d["send_lag_ms"]
            lines.append(f"send lag ms (simulator): p50 {lag['p50']:.3f}  p99 {lag['p99']:.3f}  "
                         f"max {lag['max']:.3f}")
        for ex in d["verification"]["examples"]:
            where = f"line {ex['line']}: " if "line" in ex else ""
            times = f" ({ex['count']} times)" if ex.get("count", 1) > 1 else ""
            lines.append(f"  mismatch: {where}IMEI {ex['imei']} expected {ex['expected']} "
                         f"got {ex['got']}{times}")
        for ex in d["matching"]["examples"]:
            lines.append(f"  id mismatch: {ex['field']} sent {ex['sent']} got {ex['got']}")
        for why in self.cut_short:
            lines.append(f"CUT SHORT by the EIR: {why}")
        lines.append("OK" if d["ok"] else "NOT OK")
        return "\n".join(lines) + "\n"
