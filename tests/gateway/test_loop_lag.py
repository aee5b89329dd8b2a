"""Event loop lag: the Diameter server's load sampler sees a stall, the histogram exports it."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from diameter.node import Node
from diameter.overload import OverloadSettings
from diameter.settings import PeerSettings
from diameter.transport.load import LoadSampler
from gateway.metrics import LoopLagHistogram


def test_histogram_buckets_and_exposition() -> None:
    histogram = LoopLagHistogram()
    for lag in (0.0001, 0.0003, 0.003, 0.03, 5.0, -0.001):
        histogram.observe(lag)
    registry = CollectorRegistry()
    registry.register(histogram)
    text = generate_latest(registry).decode()
    assert 'eir_event_loop_lag_seconds_bucket{le="0.00025"} 2.0' in text  # -0.001 counts as 0
    assert 'eir_event_loop_lag_seconds_bucket{le="0.005"} 4.0' in text
    assert 'eir_event_loop_lag_seconds_bucket{le="0.05"} 5.0' in text
    assert 'eir_event_loop_lag_seconds_bucket{le="+Inf"} 6.0' in text
    assert "eir_event_loop_lag_seconds_count 6.0" in text


async def test_load_sampler_feeds_the_histogram_and_sees_a_blocked_loop() -> None:
    histogram = LoopLagHistogram()
    samples: list[float] = []

    def observe(lag: float) -> None:
        samples.append(lag)
        histogram.observe(lag)

    # Overload control off: the sampler still measures the lag for the metric.
    node = Node(PeerSettings(), [], overload=OverloadSettings(target_delay=0.0))
    sampler = LoadSampler(node, [], interval=0.01)
    sampler.lag_observers.append(observe)
    sampler.start()
    try:
        while len(samples) < 2:
            await asyncio.sleep(0.01)
        time.sleep(0.06)  # a stall: nothing else runs on the loop meanwhile
        count = len(samples)
        while len(samples) == count:
            await asyncio.sleep(0.01)
    finally:
        sampler.stop()
    # The timer was due at most one interval into the stall: it fired at least 50 ms late.
    assert max(samples) >= 0.05
    assert sum(histogram.counts[histogram.bounds.index(0.05) :]) >= 1
