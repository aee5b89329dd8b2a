"""Simulated MMEs driving ME-Identity-Check-Requests at an EIR (TS 29.272 §5.3.2.2).

Each connection is an initiator peer (RFC 6733 §5.6) with its own Origin-Host, a
``diameter.transport.Client``: it exchanges CER/CEA, answers DWR and leaves with DPR. Requests
are queued with ``Client.submit`` and written together (``flush``, or by the connection at the
end of the read being processed); when a pcap is asked for, the connection records the bytes it
sends and receives.

Two drivers:

* closed loop: each connection keeps ``window`` requests outstanding and sends the next one when
  an answer (or a timeout) frees a slot: the capacity of the server.
* open loop: requests are scheduled at ``rate`` per second over all connections, whatever the
  answers do, and latency is measured from the *scheduled* send time, so a stalled server shows
  as latency instead of silently lowering the load (coordinated omission). The scheduler spins
  (``asyncio.sleep(0)``) during the last 2 ms before a send, since the event loop's timers are
  only millisecond-precise; the report gives the send lag it achieved.

A run stops by itself: after ``count`` requests, after ``duration`` seconds, and in any case at
``max_duration``; requests still outstanding then are given their answer timeout to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from diameter.application import Application, NullObserver
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID
from diameter.dictionary.ts29272_s13 import VENDOR as VENDOR_3GPP
from diameter.errors import DiameterError
from diameter.node import Node
from diameter.overload import ReactingNode
from diameter.peer import command_name
from diameter.settings import LocalIdentity, PeerSettings
from diameter.transport import Client, PeerConnection, client_ssl_context
from gateway.simulator.pcap import Capture
from gateway.simulator.report import Report, Stats
from gateway.simulator.traffic import (
    AnswerScanner,
    Check,
    PreparedCheck,
    RequestFactory,
    RequestIdentity,
    outcome_of,
)

_ANSWER_NAME = command_name(324, False)
_SPIN = 0.002  # open loop: spin instead of sleeping this close to the next send
# Checks encoded before the run (per connection) up to this many; beyond, each when it is sent.
_PREPARED_AHEAD = 100_000


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 3868
    transport: str = "tcp"  # tcp | sctp | tls
    connections: int = 1
    origin_host: str = "mme{n}.sim.local"  # {n}: the connection number, from 1
    origin_realm: str = "sim.local"
    destination_realm: str = "localdomain"
    destination_host: str | None = None
    mode: str = "closed"  # closed | open
    window: int = 16  # closed loop: outstanding requests per connection
    rate: float = 1000.0  # open loop: requests per second over all connections
    count: int | None = None
    duration: float | None = None
    max_duration: float = 300.0  # hard stop, whatever count and duration say
    timeout: float = 5.0  # per request
    connect_timeout: float = 10.0
    watchdog: float = 30.0  # Tw of our side (RFC 3539 §3.4.1)
    max_outstanding: int = 65_536  # open loop: beyond it, requests are dropped (and counted)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    tls_verify: bool = True
    verify: bool = True  # compare outcomes with expected ones when checks carry them
    progress: bool = False  # once a second on stderr
    capture: bool = False  # record bytes for a pcap
    # RFC 7683 reacting node: send OC-Supported-Features, honour the EIR's OC-OLR (loss).
    doic: bool = False

    def origin_host_of(self, index: int) -> str:
        return self.origin_host.format(n=index + 1)

    def validate(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode {self.mode!r} is not closed or open")
        if self.transport not in ("tcp", "sctp", "tls"):
            raise ValueError(f"transport {self.transport!r} is not tcp, sctp or tls")
        if self.connections < 1 or self.window < 1:
            raise ValueError("connections and window must be at least 1")
        if self.mode == "open" and not self.rate > 0:
            raise ValueError("open loop needs a rate above 0")
        if self.count is None and self.duration is None:
            raise ValueError("give a count or a duration (or both)")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("duration must be above 0")
        if not self.timeout > 0 or not self.max_duration > 0:
            raise ValueError("timeout and max_duration must be above 0")

    def method(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "connections": self.connections,
            "window": self.window if self.mode == "closed" else None,
            "rate": self.rate if self.mode == "open" else None,
            "count": self.count,
            "duration": self.duration,
            "timeout": self.timeout,
            "transport": self.transport,
            "target": f"{self.host}:{self.port}",
            "doic": self.doic,
            "python": sys.version.split()[0],
        }


# ---------------------------------------------------------------------------------------------
# The connection


class _TapTransport(asyncio.Transport):
    """Forwards to a transport and records what is written (for the pcap)."""

    def __init__(self, inner: asyncio.Transport, capture: Capture) -> None:
        super().__init__()
        self._inner = inner
        self._capture = capture

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._capture.record(time.time(), True, bytes(data))
        self._inner.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()


class _TappedConnection(PeerConnection):
    """A PeerConnection that records both directions into a Capture."""

    def __init__(self, *args: Any, capture: Capture, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capture = capture

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; both have the same methods.
        transport = cast(asyncio.Transport, transport)
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        if sockname:
            self.capture.client = (str(sockname[0]), int(sockname[1]))
        if peername:
            self.capture.server = (str(peername[0]), int(peername[1]))
        self.capture.opened = time.time()
        super().connection_made(_TapTransport(transport, self.capture))

    def data_received(self, data: bytes) -> None:
        self.capture.record(time.time(), False, data)
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.capture.closed = time.time()
        super().connection_lost(exc)


async def open_client(
    node: Node,
    host: str,
    port: int,
    *,
    transport: str = "tcp",
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    capture: Capture | None = None,
) -> Client:
    """Connect and exchange CER/CEA (RFC 6733 §5.3); with ``capture``, the connection records
    the bytes it writes and reads. The window is the simulator's, not the client's."""

    def tapped(*args: Any, **kwargs: Any) -> PeerConnection:
        assert capture is not None
        return _TappedConnection(*args, capture=capture, **kwargs)

    return await Client.connect(
        node,
        host,
        port,
        transport=transport,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        max_outstanding=1 << 30,
        connection_factory=PeerConnection if capture is None else tapped,
    )


class _Counter(NullObserver):
    """Node observer: counts the MICAs each connection's peer core received (matched or not)."""

    def __init__(self) -> None:
        self.answers_in = 0

    def on_message(self, direction: str, command: str, result_code: int | None) -> None:
        if direction == "in" and command == _ANSWER_NAME:
            self.answers_in += 1


