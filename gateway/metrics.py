"""Prometheus metrics and the operations HTTP endpoints (/metrics, /healthz, /readyz).

Metric names are DESIGN.md §6. Label values are bounded sets (statuses, reasons, command names,
result codes): never an IMEI or an IMSI. Each gateway owns its own CollectorRegistry so that
several gateways (tests) can live in one process.
"""

from __future__ import annotations

import asyncio
import json
import socket
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from gateway.hot_counters import HotCounters

# Check latency buckets: the S13 path answers in well under a millisecond on a cache hit; the
# upper buckets catch registry waits (bounded by the registry budget).
CHECK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def cumulative_buckets(
    bounds: tuple[float, ...], counts: list[float]
) -> list[tuple[str, float]]:
    """Prometheus histogram buckets from per-bucket counts (the +Inf bucket last; anything
    after it, such as a running sum, is ignored)."""
    out, total = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=False):
        total += int(count)
        out.append((floatToGoString(bound), float(total)))
    return out


class GatewayMetrics:
    """Collectors of one gateway. Labelled children are cached: the hot path does a dict lookup."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        # The per-request metrics are plain counters read at scrape time (HotPathCollector):
        # prometheus_client's labelled children take a lock per increment.
        self.hot = HotPathCollector()
        self.registry.register(self.hot)
        self.loop_lag = LoopLagHistogram()
        self.registry.register(self.loop_lag)
        self.peers = Gauge(
            "diameter_peers",
            "Diameter peer connections by RFC 6733 peer state.",
            ("state",),
            registry=self.registry,
        )
        self.monitor_mode = Gauge(
            "eir_monitor_mode",
            "1 when the policy runs in monitor mode (everything answered WHITELISTED).",
            registry=self.registry,
        )
        self.list_entries = Gauge(
            "eir_list_entries",
            "Entries loaded in the operator lists, by list.",
            ("list",),
            registry=self.registry,
        )
        self.lists_version = Gauge(
            "eir_lists_version", "Version of the operator lists in use.", registry=self.registry
        )
        self.reloads = Counter(
            "eir_config_reloads",
            "SIGHUP reloads by outcome: ok, or refused (the configuration file was invalid).",
            ("outcome",),
            registry=self.registry,
        )
        self.last_reload = Gauge(
            "eir_config_last_reload_success_timestamp_seconds",
            "When the last successful SIGHUP reload ended (Unix time; 0: none yet).",
            registry=self.registry,
        )
        self.lists_import_failed = Gauge(
            "eir_lists_import_failed",
            "1 when the last re-import of a changed lists.import_files file was refused (its "
            "previous entries stay in force), else 0.",
            registry=self.registry,
        )
        self.tac_entries = Gauge(
            "eir_tac_entries", "TACs loaded from the TAC database.", registry=self.registry
        )
        self._peer_states: dict[str, Any] = {}
        self.connections_gone = 0
        self.count_check = self.hot.count_check
        self.on_message = self.hot.on_message
        self.on_avp_flag_deviation = self.hot.on_avp_flag_deviation

    def watch_observations(self, stats: Any) -> None:
        """Export an ObservationLog's counters (read at scrape time)."""
        self.registry.register(ObservationCollector(stats))

    def watch_overload(self, node: Any) -> None:
        """Export a Diameter node's overload control and malformed-peer counters."""
        self.registry.register(OverloadCollector(node))

    def watch_lanes(self, node: Any) -> None:
        """Export how a Diameter node's application requests took its lanes."""
        self.registry.register(LaneCollector(node))

    def watch_decision_cache(self, classifier: Any) -> None:
        """Export a Classifier's decision cache counters (read at scrape time)."""
        self.registry.register(DecisionCacheCollector(classifier))

    def watch_readiness(self, readiness: Callable[[], dict[str, bool]]) -> None:
        """Export eir_ready: what /readyz answers, for alerting (read at scrape time)."""
        self.registry.register(ReadinessCollector(readiness))

    def on_peer_state(self, peer: object, old_state: object, new_state: object) -> None:
        if new_state is None:
            self.connections_gone += 1  # diameter.peer: None is "the connection is gone"
        for state, delta in ((old_state, -1), (new_state, 1)):
            if state is None:
                continue
            name = getattr(state, "name", str(state))
            child = self._peer_states.get(name)
            if child is None:
                child = self._peer_states[name] = self.peers.labels(name)
            child.inc(delta)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HotPathCollector:
    """eir_checks_total, eir_check_duration_seconds, diameter_messages_total and
    diameter_avp_flag_deviations_total.

    Updated from the event loop thread only (dict increments, no locks); a scrape copies the
    dicts (one C-level copy each, atomic under the GIL) and builds the metric families.
    """

    def __init__(self, buckets: tuple[float, ...] = CHECK_BUCKETS) -> None:
        self._bounds = buckets
        self.counters = counters = HotCounters(buckets)  # compiled (gateway.hot_counters)
        self.count_check = counters.count_check
        self.on_message = counters.on_message
        self.on_avp_flag_deviation = counters.on_avp_flag_deviation

    def collect(self) -> Iterator[Metric]:
        checks = CounterMetricFamily(
            "eir_checks_total",
            "IMEI checks by interface (s13, n5g_eir), the status enforcement answers (or would "
            "answer, in monitor mode) and the deciding reason.",
            labels=("interface", "status", "reason"),
        )
        for labels, count in self.counters.checks.copy().items():
            checks.add_metric(labels, count)
        yield checks
        durations = HistogramMetricFamily(
            "eir_check_duration_seconds",
            "Time from a decoded request (ME-Identity-Check-Request, equipment-status GET) to "
            "its encoded answer.",
            labels=("interface",),
        )
        for interface, histogram in self.counters.histograms.copy().items():
            counts = list(histogram)
            durations.add_metric(
                (interface,), cumulative_buckets(self._bounds, counts), counts[-1]
            )
        yield durations
        messages = CounterMetricFamily(
            "diameter_messages_total",
            "Diameter messages by direction (in/out), command (e.g. ECR, CEA) and Result-Code.",
            labels=("direction", "command", "result"),
        )
        for (direction, command, result), count in self.counters.messages.copy().items():
            messages.add_metric((direction, command, "" if result is None else str(result)), count)
        yield messages
        deviations = CounterMetricFamily(
            "diameter_avp_flag_deviations_total",
            "Received AVPs whose M bit was set against RFC 6733 §4.5 and accepted "
            "(diameter.strict_avp_flags off), by AVP name.",
            labels=("avp",),
        )
        for avp, count in self.counters.flag_deviations.copy().items():
            deviations.add_metric((avp,), count)
        yield deviations


