"""Simulated MMEs driving ME-Identity-Check-Requests at an EIR (TS 29.272 §5.3.2.2).

Each connection is an initiator peer (RFC 6733 §5.6) with its own Origin-Host, a
``diameter.transport.Client``: it exchanges CER/CEA, answers DWR and leaves with DPR. Requests
are queued with ``Client.submit`` and written together (``flush``, or by the connection at the
end of the read being processed); when a pcap is asked for, the connection records the bytes it
sends and receives.

The open and closed loops, limits and the report are gateway.simulator.loops', shared with
the AMFs of :mod:`gateway.simulator.amf`; :func:`simulate` runs either.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from diameter.application import Application, NullObserver
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID
from diameter.dictionary.ts29272_s13 import VENDOR as VENDOR_3GPP
from diameter.errors import DiameterError
from diameter.events import AnswerReceived, Event
from diameter.node import Node
from diameter.overload import ReactingNode
from diameter.peer import command_name
from diameter.settings import LocalIdentity, PeerSettings
from diameter.transport import Client, PeerConnection, client_ssl_context
from gateway.simulator.amf import AmfSimulation
from gateway.simulator.loops import Link, LoadRun, Outstanding
from gateway.simulator.pcap import Capture
from gateway.simulator.report import Report
from gateway.simulator.settings import N5G_EIR, SimulatorSettings
from gateway.simulator.traffic import (
    EQUIPMENT_UNKNOWN,
    SUCCESS,
    AnswerScanner,
    Check,
    RequestFactory,
    RequestIdentity,
    outcome_of,
)

__all__ = ["Simulation", "SimulatorSettings", "open_client", "simulate"]

_ANSWER_NAME = command_name(324, False)


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


class _StampedConnection(PeerConnection):
    """A PeerConnection that notes when each read was delivered: the time its answers arrived.
    An answer's latency ends there, not when the simulator gets round to it: after a stall the
    answers come in bursts, and handling a burst's first answers (tens of µs each) is the
    simulator's time, not the server's."""

    read_at = 0.0
    # The simulation's handler of this connection's answers, given each straight from the
    # peer core's AnswerReceived: its requests are sent with Peer.send_raw_request, so no
    # waiter is kept per request in the Client. Once it is set, every application answer on
    # the connection goes to it (the simulation sends nothing through Client.request there).
    on_answer: Callable[[int, bytes], None] | None = None

    # Called once a read's messages are served, or the part of them one callback serves (a
    # read past the read budget is served over several): the simulation's refill of the window.
    on_read_done: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        self.read_at = time.perf_counter()
        super().data_received(data)

    def _serve(self, each: Iterator[list[Event]]) -> None:
        super()._serve(each)
        if self.on_read_done is not None:
            self.on_read_done()

    def _dispatch(self, event: Event) -> None:
        on_answer = self.on_answer
        if on_answer is not None and type(event) is AnswerReceived:
            on_answer(event.hop_by_hop, event.raw)
        else:
            super()._dispatch(event)


class _TappedConnection(_StampedConnection):
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
        connection_factory=_StampedConnection if capture is None else tapped,
    )


class _Counter(NullObserver):
    """Node observer: counts the MICAs each connection's peer core received (matched or not)."""

    def __init__(self) -> None:
        self.answers_in = 0

    def on_message(
        self, direction: str, command: str, result_code: int | None, count: int = 1
    ) -> None:
        if direction == "in" and command == _ANSWER_NAME:
            self.answers_in += count


@dataclass(slots=True)
class _Outstanding(Outstanding):
    end_to_end: int
    session_id: bytes


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


class _Connection(Link):
    __slots__ = ("client", "connection", "factory", "observer", "peer", "refill_due",
                 "session_counter")

    def __init__(self, index: int, client: Client, factory: RequestFactory,
                 observer: _Counter) -> None:
        super().__init__(index)
        self.client = client
        connection = client.connection
        assert isinstance(connection, _StampedConnection)
        self.connection = connection  # when each read came: its answers' arrival time
        self.peer = client.peer  # the connection's peer core: requests go straight to it
        self.factory = factory
        self.observer = observer
        self.session_counter = 0
        self.refill_due = False  # answers of the read being served freed window slots


# ---------------------------------------------------------------------------------------------
# The run


