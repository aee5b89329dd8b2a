"""``eir-gateway run --workers N``: a supervising parent and N worker processes (DESIGN.md §6).

The parent binds every Diameter listener once and hands the listening sockets to its workers:
they share each accept queue, so a connection is accepted by one worker and stays on it, and a
worker that dies loses only its own connections (nothing queued: the queue is shared). Each
worker runs the whole gateway (stores, classifier, S13 application) with the configured
Diameter identity, so MMEs see one EIR. The parent:

* writes once, before any worker starts, what every worker would otherwise race to write: the
  TAC and lists imports, the local registry's seed, the observation log's schema;
* restarts a worker that exits unexpectedly, at once when it had run for a minute, else after
  a delay that grows while it keeps failing (``RESTART_DELAYS``), counted in
  ``eir_worker_restarts_total``; a worker failing during the first start stops the gateway with
  that worker's exit status (a bad input file still exits 2);
* on SIGHUP re-imports changed ``lists.import_files`` (one writer), then signals every worker;
* on SIGTERM/SIGINT signals every worker, which stops as a single gateway does (DPR to each of
  its peers), and waits ``STOP_GRACE`` seconds before SIGKILL;
* binds the provisioning API's ``api.listen`` and hands it to worker 0, which alone serves
  the API (one job table, one writer of imports); a worker 0 that is restarted serves it on
  the same socket, requests meanwhile waiting in its accept queue. A write through the API
  reaches worker 0's lists at once; worker 0 then signals the parent (SIGUSR1), which signals
  every other ready worker to reload its lists now, whatever ``lists.poll_interval_seconds``;
* serves ``metrics.listen``: ``/metrics`` merges the workers' own endpoints (bound by the parent
  on loopback ports, see :mod:`gateway.metrics_merge`), ``/readyz`` is ready when every worker
  answers ready, ``/healthz`` while the parent lives.

A worker watches a pipe from the parent and stops (gracefully) when the parent is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from diameter.settings import ListenEndpoint
from diameter.transport.server import listening_socket
from gateway import aio, state
from gateway.api.app import api_served
from gateway.config import GatewayConfig
from gateway.lists import ListError
from gateway.metrics import OperationsServer
from gateway.metrics_merge import WorkerExpositions, parse
from gateway.tac import import_if_changed
from registry_client.local import LocalRegistry

log = logging.getLogger("eir.supervisor")

# A worker that ran this long before exiting is restarted at once; one that keeps exiting sooner
# waits RESTART_DELAYS[n] after its n-th quick exit in a row (a broken file must not spin a core).
STABLE_AFTER = 60.0
RESTART_DELAYS = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
# SIGTERM to SIGKILL: a worker's own stop takes at most the Diameter stop timeout (5 s: requests
# in flight, then DPR and the DPAs) plus flushing its observation log and closing the registry.
STOP_GRACE = 30.0
SCRAPE_TIMEOUT = 2.0  # one worker's /metrics or /readyz
READY_POLL = 0.1  # how often a starting worker's /readyz is asked


class WorkerFailed(Exception):
    """A worker exited during the first start; ``status`` is its exit status."""

    def __init__(self, index: int, status: int) -> None:
        super().__init__(f"worker {index} {describe_exit(status)} while starting")
        self.status = status


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by {name}"
    return f"exited with status {returncode}"


def import_lists(config: GatewayConfig) -> None:
    """Import the changed ``lists.import_files`` (blocking; raises ListError for a bad file)."""
    store = state.open_list_store(config)
    try:
        store.import_files(config.lists.import_files)
    finally:
        store.close()


def prepare_state(config: GatewayConfig) -> None:
    """Write, once, what each worker would write at start (blocking: run it in a thread).

    Raises what a single gateway's start raises for the same files (TacImportError, ListError,
    DeclarationFileError, sqlite3.DatabaseError), so ``run`` reports them the same way."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if config.tac.file is not None:
        if config.state.postgresql:
            state.open_tac(config)  # imports a changed file
        else:
            import_if_changed(config.tac.database, config.tac.file)
    import_lists(config)
    registry = config.registry
    if registry.backend == "local":
        LocalRegistry.open(registry.database, registry.seed_files).close_sync()
    if config.observations.enabled:
        observations = state.observation_log(config)
        observations.start()
        observations.close()


