"""Prometheus collectors of the registry client (DESIGN.md §6).

- ``registry_requests_total{outcome}``: HTTP round trips to the registry by outcome: ``ok``,
  ``client_error`` (4xx other than 429), ``throttled`` (429), ``server_error`` (5xx),
  ``timeout``, ``connection_error``, ``invalid_response`` (not the contract: content type, JSON,
  shape), ``circuit_open`` (IMEIs the breaker refused, on a first try or a retry: nothing sent)
  and
  ``pool_exhausted`` (an IMEI dropped unsent: no request could go out for it, with
  ``max_connections`` out or the breaker holding back, before every check waiting for it gave up).
- ``registry_request_duration_seconds``: histogram of round-trip times (every attempt).
- ``registry_cache_events_total{event}``: ``hit``, ``negative_hit`` (an ``unknown`` verdict
  served from cache), ``miss`` (a check that had to ask the registry: counted once, however
  often the cache was looked at), ``expired``, ``store``, ``evict``, ``mirror_hit``.
- ``registry_circuit_state``: 0 closed, 1 half-open, 2 open.

Collectors are created once per ``CollectorRegistry`` and shared by every client using it, so
tests can build many clients against fresh registries (or the default one) without
"Duplicated timeseries" errors. Nothing is created at import time. Label values never carry
IMEIs (DESIGN.md §6).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = (
    "ok",
    "client_error",
    "throttled",
    "server_error",
    "timeout",
    "connection_error",
    "invalid_response",
    "circuit_open",
    "pool_exhausted",
)
CACHE_EVENTS = ("hit", "negative_hit", "miss", "expired", "store", "evict", "mirror_hit")
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class RegistryMetrics:
    requests: Counter
    duration: Histogram
    cache_events: Counter
    circuit_state: Gauge


_HOLDER: weakref.WeakKeyDictionary[CollectorRegistry, RegistryMetrics] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def registry_metrics(registry: CollectorRegistry | None = None) -> RegistryMetrics:
    """The collectors registered in ``registry`` (default: the process-wide REGISTRY)."""
    target = REGISTRY if registry is None else registry
    with _LOCK:
        metrics = _HOLDER.get(target)
        if metrics is None:
            metrics = RegistryMetrics(
                requests=Counter(
                    "registry_requests_total",
                    "Requests to the IMEI registry by outcome.",
                    ["outcome"],
                    registry=target,
                ),
                duration=Histogram(
                    "registry_request_duration_seconds",
                    "Round-trip time of requests to the IMEI registry.",
                    buckets=DURATION_BUCKETS,
                    registry=target,
                ),
                cache_events=Counter(
                    "registry_cache_events_total",
                    "Registry verdict cache events.",
                    ["event"],
                    registry=target,
                ),
                circuit_state=Gauge(
                    "registry_circuit_state",
                    "Registry circuit breaker: 0 closed, 1 half-open, 2 open.",
                    registry=target,
                ),
            )
            for outcome in OUTCOMES:  # export zeros so rates work from the start
                metrics.requests.labels(outcome=outcome)
            for event in CACHE_EVENTS:
                metrics.cache_events.labels(event=event)
            _HOLDER[target] = metrics
        return metrics