@dataclass(slots=True)
class _Outstanding:
    started: float  # send time (closed loop) or scheduled time (open loop)
    end_to_end: int
    session_id: bytes
    index: int  # into the checks
    check: Check


def _why(conn: _Connection) -> str:
    """Why a connection went down, from the EIR's DPR (RFC 6733 §5.4.3) or the transport."""
    connection = conn.client.connection
    peer = connection.peer if connection is not None else None
    cause = peer.disconnect_cause if peer is not None else None
    if cause is not None:
        try:
            name = f" {DisconnectCause(cause).name}"
        except ValueError:
            name = ""
        return f"the EIR sent DPR (Disconnect-Cause {cause}{name})"
    reason = conn.client.down_reason
    if reason in (None, "peer disconnected"):
        return "connection closed by the peer"
    return f"connection closed: {reason}"


def _no_answer_handler(hop_by_hop: int, raw: bytes) -> None:
    raise AssertionError("answer handler not set")


@dataclass(slots=True)
class _Connection:
    index: int
    client: Client
    factory: RequestFactory
    observer: _Counter
    prepared: list[PreparedCheck] | None  # None: prepared when sent (a large sequence)
    outstanding: dict[int, _Outstanding] = field(default_factory=dict)
    timed_out: set[int] = field(default_factory=set)
    alive: bool = True
    session_counter: int = 0
    on_answer: Callable[[int, bytes], None] = _no_answer_handler


# ---------------------------------------------------------------------------------------------
# The run


