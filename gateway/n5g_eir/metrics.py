"""HTTP metrics of the N5g-eir server (Prometheus conventions): requests by method and status,
request duration, open connections. Plain counters read at scrape time, like the check
metrics (updated from the event loop only)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway.metrics import CHECK_BUCKETS, cumulative_buckets

# RFC 9110 §9 methods; anything else is counted as "other" so a client cannot grow the label set.
_METHODS = {m.encode(): m for m in
            ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")}
_BUCKETS = CHECK_BUCKETS


class HttpMetrics:
    """http_requests_total{interface,method,status}, http_request_duration_seconds{interface},
    http_connections{interface}, http_connections_refused_total{interface,reason}."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._requests: dict[tuple[str, int], int] = {}
        self._histogram = [0.0] * (len(_BUCKETS) + 2)  # buckets, +Inf, then the sum
        self.connections = 0
        self.refused: dict[str, int] = {}  # connections refused, by reason (network, limit)

    def count(self, method: bytes, status: int, seconds: float) -> None:
        key = (_METHODS.get(method, "other"), status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        histogram = self._histogram
        histogram[bisect_left(_BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        interface = self.interface
        requests = CounterMetricFamily(
            "http_requests",
            "HTTP requests answered, by interface, method and status code.",
            labels=("interface", "method", "code"),
        )
        for (method, status), count in self._requests.copy().items():
            requests.add_metric((interface, method, str(status)), count)
        yield requests
        counts = list(self._histogram)
        duration = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Time from a complete HTTP request to its response being queued for sending.",
            labels=("interface",),
        )
        duration.add_metric((interface,), cumulative_buckets(_BUCKETS, counts), counts[-1])
        yield duration
        connections = GaugeMetricFamily(
            "http_connections", "Open HTTP/2 connections, by interface.", labels=("interface",)
        )
        connections.add_metric((interface,), self.connections)
        yield connections
        refused = CounterMetricFamily(
            "http_connections_refused",
            "HTTP/2 connections refused, by interface and reason: network (a source address "
            "outside allowed_networks), limit (past max_connections).",
            labels=("interface", "reason"),
        )
        for reason in ("network", "limit"):
            refused.add_metric((interface, reason), self.refused.get(reason, 0))
        yield refused
