"""The event bus: decisions in (from the check path, O(1), never blocking), events out to each
sink from its own task through its own bounded queue. A full queue drops the event for that
sink and counts it; a sink that fails counts it and goes on. Metrics: ``eir_events_total{type}``
and ``eir_events_{delivered,failed,dropped,retries}_total{sink}``, ``eir_events_queued{sink}``,
``eir_events_new_imsi_lookups_total{outcome}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.classify import Decision
from gateway.events.detector import EventDetector
from gateway.events.model import DecisionEvent, EventType
from gateway.events.new_imsi import LookupOutcome
from gateway.events.sinks import DeliveryFailed, SinkStats

log = logging.getLogger("eir.events")

FAILURE_LOG_INTERVAL = 60.0  # seconds: at most one failure line per sink per minute


class Sink(Protocol):
    name: str
    stats: SinkStats

    async def deliver(self, event: DecisionEvent) -> None: ...

    async def close(self) -> None: ...


class EventBus:
    def __init__(
        self, detector: EventDetector, sinks: Sequence[Sink], queue_size: int = 10_000,
    ) -> None:
        self.detector = detector
        self.sinks = tuple(sinks)
        self.queue_size = queue_size
        self.raised: dict[EventType, int] = dict.fromkeys(EventType, 0)
        self._queues: list[asyncio.Queue[DecisionEvent]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_failure_log: dict[str, float] = {}
        detector.later = self._publish  # new_imsi events decided after a lookup

    def start(self) -> None:
        for sink in self.sinks:
            queue: asyncio.Queue[DecisionEvent] = asyncio.Queue(self.queue_size)
            self._queues.append(queue)
            self._tasks.append(asyncio.create_task(self._run(sink, queue)))

    def on_decision(
        self, decision: Decision, origin_host: str | None, interface: str,
        now: float | None = None,
    ) -> None:
        """Called by the check path for every decision: detection and queueing only."""
        events = self.detector.detect(decision, origin_host, interface,
                                      time.time() if now is None else now)
        for event in events:
            self._publish(event)

    def _publish(self, event: DecisionEvent) -> None:
        self.raised[event.type] += 1
        for sink, queue in zip(self.sinks, self._queues, strict=True):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                sink.stats.dropped += 1

    async def _run(self, sink: Sink, queue: asyncio.Queue[DecisionEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                await sink.deliver(event)
                sink.stats.delivered += 1
            except DeliveryFailed as exc:
                sink.stats.failed += 1
                self._log_failure(sink, str(exc))
            except Exception as exc:  # a sink bug must not end its task: count and go on
                sink.stats.failed += 1
                self._log_failure(sink, f"{type(exc).__name__}: {exc}")
            finally:
                queue.task_done()

    def _log_failure(self, sink: Sink, text: str) -> None:
        now = time.monotonic()
        if now - self._last_failure_log.get(sink.name, -FAILURE_LOG_INTERVAL) >= FAILURE_LOG_INTERVAL:
            self._last_failure_log[sink.name] = now
            log.warning("%s: event not delivered (%d so far): %s", sink.name, sink.stats.failed,
                        text)

    async def close(self, grace: float = 5.0) -> None:
        """Deliver what is queued (at most ``grace`` seconds), then stop the sinks."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(q.join() for q in self._queues))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sink in self.sinks:
            await sink.close()

    def queued(self, index: int) -> int:
        return self._queues[index].qsize() if index < len(self._queues) else 0


class EventsCollector:
    """The bus's counters, read at scrape time."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def collect(self) -> Iterator[Metric]:
        bus = self._bus
        raised = CounterMetricFamily("eir_events", "Decision events raised, by type.",
                                     labels=("type",))
        for kind, count in bus.raised.items():
            raised.add_metric((kind.value,), count)
        yield raised
        for field, text in (
            ("delivered", "Events a sink delivered."),
            ("failed", "Events a sink could not deliver (after its retries)."),
            ("dropped", "Events dropped because the sink's queue was full."),
            ("retries", "Delivery attempts repeated (reconnect, webhook retry)."),
        ):
            family = CounterMetricFamily(f"eir_events_{field}", text, labels=("sink",))
            for sink in bus.sinks:
                family.add_metric((sink.name,), getattr(sink.stats, field))
            yield family
        new_imsi = bus.detector.new_imsi
        if new_imsi.history is not None:
            lookups = CounterMetricFamily(
                "eir_events_new_imsi_lookups",
                "IMEIs asked of the observation log for their last IMSI (new_imsi), by outcome.",
                labels=("outcome",))
            for outcome in LookupOutcome:
                lookups.add_metric((outcome.value,), new_imsi.lookups[outcome])
            yield lookups
        queued = GaugeMetricFamily("eir_events_queued", "Events waiting in a sink's queue.",
                                   labels=("sink",))
        for i, sink in enumerate(bus.sinks):
            queued.add_metric((sink.name,), bus.queued(i))
        yield queued
