"""The running gateway: stores, classifier, S13 application, Diameter server, metrics endpoint.

Start-up order: registry source, classifier (TAC database and lists loaded), observation log,
Diameter listeners, then the operations endpoint; ``/readyz`` turns ready only when all of it is
up. Stop (SIGTERM/SIGINT): stop accepting, finish requests in flight, DPR to every peer, flush
the observation log, close the registry. Reload (SIGHUP, and the lists' version being polled):
lists and policy are swapped in without touching a peer connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence

from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.node import Node
from diameter.transport import Server, origin_state_now
from eir_compiled import finder as compiled_build
from gateway import aio, registry_source, state
from gateway.api.app import ApiServer, start_api
from gateway.classify import Classifier
from gateway.collector import CollectorSchedule
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.events.bus import EventBus, EventsCollector
from gateway.events.factory import build_bus
from gateway.list_updates import follow_lists
from gateway.metrics import GatewayMetrics, OperationsServer
from gateway.n5g_eir.equipment_status import EquipmentIdentityCheck
from gateway.n5g_eir.oauth2 import AccessTokenVerifier, load_public_keys
from gateway.n5g_eir.overload import DiameterOverload
from gateway.n5g_eir.server import N5gEirServer
from gateway.observations import ObservationLog
from gateway.redis_clone import SharedCloneTracker, SharedStateMetrics, shared_clone_tracker
from gateway.redis_observations import ObservationStream, observation_stream
from gateway.s13 import MeIdentityCheck
from registry_client.model import VerdictSource

log = logging.getLogger("eir.gateway")

# Keys a SIGHUP applies (besides every policy.status.*); lists.import_files is re-read as files,
# not as a list of names: a file added to or removed from it needs a restart.
_RELOADED = frozenset({"policy.monitor_mode", "policy.unknown_equipment"})


GIL_SWITCH_INTERVAL = 0.0005  # seconds (sys.setswitchinterval)
# Of diameter.dpa_timeout_seconds, kept at stop for what follows the listeners (observation log,
# registry, stores) and the process's exit: 40 ms measured under abuse, with room for a loaded host.
STOP_RESERVE = 0.5  # seconds; at most a quarter of the timeout


class Gateway:
    """One gateway process. A worker of ``eir-gateway run --workers N`` is given its listening
    sockets (``listeners``, one per ``diameter.listen`` entry; ``n5g_eir_listeners``, one per
    ``n5g_eir.listen`` entry) and its operations endpoint's socket by the supervisor that bound
    them."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        listeners: Sequence[socket.socket] | None = None,
        operations_socket: socket.socket | None = None,
        n5g_eir_listeners: Sequence[socket.socket] | None = None,
        api_socket: socket.socket | None = None,
        lists_written: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._api_socket = api_socket
        # Called after a write through the API: the supervisor tells the other workers.
        self._lists_written = lists_written
        self._listeners = listeners
        self._operations_socket = operations_socket
        self._n5g_eir_listeners = n5g_eir_listeners
        self.metrics = GatewayMetrics()
        self.registry: VerdictSource | None = None
        self.classifier: Classifier | None = None
        self.observations: ObservationLog | None = None
        self.node: Node | None = None
        self.server: Server | None = None
        self.n5g_eir: N5gEirServer | None = None
        self.operations: OperationsServer | None = None
        self.api: ApiServer | None = None
        self.events: EventBus | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self.collector = CollectorSchedule()
        self._switch_interval = sys.getswitchinterval()

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        # /healthz answers (and /readyz says 503) from the first moment: loading a large TAC file
        # or list takes a while, and a liveness probe must not kill the process meanwhile.
        self.operations = OperationsServer(self.metrics, self.readiness)
        self.metrics.watch_readiness(self.readiness)
        await self.operations.start(
            config.metrics.host, config.metrics.port, self._operations_socket
        )
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = registry_source.build(config.registry, self.metrics.registry)
        start = getattr(self.registry, "start", None)
        if start is not None:
            await start()
        self.classifier = await asyncio.to_thread(Classifier.from_config, config, self.registry)
        shared_metrics = (SharedStateMetrics(self.metrics.registry) if config.shared.redis_url
                          else None)
        if shared_metrics is not None and self.classifier.clone is not None:
            self.classifier.clone = shared_clone_tracker(
                self.classifier.clone, config.shared, shared_metrics
            )
        self.metrics.watch_decision_cache(self.classifier)
        if config.observations.enabled:
            self.observations = state.observation_log(config)
            if shared_metrics is not None and config.shared.observation_stream:
                clone = self.classifier.clone
                self.observations = observation_stream(
                    self.observations, config.shared, shared_metrics,
                    clone if isinstance(clone, SharedCloneTracker) else None,
                )
            await asyncio.to_thread(self.observations.start, asyncio.get_running_loop())
            if isinstance(self.observations, ObservationStream):
                await self.observations.start_consuming()
            self.metrics.watch_observations(self.observations.stats)
        self.events = build_bus(config.events, self.observations)
        if self.events is not None:
            self.events.start()
            self.metrics.registry.register(EventsCollector(self.events))
        s13 = MeIdentityCheck(
            config.peer.identity,
            self.classifier,
            self.metrics,
            self.observations,
            mask_imsis=config.logging.mask_imsi,
            events=self.events,
        )
        application = s13.application()
        self.node = Node(
            config.peer,
            [application],
            observer=self.metrics,
            max_in_flight_total=config.transport.max_in_flight_total,
            origin_state_id=origin_state_now(),
            overload=config.overload,
        )
        self.metrics.watch_overload(self.node)
        self.metrics.watch_lanes(self.node)
        self.server = Server(self.node, config.transport, sockets=self._listeners)
        # eir_event_loop_lag_seconds: the overload sampler's timer measures the lag anyway.
        self.server.load.lag_observers.append(self.metrics.loop_lag.observe)
        await self.server.start()
        if config.n5g_eir.listen:
            n5g = config.n5g_eir
            verifier = None
            if n5g.oauth2:
                keys = load_public_keys(n5g.oauth2_keys)
                verifier = AccessTokenVerifier(keys, n5g.oauth2_audience,
                                               issuers=n5g.oauth2_issuers,
                                               subjects=n5g.oauth2_subjects)
            check = EquipmentIdentityCheck(
                self.classifier,
                n5g,
                self.metrics,
                self.observations,
                overload=DiameterOverload(self.node.overload, n5g.retry_after_seconds),
                mask_imsis=config.logging.mask_imsi,
                verifier=verifier,
                events=self.events,
            )
            self.n5g_eir = N5gEirServer(check, config.n5g_eir)
            self.metrics.registry.register(self.n5g_eir.http)
            await self.n5g_eir.start(self._n5g_eir_listeners)
        self.api = await start_api(config, self.classifier, self._api_wrote, self._api_socket)
        if self.api is not None and self.api.site is not None:
            self.metrics.registry.register(self.api.site)
        self._update_gauges()
        self.collector.start()
        # A thread running Python (a /metrics render, a lists reload) gives the GIL back to a
        # waiting event loop after this long instead of the default 5 ms.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        if config.lists.poll_interval > 0:
            self._poll_task = asyncio.create_task(self._poll_lists(config.lists.poll_interval))
        log.info(
            "EIR gateway %s/%s serving S13 on %s, N5g-eir on %s, metrics on %s:%s; hot modules %s",
            config.peer.identity.origin_host,
            config.peer.identity.origin_realm,
            ", ".join(f"{t}://{h}:{p}" for t, h, p in self.diameter_sockets),
            ", ".join(f"{t}://{h}:{p}" for t, h, p in self.n5g_eir_sockets) or "none",
            config.metrics.host,
            self.metrics_port,
            compiled_build.status(),
        )

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        # From here to the process's exit within the DPA timeout, whatever the load: the
        # listeners stop side by side, given the timeout less a reserve for the rest.
        loop = asyncio.get_running_loop()
        timeout = self.config.peer.dpa_timeout
        deadline = loop.time() + timeout
        listeners = timeout - min(STOP_RESERVE, timeout / 4)
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        stopping: list[Awaitable[None]] = []
        if self.n5g_eir is not None:
            stopping.append(self.n5g_eir.stop(listeners))
        if self.api is not None:
            stopping.append(self.api.stop())
        if self.server is not None:
            # The peers' DPAs, or a close at the deadline.
            stopping.append(self.server.stop(DisconnectCause.REBOOTING, listeners))
        await asyncio.gather(*stopping)
        if self.operations is not None:
            await self.operations.stop()
        if self.events is not None:
            await self.events.close(max(0.0, deadline - loop.time()))
        if isinstance(self.observations, ObservationStream):
            await self.observations.aclose()
        if self.observations is not None:
            # What is left of the DPA timeout, less a little for the rest (the writer process
            # writes what it was sent even when we stop waiting).
            await asyncio.to_thread(
                self.observations.close, max(0.1, deadline - loop.time() - 0.1)
            )
        if self.registry is not None:
            await self.registry.close()
        await self.collector.stop()
        sys.setswitchinterval(self._switch_interval)
        clone = self.classifier.clone if self.classifier is not None else None
        if isinstance(clone, SharedCloneTracker):
            await clone.close()
        store = self.classifier.lists.store if self.classifier is not None else None
        if store is not None:
            await asyncio.to_thread(store.close)
        log.info("EIR gateway stopped")
        self._stopped.set()

    async def reload(self) -> None:
        """SIGHUP: re-read the config's policy, re-import changed lists.import_files and reload
        the lists (peers stay connected). Other keys need a restart: a change to one is named
        in a warning rather than ignored in silence."""
        if self.classifier is None:
            return
        try:
            config = load_config(self.config.source)
        except ConfigError as exc:
            log.error("reload refused, configuration invalid: %s", exc)
            self.metrics.reloads.labels("refused").inc()
            return
        old = self.config.values
        pending = sorted(
            key
            for key, value in config.values.items()
            if key not in _RELOADED and not key.startswith("policy.status.") and old.get(key) != value
        )
        if pending:
            log.warning("reload: %s changed; applied at the next restart", ", ".join(pending))
        await asyncio.to_thread(self.classifier.reload, config.policy)
        self._update_gauges()
        import_error = self.classifier.lists.import_error
        if import_error:
            log.warning("lists import file refused, its previous entries stay: %s", import_error)
        self.metrics.reloads.labels("ok").inc()
        self.metrics.last_reload.set_to_current_time()
        log.info("lists and policy reloaded (lists version %s)", self.lists_version)

    async def _api_wrote(self) -> None:
        """A write through the API: load the new lists now rather than at the next poll, and
        have the other workers (if any) do the same."""
        await self.lists_changed()
        if self._lists_written is not None:
            self._lists_written()

    async def lists_changed(self) -> None:
        """The lists database was written (by our API, or another worker's): load it now
        rather than at the next poll."""
        if self.classifier is None:
            return
        if await asyncio.to_thread(self.classifier.lists.poll):
            self._update_gauges()
            log.info("operator lists changed, now version %s", self.lists_version)

    async def _poll_lists(self, interval: float) -> None:
        """Poll the lists version every ``interval`` (at once on a NOTIFY hint)."""
        assert self.classifier is not None

        def changed(version: int) -> None:
            self._update_gauges()
            log.info("operator lists changed, now version %s", version)

        await follow_lists(self.classifier.lists, interval, changed)

    # -- state ---------------------------------------------------------------------------------
    @property
    def diameter_sockets(self) -> list[tuple[str, str, int]]:
        return self.server.sockets if self.server is not None else []

    @property
    def n5g_eir_sockets(self) -> list[tuple[str, str, int]]:
        return self.n5g_eir.sockets if self.n5g_eir is not None else []

    @property
    def metrics_port(self) -> int | None:
        return self.operations.port if self.operations is not None else None

    @property
    def lists_version(self) -> int:
        return self.classifier.lists.snapshot.version if self.classifier is not None else 0

    def readiness(self) -> dict[str, bool]:
        return {
            "diameter_listening": bool(self.diameter_sockets) and not self._stopping,
            "n5g_eir_listening": (
                not self.config.n5g_eir.listen or bool(self.n5g_eir_sockets)
            ) and not self._stopping,
            "classifier_loaded": self.classifier is not None,
        }

    def _update_gauges(self) -> None:
        classifier = self.classifier
        if classifier is None:
            return
        self.metrics.lists_import_failed.set(1 if classifier.lists.import_error else 0)
        self.metrics.monitor_mode.set(1 if classifier.policy.monitor_mode else 0)
        snapshot = classifier.lists.snapshot
        for name, count in snapshot.counts().items():
            self.metrics.list_entries.labels(name).set(count)
        self.metrics.lists_version.set(snapshot.version)
        self.metrics.tac_entries.set(len(classifier.tac) if classifier.tac is not None else 0)

    # -- running as a process ------------------------------------------------------------------
    async def serve(self) -> None:
        """Start, then run until SIGTERM/SIGINT; SIGHUP reloads lists and policy."""
        await aio.serve_until_signalled(
            self.start,
            self.stop,
            self.reload,
            lambda: log.info("stopping: DPR to every peer, finishing requests in flight"),
        )