class Simulation:
    """One run: connect, drive, drain, disconnect, report."""

    def __init__(self, settings: SimulatorSettings, checks: Sequence[Check]) -> None:
        settings.validate()
        if not checks:
            raise ValueError("no checks to send")
        self.settings = settings
        # A Sequence is used as it is (bench/real_traffic.py builds a million checks on demand).
        self.checks = checks if isinstance(checks, Sequence) else list(checks)
        self.stats = Stats()
        self._reacting: ReactingNode | None = ReactingNode() if settings.doic else None
        self.connections: list[_Connection] = []
        self.captures: list[Capture] = []
        self.cut_short: list[str] = []
        self._loop = asyncio.get_running_loop()
        self._seq = 0  # requests started (closed loop budget)
        self._stopping = False  # no new requests
        self._closing = False  # the run is over: connections closing on our DPR
        self._started = 0.0
        self._last_answer = 0.0
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._scanner = AnswerScanner()
        # (Result-Code, Experimental-Result-Code, Equipment-Status) -> (result key, outcome)
        self._names: dict[tuple[int | None, int | None, int | None], tuple[str, str]] = {}
        self._verify = settings.verify and any(c.expected is not None for c in self.checks)

    # -- set-up and tear-down --------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.transport != "tls":
            return None
        return client_ssl_context(s.tls_ca, s.tls_cert, s.tls_key, check_hostname=s.tls_verify)

    async def _connect(self, index: int, session_high: int) -> _Connection:
        s = self.settings
        origin_host = s.origin_host_of(index)
        identity = LocalIdentity(
            origin_host=origin_host,
            origin_realm=s.origin_realm,
            host_ip_addresses=("127.0.0.1",),
            product_name="eir-gateway-simulator",
        )
        observer = _Counter()
        node = Node(
            PeerSettings(
                identity=identity,
                watchdog_interval=max(6.0, s.watchdog),
                cea_timeout=s.connect_timeout,
            ),
            [Application(S13_APPLICATION_ID, {}, vendor_id=VENDOR_3GPP, name="S13")],
            observer,
        )
        capture = Capture(("127.0.0.1", 0)) if s.capture else None
        if capture is not None:
            self.captures.append(capture)
        context = self._ssl_context()
        server_name = (s.tls_server_name or s.host) if context is not None else None
        client = await asyncio.wait_for(
            open_client(
                node,
                s.host,
                s.port,
                transport=s.transport,
                ssl_context=context,
                server_hostname=server_name,
                capture=capture,
            ),
            s.connect_timeout + 2.0,
        )
        factory = RequestFactory(
            RequestIdentity(
                origin_host,
                s.origin_realm,
                s.destination_realm,
                s.destination_host,
                session_high,
                doic=s.doic,
            )
        )
        prepared = (
            [factory.prepare(c) for c in self.checks]
            if len(self.checks) <= _PREPARED_AHEAD
            else None
        )
        conn = _Connection(index, client, factory, observer, prepared)
        conn.on_answer = functools.partial(self._on_answer, conn)
        assert client.connection is not None
        client.connection.closed.add_done_callback(lambda _: self._connection_closed(conn))
        return conn

    def _connection_closed(self, conn: _Connection) -> None:
        if not conn.alive:
            return
        conn.alive = False
        if not self._closing and not self._done.done():
            # Not our DPR at the end of the run: the EIR ended it early (it is stopping, or it
            # dropped us); the report must say so, not "OK" over fewer requests.
            self.cut_short.append(f"{self.settings.origin_host_of(conn.index)}: {_why(conn)}")
        lost = len(conn.outstanding)
        conn.outstanding.clear()
        if not self._closing:  # our own DPR at the end loses nothing
            self.stats.lost += lost
        self._check_done()

    async def run(self) -> Report:
        s = self.settings
        session_high = int(time.time()) & 0xFFFFFFFF
        results = await asyncio.gather(
            *(self._connect(i, session_high) for i in range(s.connections)),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        self.connections = [r for r in results if isinstance(r, _Connection)]
        if failures:
            await self._close_all()
            raise failures[0]
        # The checks, templates and connections live for the whole run: move them out of the
        # collector's way, so its passes over the heap do not stall the hot path for
        # milliseconds (every request allocates a few tracked objects).
        gc.collect()
        gc.freeze()
        progress = self._loop.create_task(self._progress()) if s.progress else None
        sweeper = self._loop.create_task(self._sweep())
        self._started = time.perf_counter()
        hard_stop = self._loop.call_later(s.max_duration, self._stop_sending)
        duration_stop = (
            self._loop.call_later(s.duration, self._stop_sending) if s.duration else None
        )
        driver: asyncio.Task[None] | None = None
        try:
            if s.mode == "closed":
                self._start_closed()
            else:
                driver = self._loop.create_task(self._open_loop())
            # Outstanding requests get their answer timeout after sending stops.
            await asyncio.wait_for(asyncio.shield(self._done), s.max_duration + s.timeout + 1.0)
        except TimeoutError:
            pass
        finally:
            self._stopping = True
            hard_stop.cancel()
            if duration_stop is not None:
                duration_stop.cancel()
            for task in (driver, sweeper, progress):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if progress is not None:
                sys.stderr.write("\n")
            gc.unfreeze()
        end = self._last_answer or time.perf_counter()
        duration = max(end - self._started, 1e-9)
        unmatched = sum(c.observer.answers_in for c in self.connections) - (
            self.stats.answered + self.stats.late
        )
        up = sum(1 for c in self.connections if c.alive)
        self._closing = True
        await self._close_all()
        return Report(
            s.method(), self.stats, duration, max(unmatched, 0), up, list(self.cut_short)
        )

    async def _close_all(self) -> None:
        async def close(conn: _Connection) -> None:
            with contextlib.suppress(Exception):
                await conn.client.close(DisconnectCause.REBOOTING, timeout=2.0)

        await asyncio.gather(*(close(c) for c in self.connections))

    # -- limits ------------------------------------------------------------------------------
    def _stop_sending(self) -> None:
        self._stopping = True
        self._check_done()

    def _check_done(self) -> None:
        if self._done.done():
            return
        alive = [c for c in self.connections if c.alive]
        if not alive or (
            self._stopping and not any(c.outstanding for c in alive)
        ):
            self._done.set_result(None)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, conn: _Connection, seq: int, started: float) -> bool:
        """Queue request number ``seq`` on ``conn``; False when the connection cannot send."""
        client = conn.client
        reacting = self._reacting
        if reacting is not None and client.info is not None:
            if not reacting.admit(client.info.origin_host, time.perf_counter()):
                self.stats.throttled += 1  # RFC 7683 §6: abated, not sent
                return False
        index = seq % len(self.checks)
        prepared = (
            conn.factory.prepare(self.checks[index])
            if conn.prepared is None
            else conn.prepared[index]
        )
        node = client.node
        end_to_end = node.next_end_to_end()
        conn.session_counter = suffix = (conn.session_counter + 1) & 0xFFFFFFFF
        raw = RequestFactory.build(prepared, end_to_end, suffix)
        try:
            hop_by_hop = client.submit(raw, conn.on_answer)
        except DiameterError:
            self.stats.send_errors += 1
            return False
        so = prepared.template.session_offset
        session = bytes(raw[so - len(conn.factory.session_prefix) : so + 10])
        conn.outstanding[hop_by_hop] = _Outstanding(
            started, end_to_end, session, index, prepared.check
        )
        self.stats.sent += 1
        self.stats.categories[prepared.check.category] += 1
        return True

    def _on_answer(self, conn: _Connection, hop_by_hop: int, raw: bytes) -> None:
        now = time.perf_counter()
        stats = self.stats
        request = conn.outstanding.pop(hop_by_hop, None)
        if request is None:
            if hop_by_hop in conn.timed_out:
                conn.timed_out.discard(hop_by_hop)
                stats.late += 1
            return
        stats.answered += 1
        self._last_answer = now
        if self._reacting is not None:
            self._reacting.on_answer(raw, now)
        stats.latencies.append(now - request.started)
        # RFC 6733 §6.2: the answer carries the request's End-to-End and Session-Id.
        end_to_end = int.from_bytes(raw[16:20], "big")
        if end_to_end != request.end_to_end:
            stats.add_id_mismatch("End-to-End", str(request.end_to_end), str(end_to_end))
        session, result, experimental, status = self._scanner.scan(raw)
        if session != request.session_id:
            stats.add_id_mismatch(
                "Session-Id",
                request.session_id.decode("utf-8", "replace"),
                "" if session is None else session.decode("utf-8", "replace"),
            )
        key = (result, experimental, status)
        named = self._names.get(key)
        if named is None:
            code = result if result is not None else experimental
            named = self._names[key] = (
                str(code) if code is not None else "none",
                outcome_of(result, experimental, status),
            )
        code_name, outcome = named
        stats.results[code_name] += 1
        stats.outcomes[outcome] += 1
        if self._verify:
            check = request.check
            if check.expected is not None:
                stats.verified += 1
                if outcome != check.expected:
                    stats.add_mismatch(
                        check.imei, check.expected, outcome, request.index, check.line
                    )
        if self.settings.mode == "closed":
            self._refill(conn)
        if self._stopping:
            self._check_done()

    # -- closed loop -------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        count = self.settings.count
        return not self._stopping and (count is None or self._seq < count)

    def _refill(self, conn: _Connection) -> None:
        window = self.settings.window
        while conn.alive and len(conn.outstanding) < window and self._budget_left():
            seq = self._seq
            self._seq += 1
            if not self._send(conn, seq, time.perf_counter()):
                break
        if not self._budget_left() and not self._stopping:
            count = self.settings.count
            if count is not None and self._seq >= count:
                self._stopping = True
        if self._stopping:
            self._check_done()

    def _start_closed(self) -> None:
        # Fill the windows round-robin, so a count smaller than the windows spreads out.
        window = self.settings.window
        for _ in range(window):
            for conn in self.connections:
                if conn.alive and len(conn.outstanding) < window and self._budget_left():
                    seq = self._seq
                    self._seq += 1
                    self._send(conn, seq, time.perf_counter())
        count = self.settings.count
        if count is not None and self._seq >= count:
            self._stopping = True
        for conn in self.connections:
            conn.client.flush()
        self._check_done()

    # -- open loop ---------------------------------------------------------------------------
    async def _open_loop(self) -> None:
        s = self.settings
        interval = 1.0 / s.rate
        start = self._started
        conns = self.connections
        n = len(conns)
        limit = s.count
        seq = 0
        stats = self.stats
        lag = stats.send_lag
        while not self._stopping:
            now = time.perf_counter()
            due = start + seq * interval
            if due > now:
                delay = due - now
                await asyncio.sleep(delay - _SPIN if delay > _SPIN * 1.5 else 0)
                continue
            touched: set[int] = set()
            while due <= now:
                if limit is not None and seq >= limit:
                    self._stopping = True
                    break
                if s.duration is not None and due - start >= s.duration:
                    self._stopping = True
                    break
                conn = conns[seq % n]
                if conn.alive:
                    if len(conn.outstanding) >= s.max_outstanding:
                        stats.dropped += 1
                    elif self._send(conn, seq, due):
                        lag.append(now - due)
                        touched.add(seq % n)
                else:
                    stats.lost += 1
                seq += 1
                due = start + seq * interval
            for i in touched:
                conns[i].client.flush()
            await asyncio.sleep(0)
        self._check_done()

    # -- timeouts and progress ---------------------------------------------------------------
    async def _sweep(self) -> None:
        timeout = self.settings.timeout
        tick = min(max(timeout / 4, 0.005), 0.1)
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            for conn in self.connections:
                outstanding = conn.outstanding
                expired = 0
                while outstanding:
                    hop_by_hop = next(iter(outstanding))
                    if now - outstanding[hop_by_hop].started < timeout:
                        break
                    del outstanding[hop_by_hop]
                    conn.timed_out.add(hop_by_hop)
                    expired += 1
                closed_loop = self.settings.mode == "closed" and conn.alive
                if expired:
                    self.stats.timed_out += expired
                if closed_loop and (expired or self._reacting is not None):
                    # With --doic a window left short by abated requests is topped up here.
                    self._refill(conn)
                    conn.client.flush()
            self._check_done()

    async def _progress(self) -> None:
        stream = sys.stderr
        last_answered, last = 0, time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            s = self.stats
            rate = (s.answered - last_answered) / (now - last)
            last_answered, last = s.answered, now
            stream.write(
                f"\r{now - self._started:6.1f} s  sent {s.sent}  answered {s.answered}  "
                f"{rate:,.0f}/s  timed out {s.timed_out}  errors {s.errors}  "
                f"mismatches {s.mismatches + s.id_mismatches}   "
            )
            stream.flush()


async def simulate(settings: SimulatorSettings, checks: Sequence[Check]) -> tuple[Report, list[Capture]]:
    """Run one simulation; returns the report and the captures (empty unless asked for)."""
    simulation = Simulation(settings, checks)
    report = await simulation.run()
    return report, simulation.captures