class Simulation(LoadRun[_Connection]):
    """One run of simulated MMEs."""

    good_results = frozenset((str(SUCCESS), str(EQUIPMENT_UNKNOWN)))

    def __init__(self, settings: SimulatorSettings, checks: Sequence[Check]) -> None:
        super().__init__(settings, checks)
        self._reacting: ReactingNode | None = ReactingNode() if settings.doic else None
        self.captures: list[Capture] = []
        self._scanner = AnswerScanner()
        # (Result-Code, Experimental-Result-Code, Equipment-Status) -> (result key, outcome)
        self._names: dict[tuple[int | None, int | None, int | None], tuple[str, str]] = {}
        self._session_high = int(time.time()) & 0xFFFFFFFF

    # -- set-up and tear-down --------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.transport != "tls":
            return None
        return client_ssl_context(s.tls_ca, s.tls_cert, s.tls_key, check_hostname=s.tls_verify)

    async def _connect(self, index: int) -> _Connection:
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
        async with asyncio.timeout(s.connect_timeout + 2.0):
            client = await open_client(
                node,
                s.host,
                s.port,
                transport=s.transport,
                ssl_context=context,
                server_hostname=server_name,
                capture=capture,
            )
        factory = RequestFactory(
            RequestIdentity(
                origin_host,
                s.origin_realm,
                s.destination_realm,
                s.destination_host,
                self._session_high,
                doic=s.doic,
            )
        )
        conn = _Connection(index, client, factory, observer)
        conn.connection.on_answer = functools.partial(self._on_answer, conn)
        conn.connection.on_read_done = functools.partial(self._read_done, conn)
        conn.connection.closed.add_done_callback(
            lambda _: self._connection_closed(
                conn, f"{self.settings.origin_host_of(conn.index)}: {_why(conn)}"
            )
        )
        return conn

    async def _close(self, conn: _Connection) -> None:
        await conn.client.close(DisconnectCause.REBOOTING, timeout=2.0)

    def _flush(self, conn: _Connection) -> None:
        conn.client.flush()

    def _unmatched(self) -> int:
        return sum(c.observer.answers_in for c in self.connections) - (
            self.stats.answered + self.stats.late
        )

    def _refill_on_sweep(self) -> bool:
        # With --doic a window left short by abated requests is topped up by the sweep.
        return self._reacting is not None

    # -- sending -----------------------------------------------------------------------------
    def _send(self, conn: _Connection, seq: int, started: float) -> bool:
        client = conn.client
        reacting = self._reacting
        if reacting is not None and client.info is not None:
            if not reacting.admit(client.info.origin_host, time.perf_counter()):
                self.stats.throttled += 1  # RFC 7683 §6: abated, not sent
                return False
        index = seq % self._check_count
        check = self.checks[index]
        end_to_end = client.node.next_end_to_end()
        conn.session_counter = suffix = (conn.session_counter + 1) & 0xFFFFFFFF
        raw, session = conn.factory.request(check, end_to_end, suffix)
        try:
            hop_by_hop = conn.peer.send_raw_request(raw, self._loop.time())
        except DiameterError:
            self.stats.send_errors += 1
            return False
        conn.outstanding[hop_by_hop] = _Outstanding(started, index, check, end_to_end, session)
        stats = self.stats
        stats.sent += 1
        stats.categories[check.category] += 1
        return True

    def _slot_freed(self, conn: _Connection) -> None:
        # The window is refilled once the read's answers are all handled: its requests go out
        # in one write (the EIR reads them together), not a few at a time while it is served.
        conn.refill_due = True

    def _read_done(self, conn: _Connection) -> None:
        if conn.refill_due:
            conn.refill_due = False
            self._refill(conn)
            self._flush(conn)

    def _on_answer(self, conn: _Connection, hop_by_hop: int, raw: bytes) -> None:
        request = conn.outstanding.pop(hop_by_hop, None)
        if request is None:
            self._late(conn, hop_by_hop)
            return
        assert isinstance(request, _Outstanding)
        now = conn.connection.read_at
        stats = self.stats
        if self._reacting is not None:
            self._reacting.on_answer(raw, now)
        # RFC 6733 §6.2: the answer carries the request's End-to-End and Session-Id.
        end_to_end = int.from_bytes(raw[16:20], "big")
        if end_to_end != request.end_to_end:
            stats.add_id_mismatch("End-to-End", str(request.end_to_end), str(end_to_end))
        session, fields = self._scanner.split(raw)
        if session != request.session_id:
            stats.add_id_mismatch(
                "Session-Id",
                request.session_id.decode("utf-8", "replace"),
                "" if session is None else session.decode("utf-8", "replace"),
            )
        named = self._names.get(fields)
        if named is None:
            result, experimental, status = fields
            code = result if result is not None else experimental
            named = self._names[fields] = (
                str(code) if code is not None else "none",
                outcome_of(result, experimental, status),
            )
        self._answered(conn, request, named[0], named[1], now)


async def simulate(settings: SimulatorSettings, checks: Sequence[Check]) -> tuple[Report, list[Capture]]:
    """Run one simulation (MMEs over S13, or AMFs over N5g-eir as ``settings.interface``
    says); returns the report and the captures (empty unless asked for)."""
    if settings.interface == N5G_EIR:
        amf_run = AmfSimulation(settings, checks)
        return await amf_run.run(), []
    simulation = Simulation(settings, checks)
    report = await simulation.run()
    return report, simulation.captures