# Event loop lag buckets: uvloop's timers are millisecond-precise, so the lowest buckets hold
# the timer's own resolution; a stall shows from 2 ms up.
LAG_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class LoopLagHistogram:
    """eir_event_loop_lag_seconds: ``observe`` from the loop (the Diameter server's load
    sampler, diameter.transport.load), read at scrape."""

    def __init__(self, buckets: tuple[float, ...] = LAG_BUCKETS) -> None:
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # last one: +Inf
        self.sum = 0.0

    def observe(self, lag: float) -> None:
        lag = max(lag, 0.0)
        self.counts[bisect_left(self.bounds, lag)] += 1
        self.sum += lag

    @property
    def samples(self) -> int:
        return sum(self.counts)

    def collect(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(
            "eir_event_loop_lag_seconds",
            "How late a timer on the event loop fired (sampled every "
            "diameter.overload_interval_seconds): how long any check arriving then waited "
            "behind whatever held the loop.",
            buckets=cumulative_buckets(self.bounds, list(self.counts)),
            sum_value=self.sum,
        )


class ObservationCollector:
    """eir_observations_*_total from the observation log's own counters."""

    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, value, text in (
            ("recorded", stats.recorded, "IMEI-IMSI observations queued for the log."),
            ("dropped", stats.dropped, "Observations dropped because the write queue was full."),
            ("written", stats.written, "Observations written to the log database."),
            ("write_errors", stats.errors, "Batches of observations the database refused."),
            ("writer_restarts", stats.writer_restarts,
             "Observation writer processes that ended unasked and were started again."),
        ):
            yield CounterMetricFamily(f"eir_observations_{name}", text, value=value)


# Per-peer series stay bounded: only the most refused open peers are exported.
_REFUSED_PEERS_SHOWN = 16


def _by_share(item: tuple[int, object]) -> int:
    return item[0]


class OverloadCollector:
    """diameter_overload_*, diameter_malformed_disconnects_total and
    diameter_connections_refused_total, read from the node."""

    def __init__(self, node: Any) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        overload = self._node.overload
        yield GaugeMetricFamily(
            "diameter_overload_state",
            "1 while overload control refuses a share of new requests with 3004 (and asks DOIC "
            "peers to reduce), else 0.",
            value=1 if overload.overloaded else 0,
        )
        yield GaugeMetricFamily(
            "diameter_overload_reduction_percent",
            "Share of new requests refused with 3004, and the OC-Reduction-Percentage sent to "
            "DOIC peers (RFC 7683).",
            value=overload.reduction,
        )
        yield GaugeMetricFamily(
            "diameter_queueing_delay_seconds",
            "Last measured wait of a request arriving now: event loop lag plus received octets "
            "not yet handled over the rate they are handled at.",
            value=overload.delay,
        )
        peers = GaugeMetricFamily(
            "diameter_overload_peer_reduction_percent",
            "Share of its requests overload control refuses from a peer sending more than its "
            f"fair share (the {_REFUSED_PEERS_SHOWN} most refused open peers, by Origin-Host).",
            labels=("peer",),
        )
        refused = [(share, peer) for peer, share in overload.shares.items() if share]
        refused.sort(key=_by_share, reverse=True)
        for share, peer in refused[:_REFUSED_PEERS_SHOWN]:
            info = getattr(peer, "info", None)
            peers.add_metric((getattr(info, "origin_host", "unknown"),), share)
        yield peers
        yield CounterMetricFamily(
            "diameter_overload_rejected",
            "Requests answered 3004 DIAMETER_TOO_BUSY by overload control (not decoded).",
            value=overload.refused,
        )
        yield CounterMetricFamily(
            "diameter_malformed_disconnects",
            "Connections closed (DPR, DO_NOT_WANT_TO_TALK_TO_YOU) for sending more malformed "
            "requests than diameter.malformed_limit within malformed_window_seconds.",
            value=self._node.malformed_disconnects,
        )
        yield CounterMetricFamily(
            "diameter_connections_refused",
            "Connections closed at accept, nothing read: diameter.max_connections were open.",
            value=self._node.connections_refused,
        )


class LaneCollector:
    """diameter_lane_requests_total and diameter_lane_plans*, read from the node's lanes
    (diameter.lane: plain counters the compiled path adds to)."""

    # Each outcome label is the name of its diameter.lane.Lanes counter.
    OUTCOMES = ("taken", "no_plan", "unmatched", "destination", "application")

    def __init__(self, node: Any) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        lanes = self._node.lanes
        requests = CounterMetricFamily(
            "diameter_lane_requests",
            "Application requests of open connections by how they were read: taken by the lane "
            "(a learnt shape, one walk of its octets), or on the full path because no_plan "
            "(none learnt yet), unmatched (no learnt shape fits, or a value fails its check), "
            "destination (Destination-Host/-Realm not ours) or application (not negotiated).",
            labels=("outcome",),
        )
        for outcome in self.OUTCOMES:
            requests.add_metric((outcome,), getattr(lanes, outcome))
        yield requests
        yield GaugeMetricFamily(
            "diameter_lane_plans", "Request shapes learnt and served by the lane.",
            value=len(lanes.plans),
        )
        yield CounterMetricFamily(
            "diameter_lane_plans_learnt", "Request shapes learnt (made plans).",
            value=lanes.learnt,
        )
        yield CounterMetricFamily(
            "diameter_lane_plans_forgotten",
            "Plans forgotten because the Diameter settings, the local identity or the "
            "dictionary changed.",
            value=lanes.forgotten,
        )
        yield CounterMetricFamily(
            "diameter_lane_plans_evicted",
            "Plans dropped, the least recently matched, to learn a new shape with 16 held "
            "(a peer sending many shapes of its own).",
            value=lanes.evicted,
        )


class DecisionCacheCollector:
    """eir_decision_cache_hits_total and eir_decision_cache_entries from a Classifier."""

    def __init__(self, classifier: Any) -> None:
        self._classifier = classifier

    def collect(self) -> Iterator[Metric]:
        c = self._classifier
        yield CounterMetricFamily(
            "eir_decision_cache_hits",
            "Checks answered with a recent identical check's decision (lists, policy and "
            "registry verdict unchanged).",
            value=c.decision_cache_hits,
        )
        yield GaugeMetricFamily(
            "eir_decision_cache_entries", "Decisions held for reuse.", value=c.decision_cache_len
        )


class ReadinessCollector:
    """eir_ready: 1 when /readyz answers 200 (listening, stores loaded), else 0."""

    def __init__(self, readiness: Callable[[], dict[str, bool]]) -> None:
        self._readiness = readiness

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "eir_ready", "1 when /readyz answers 200 (listening, stores loaded), else 0.",
            value=1 if all(self._readiness().values()) else 0,
        )


ReadinessCheck = Callable[[], dict[str, bool]]


class Renderer(Protocol):
    def render(self) -> bytes: ...


class OperationsServer:
    """HTTP server for /metrics, /healthz (process alive) and /readyz (listening, stores loaded).

    A supervisor of worker processes overrides :meth:`metrics_body` and :meth:`checks`."""

    def __init__(self, metrics: Renderer, readiness: ReadinessCheck) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        return app

    async def metrics_body(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, self._metrics.render)

    async def checks(self) -> dict[str, bool]:
        return self._readiness()

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        body = await self.metrics_body()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _handle_readyz(self, request: web.Request) -> web.Response:
        checks = await self.checks()
        ready = all(checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return web.Response(
            text=json.dumps(body),
            status=200 if ready else 503,
            content_type="application/json",
        )

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        """Serve on ``host:port``, or on ``sock`` (bound by a supervising process) when given."""
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site: web.BaseSite = (
            web.SockSite(self._runner, sock) if sock is not None
            else web.TCPSite(self._runner, host, port)
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
