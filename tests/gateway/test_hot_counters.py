"""The per-check counters (gateway.hot_counters): each duration in the bucket bisect_left puts it
in, as prometheus_client's histogram does (the first bound at or above it; +Inf past the last)."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st

from gateway.hot_counters import HotCounters
from gateway.metrics import CHECK_BUCKETS


@given(st.lists(st.floats(0, 20, allow_nan=False) | st.sampled_from(CHECK_BUCKETS), max_size=30))
def test_each_duration_counted_in_its_bucket(durations: list[float]) -> None:
    counters = HotCounters(CHECK_BUCKETS)
    expected = [0.0] * (len(CHECK_BUCKETS) + 2)
    for seconds in durations:
        counters.count_check("accepted", "whitelisted", seconds)
        expected[bisect_left(CHECK_BUCKETS, seconds)] += 1
        expected[-1] += seconds
    if durations:
        assert counters.histograms["s13"] == expected
        assert counters.checks[("s13", "accepted", "whitelisted")] == len(durations)
    else:
        assert counters.histograms == {} and counters.checks == {}