def _loopback_socket() -> socket.socket:
    """Bound, not listening: the worker's operations endpoint listens on it. A worker that is
    not running refuses connections instead of leaving a scrape to time out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class WorkerSlot:
    index: int
    operations: socket.socket  # the worker's own /metrics and /readyz, on a loopback port
    process: asyncio.subprocess.Process | None = None
    parent_pipe: int | None = None  # our end of the pipe whose EOF tells the worker we are gone
    started_at: float = 0.0
    quick_exits: int = 0  # exits in a row within STABLE_AFTER of starting
    ready: bool = False
    first_start: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def url(self) -> str:
        host, port = self.operations.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class _Operations(OperationsServer):
    """The parent's metrics.listen endpoint: every worker's metrics and readiness."""

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(supervisor, lambda: {})
        self._supervisor = supervisor

    async def metrics_body(self) -> bytes:
        return await self._supervisor.metrics_body()

    async def checks(self) -> dict[str, bool]:
        return await self._supervisor.checks()


class Supervisor:
    def __init__(self, config: GatewayConfig, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "eir_worker_restarts",
            "Worker processes restarted after exiting unexpectedly (crash, kill, failed start).",
            registry=self.registry,
        )
        self.running_gauge = Gauge(
            "eir_workers", "Worker processes running.", registry=self.registry
        )
        self.ready_gauge = Gauge(
            "eir_workers_ready",
            "Worker processes whose /readyz answered ready at the last look.",
            registry=self.registry,
        )
        self.expositions = WorkerExpositions()
        self.listeners: list[socket.socket] = []
        self.n5g_eir_listeners: list[socket.socket] = []
        self.api_listener: socket.socket | None = None
        self.slots: list[WorkerSlot] = []
        self.operations: _Operations | None = None
        self._session: aiohttp.ClientSession | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind, start every worker and return once all are ready (WorkerFailed otherwise)."""
        config = self.config
        self.operations = _Operations(self)
        await self.operations.start(config.metrics.host, config.metrics.port)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
        )
        await asyncio.to_thread(prepare_state, config)
        # All or nothing, as a single gateway binds; N5g-eir's are plain TCP (TLS is per worker).
        endpoints = [
            *config.transport.listen,
            *(ListenEndpoint("tcp", e.host, e.port) for e in config.n5g_eir.listen),
        ]
        for n, endpoint in enumerate(endpoints):
            try:
                sock = listening_socket(endpoint, sctp_options=config.transport.sctp)
            except BaseException:
                self._close_sockets()
                raise
            if n < len(config.transport.listen):
                self.listeners.append(sock)
            else:
                self.n5g_eir_listeners.append(sock)
        if api_served(config):
            assert config.api.host is not None
            try:
                self.api_listener = listening_socket(
                    ListenEndpoint("tcp", config.api.host, config.api.port))
            except BaseException:
                self._close_sockets()
                raise
        # Worker 0's API writes: the other workers reload their lists now (SIGUSR1 both ways).
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._lists_written)
        self.slots = [WorkerSlot(i, _loopback_socket()) for i in range(self.workers)]
        self._watchers = [asyncio.create_task(self._watch(slot)) for slot in self.slots]
        await asyncio.gather(*(slot.first_start for slot in self.slots))
        log.info(
            "EIR gateway %s/%s: %d workers serving S13 on %s, N5g-eir on %s, metrics on %s:%s",
            config.identity.origin_host,
            config.identity.origin_realm,
            self.workers,
            ", ".join(f"{t}://{h}:{p}" for t, h, p in self.diameter_sockets),
            ", ".join(
                f"{e.scheme}://{s.getsockname()[0]}:{s.getsockname()[1]}"
                for e, s in zip(config.n5g_eir.listen, self.n5g_eir_listeners, strict=True)
            ) or "none",
            config.metrics.host,
            self.operations.port,
        )
        if self.api_listener is not None:
            host, port = self.api_listener.getsockname()[:2]
            log.info("provisioning API on %s://%s:%s (worker 0)",
                     "https" if config.api.tls_cert else "http", host, port)

    def _lists_written(self) -> None:
        """SIGUSR1 from worker 0: the API wrote the lists; every other ready worker reloads."""
        for slot in self.slots[1:]:
            if slot.ready and slot.running and slot.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGUSR1)

    async def stop(self) -> None:
        """SIGTERM to every worker (each DPRs its peers), SIGKILL after STOP_GRACE."""
        self._stopping = True
        running = [s.process for s in self.slots if s.process is not None and s.running]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if running:
            waits = [asyncio.ensure_future(p.wait()) for p in running]
            _, late = await asyncio.wait(waits, timeout=STOP_GRACE)
            if late:
                log.error("%d workers did not stop within %g s: killed", len(late), STOP_GRACE)
                for process in running:
                    if process.returncode is None:
                        process.kill()
                await asyncio.wait(waits)
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for slot in self.slots:
            slot.first_start.cancel()  # a start cut short: nobody waits for the others
        for slot in self.slots:
            self._close_pipe(slot)
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        if self.operations is not None:
            await self.operations.stop()
        if self._session is not None:
            await self._session.close()
        self._close_sockets()
        log.info("EIR gateway stopped (%d workers)", self.workers)

    async def reload(self) -> None:
        """SIGHUP: import changed lists files once, then let every worker reload."""
        try:
            await asyncio.to_thread(import_lists, self.config)
        except (ListError, sqlite3.Error) as exc:
            # Each worker meets the same file on its reload: it logs it, counts it in
            # eir_lists_import_failed and keeps the file's previous entries.
            log.error("lists import file not re-imported: %s", exc)
        for slot in self.slots:
            if slot.running and slot.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGHUP)
        log.info("SIGHUP passed to the workers")

    async def serve(self) -> None:
        """Start, then run until SIGTERM/SIGINT; SIGHUP reloads every worker."""
        await aio.serve_until_signalled(
            self.start,
            self.stop,
            self.reload,
            lambda: log.info("stopping: every worker DPRs its peers, finishing requests in flight"),
        )

    # -- workers -------------------------------------------------------------------------------
    async def _spawn(self, slot: WorkerSlot) -> asyncio.subprocess.Process:
        read_end, write_end = os.pipe()
        listeners = [s.fileno() for s in self.listeners]
        n5g_eir = [s.fileno() for s in self.n5g_eir_listeners]
        api = [self.api_listener.fileno()] if self.api_listener and slot.index == 0 else []
        spec = {
            "index": slot.index,
            "listeners": listeners,
            "n5g_eir_listeners": n5g_eir,
            "listen": [
                [e.transport, e.host, s.getsockname()[1], list(e.extra_addresses)]
                for e, s in zip(self.config.transport.listen, self.listeners, strict=True)
            ],
            "operations": slot.operations.fileno(),
            "parent": read_end,
            "parent_pid": os.getpid(),
            "api": api[0] if api else None,
        }
        command = [
            sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config.source),
            "--worker-spec", json.dumps(spec),
        ]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(*listeners, *n5g_eir, *api, slot.operations.fileno(), read_end),
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        slot.process, slot.parent_pipe, slot.started_at = process, write_end, time.monotonic()
        self.running_gauge.inc()
        return process

    async def _watch(self, slot: WorkerSlot) -> None:
        """Run the slot's worker, and again whenever it exits, until the gateway stops."""
        while not self._stopping:
            process = await self._spawn(slot)
            exited = asyncio.ensure_future(process.wait())
            while not exited.done() and not slot.ready:
                if await self._probe(slot):
                    slot.ready = True
                    self.ready_gauge.inc()
                    log.info("worker %d (pid %d) ready; its own metrics on %s/metrics",
                             slot.index, process.pid, slot.url)
                    if not slot.first_start.done():
                        slot.first_start.set_result(None)
                else:
                    await asyncio.wait({exited}, timeout=READY_POLL)
            status = await exited
            self._exited(slot)
            if self._stopping:
                return
            if not slot.first_start.done():
                slot.first_start.set_exception(WorkerFailed(slot.index, status))
                return
            lived = time.monotonic() - slot.started_at
            slot.quick_exits = slot.quick_exits + 1 if lived < STABLE_AFTER else 0
            delay = RESTART_DELAYS[min(slot.quick_exits, len(RESTART_DELAYS) - 1)]
            log.error("worker %d (pid %d) %s after %.1f s; restarting it in %g s",
                      slot.index, process.pid, describe_exit(status), lived, delay)
            self.restarts.inc()
            await asyncio.sleep(delay)

    def _exited(self, slot: WorkerSlot) -> None:
        self.running_gauge.dec()
        if slot.ready:
            slot.ready = False
            self.ready_gauge.dec()
        self._close_pipe(slot)
        # Its counters stay in the sums: a replaced worker must not look like a counter reset.
        self.expositions.retire(slot.index)

    def _close_pipe(self, slot: WorkerSlot) -> None:
        if slot.parent_pipe is not None:
            os.close(slot.parent_pipe)
            slot.parent_pipe = None

    def _close_sockets(self) -> None:
        for sock in [*self.listeners, *self.n5g_eir_listeners,
                     *(slot.operations for slot in self.slots)]:
            sock.close()
        if self.api_listener is not None:
            self.api_listener.close()
            self.api_listener = None
        self.listeners.clear()
        self.n5g_eir_listeners.clear()

    # -- operations ----------------------------------------------------------------------------
    async def _get(self, slot: WorkerSlot, path: str) -> tuple[int, str] | None:
        if self._session is None or not slot.running:
            return None
        try:
            async with self._session.get(slot.url + path) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _probe(self, slot: WorkerSlot) -> bool:
        answer = await self._get(slot, "/readyz")
        return answer is not None and answer[0] == 200

    async def checks(self) -> dict[str, bool]:
        ready = await asyncio.gather(*(self._probe(slot) for slot in self.slots))
        checks = {f"worker_{slot.index}": ok for slot, ok in zip(self.slots, ready, strict=True)}
        checks["workers_started"] = bool(self.slots) and not self._stopping
        return checks

    async def _scrape(self, slot: WorkerSlot) -> None:
        process = slot.process
        answer = await self._get(slot, "/metrics")
        if answer is None or answer[0] != 200:
            return  # its previous exposition stands in
        families = await asyncio.get_running_loop().run_in_executor(None, parse, answer[1])
        if slot.process is process and slot.running:  # not a worker that exited meanwhile
            self.expositions.update(slot.index, families)

    async def metrics_body(self) -> bytes:
        await asyncio.gather(*(self._scrape(slot) for slot in self.slots))
        merged = self.expositions.snapshot()

        def render() -> bytes:
            return generate_latest(self.registry) + generate_latest(merged)

        return await asyncio.get_running_loop().run_in_executor(None, render)

    def render(self) -> bytes:
        """The supervisor's own metrics (the Renderer protocol of OperationsServer)."""
        return generate_latest(self.registry)

    @property
    def diameter_sockets(self) -> list[tuple[str, str, int]]:
        out = []
        for endpoint, sock in zip(self.config.transport.listen, self.listeners, strict=False):
            host, port = sock.getsockname()[:2]
            out.append((endpoint.transport, str(host), int(port)))
        return out
