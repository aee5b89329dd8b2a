"""Percentiles, histograms and report fields."""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from gateway.simulator.report import (
    Report,
    Samples,
    Stats,
    latency_histogram,
    latency_summary,
    percentile,
)


@given(st.lists(st.floats(0.0, 100.0), max_size=3 * Samples.CHUNK + 5))
def test_samples_hold_what_a_list_holds(values: list[float]) -> None:
    samples = Samples(values)
    assert len(samples) == len(values)
    assert list(samples) == values
    if values:
        assert samples[0] == values[0] and samples[-1] == values[-1]
        assert samples[len(values) // 2] == values[len(values) // 2]
    assert latency_summary(samples) == latency_summary(values)
    assert latency_histogram(samples) == latency_histogram(values)


def test_samples_never_move_what_they_stored() -> None:
    """Appending never reallocates a filled chunk (a growing array would be copied whole)."""
    samples = Samples()
    for i in range(Samples.CHUNK):
        samples.append(float(i))
    first = samples._chunks[0]
    address = first.buffer_info()[0]
    for i in range(10 * Samples.CHUNK):
        samples.append(float(i))
    assert samples._chunks[0] is first and first.buffer_info()[0] == address
    assert max(len(chunk) for chunk in samples._chunks) == Samples.CHUNK
    try:
        samples[11 * Samples.CHUNK]
    except IndexError:
        pass
    else:
        raise AssertionError("an index past the end must raise")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.90) == 90.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile([7.0], 0.5) == 7.0
    assert percentile([], 0.5) == 0.0


def test_summary_in_milliseconds_and_ordered() -> None:
    values = array("d", [0.001 * i for i in range(1000, 0, -1)])  # 1 ms .. 1 s, unsorted
    s = latency_summary(values)
    assert s["min"] == 1.0 and s["max"] == 1000.0
    assert s["p50"] == 500.0 and s["p99"] == 990.0 and s["p99.9"] == 999.0
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["p99.9"] <= s["max"]


def test_histogram_buckets() -> None:
    h = latency_histogram([0.00005, 0.0001, 0.0003, 0.0015, 2.0])
    assert h["le_0.1ms"] == 2 and h["le_0.5ms"] == 1 and h["le_2ms"] == 1 and h["gt_1000ms"] == 1
    assert sum(h.values()) == 5


def test_report_ok_and_errors() -> None:
    stats = Stats(sent=3, answered=3)
    stats.results.update({"2001": 2, "5422": 1})
    stats.outcomes.update({"WHITELISTED": 2, "EQUIPMENT_UNKNOWN": 1})
    stats.latencies.extend([0.001, 0.002, 0.003])
    report = Report({"mode": "closed"}, stats, 1.5)
    d = report.to_dict()
    assert d["ok"] and d["errors"] == 0 and d["achieved_rate"] == 2.0
    assert d["equipment_status"] == {"EQUIPMENT_UNKNOWN": 1, "WHITELISTED": 2}
    stats.results["5005"] += 1
    stats.timed_out += 1
    assert stats.errors == 2
    stats.add_mismatch("123", "WHITELISTED", "BLACKLISTED")
    assert not report.ok and "mismatch: IMEI 123" in report.render_text()
