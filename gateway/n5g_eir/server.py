"""asyncio adapter of the N5g-eir service: listeners (h2c with prior knowledge on ``http://``,
TLS with ALPN ``h2`` on ``https://``, TS 29.500 §5.2.2.2), one :class:`Http2Session` per
connection, requests handed to :class:`EquipmentIdentityCheck`.

A connection from outside ``allowed_networks`` is closed at once; one past ``max_connections``
gets the server preface and GOAWAY ENHANCE_YOUR_CALM naming no stream (RFC 9113 §6.8: nothing
was processed, the client may retry elsewhere), then is closed. On ``https://`` both are decided
at accept, before the TLS handshake (a refused client must not cost one: a flood of them would
cost their CPU), so one past the limit is closed without a GOAWAY, which would need the
handshake; a handshake under way holds a place among ``max_connections`` and ends within
``TLS_HANDSHAKE_TIMEOUT``. Otherwise the adapter only feeds
bytes to the session, dispatches the requests the session completes, and writes what the
session wants sent. A check decided at once is answered within the same
``data_received``; one waiting for the registry becomes a task, answered when it finishes.
While the socket's write buffer is above its high-water mark, the connection stops reading.
One timer for all connections ticks their sessions once a second (idle timeout, PING liveness,
the final GOAWAY of a graceful shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any, cast

from diameter.deferred import DeferredAnswer
from diameter.networks import address_refused, parse_networks
from diameter.settings import ListenEndpoint, TransportSettings
from diameter.transport.refusals import RefusalLog, handshakes_under_way
from diameter.transport.server import listening_socket
from diameter.transport.sockets import server_ssl_context, set_nodelay
from diameter.transport.tls_accept import TlsListener
from gateway.n5g_eir.equipment_status import INTERFACE, EquipmentIdentityCheck
from gateway.n5g_eir.frames import ErrorCode, goaway_frame, settings_frame
from gateway.n5g_eir.http2 import Http2Session, RequestReceived
from gateway.n5g_eir.metrics import HttpMetrics
from gateway.n5g_eir.problem import SYSTEM_FAILURE, Response
from gateway.n5g_eir.request import PATH_PREFIXES
from gateway.n5g_eir.settings import N5gEirSettings

log = logging.getLogger("eir.n5g_eir")

ALPN_H2 = "h2"  # RFC 9113 §3.2
TICK_SECONDS = 1.0  # resolution of the idle timeout, PING liveness and the drain's final GOAWAY
# A connection refused past max_connections is read (and its bytes dropped) this long at most
# after its GOAWAY: closed with unread bytes, the kernel would reset it, GOAWAY and all.
REFUSED_LINGER_SECONDS = 1.0
# A TLS client must finish its handshake within this, or its connection is closed (it holds a
# place among max_connections meanwhile); as long as a client may take to ACK our SETTINGS.
TLS_HANDSHAKE_TIMEOUT = 10.0


def tls_context(settings: N5gEirSettings) -> ssl.SSLContext:
    """TLS 1.2+ offering only ALPN h2 (RFC 9113 §3.2, §9.2); client certificates verified
    against ``tls_ca`` when ``tls_verify_client`` (mutual TLS, TS 33.501 §13.1)."""
    context = server_ssl_context(TransportSettings(
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        tls_ca=settings.tls_ca,
        tls_verify_client=settings.tls_verify_client,
    ))
    context.set_alpn_protocols([ALPN_H2])
    return context


class _Connection(asyncio.Protocol):
    def __init__(self, server: N5gEirServer, tls: bool) -> None:
        self._server = server
        self._tls = tls  # made once its handshake is done, admitted before it (TlsListener)
        self._session = Http2Session(server.settings, PATH_PREFIXES)
        self._transport: asyncio.Transport | None = None
        self._tasks: dict[int, asyncio.Task[Response]] = {}
        # Responses a callback gives later (a shared clone count's), by stream.
        self._deferred: dict[int, DeferredAnswer] = {}
        self._started: dict[int, tuple[bytes, float]] = {}
        self._flush_scheduled = False
        self._refused = False  # told GOAWAY, or no ALPN h2: what it sends is dropped
        self._no_alpn = False  # TLS without ALPN h2: its first read may be an HTTP/1.x request
        self._linger: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return len(self._tasks) + len(self._deferred)

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        server = self._server
        if self._tls:
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = None if ssl_object is None else ssl_object.selected_alpn_protocol()
            if alpn != ALPN_H2:
                # RFC 9113 §3.2: over TLS, HTTP/2 is only spoken after ALPN "h2". An HTTP/1.x
                # request in its first read gets a 505 (it read an empty reply); anything else,
                # or nothing within REFUSED_LINGER_SECONDS, closes the connection.
                log.info("N5g-eir TLS client %s did not negotiate ALPN h2 (%s): closed",
                         transport.get_extra_info("peername"), alpn)
                self._refused = self._no_alpn = True
                self._linger = asyncio.get_running_loop().call_later(
                    REFUSED_LINGER_SECONDS, transport.abort)
                return
        elif not server.admitted(transport.get_extra_info("peername")):
            transport.abort()
            return
        elif server.full():
            self._refuse(f"connection limit of {server.settings.max_connections} reached")
            return
        set_nodelay(transport)
        server.connections.add(self)
        server.http.connections += 1
        self._session.initiate()
        self._flush()

    def _refuse(self, reason: str) -> None:
        """Past the connection limit: the server preface (an empty SETTINGS, §3.4) and GOAWAY
        naming no stream (§6.8), then closed: half-closed first where the transport can, what
        the client sent meanwhile dropped, so that the GOAWAY is not lost to a reset."""
        transport = self._transport
        assert transport is not None
        self._server.count_refusal("limit", reason)
        self._refused = True
        transport.write(settings_frame({})
                        + goaway_frame(0, ErrorCode.ENHANCE_YOUR_CALM, reason.encode()))
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = asyncio.get_running_loop().call_later(
                REFUSED_LINGER_SECONDS, transport.abort)
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            if self._no_alpn:
                self._no_alpn = False
                self._answer_http1(data)
            return
        session = self._session
        requests = session.receive(data)
        if session.answered:
            self._count_answered()
        for request in requests:
            self._dispatch(request)
        self._flush()
        if session.closed:
            self._closed_by_session()

    def _answer_http1(self, data: bytes) -> None:
        """The first read of a TLS client without ALPN h2: the session answers an HTTP/1.x
        request (505), and nothing else; then the connection closes."""
        session = self._session
        session.receive(data)
        transport = self._transport
        assert transport is not None
        if session.answered:
            self._count_answered()
            transport.write(session.data_to_send())
        transport.close()

    def _count_answered(self) -> None:
        """Responses the session gave by itself (431, 505), in the request metrics."""
        session = self._session
        for method, status in session.answered:
            self._server.http.count(method, status, 0.0)
        session.answered.clear()

    def _closed_by_session(self) -> None:
        session = self._session
        reason = session.error or session.closing_reason
        if reason:
            log.info("N5g-eir connection %s closed: %s", self._peername(), reason)
        self._close()

    def tick(self, now: float) -> None:
        session = self._session
        session.tick(now)
        if session.dead:
            log.info("N5g-eir connection %s dropped: %s", self._peername(), session.error)
            self.abort_transport()
            return
        self._flush()
        if session.closed:
            self._closed_by_session()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self in self._server.connections:
            self._server.connections.discard(self)
            self._server.http.connections -= 1
        self._drop_waiting()
        self._transport = None

    def _drop_waiting(self) -> None:
        """The checks still waiting will never be answered on this connection."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        for deferred in self._deferred.values():
            deferred.withdraw()
        self._deferred.clear()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    # -- requests ------------------------------------------------------------------------------
    def _dispatch(self, request: RequestReceived) -> None:
        started = time.perf_counter()
        try:
            result = self._server.handler.handle(
                request.method, request.path, self.waiting, request.authorization
            )
        except Exception:
            # As for a check that fails later (_finished): 500 on this stream. Raised out of
            # data_received, it closed the connection with every other stream on it.
            log.exception("N5g-eir check failed")
            result = SYSTEM_FAILURE
        if isinstance(result, Response):
            self._respond(request.stream_id, request.method, result, started)
            return
        if isinstance(result, DeferredAnswer):
            self._deferred[request.stream_id] = result
            self._started[request.stream_id] = (request.method, started)
            result.bind(self._given, request.stream_id)
            return
        task: asyncio.Task[Response] = asyncio.ensure_future(result)
        self._tasks[request.stream_id] = task
        self._started[request.stream_id] = (request.method, started)
        task.add_done_callback(functools.partial(self._finished, request.stream_id))

    def _finished(self, stream_id: int, task: asyncio.Task[Response]) -> None:
        self._tasks.pop(stream_id, None)
        method, started = self._started.pop(stream_id)
        if task.cancelled() or self._transport is None:
            return
        exc = task.exception()
        if exc is not None:
            log.error("N5g-eir check failed", exc_info=exc)
            response = SYSTEM_FAILURE
        else:
            response = task.result()
        self._respond(stream_id, method, response, started)
        self._flush()
        if self._session.closed:  # a GOAWAY either way, and this was the last stream
            self._closed_by_session()

    def _given(self, deferred: DeferredAnswer) -> None:
        """A deferred response, given by its callback: the responses one round trip to Redis
        settles are given in one call, and go out in one write after it."""
        stream_id: int = deferred.request
        del self._deferred[stream_id]
        method, started = self._started.pop(stream_id)
        response = deferred.answer
        if not isinstance(response, Response):
            log.error("N5g-eir check gave %r, not a response", type(response))
            response = SYSTEM_FAILURE
        self._respond(stream_id, method, response, started)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_given)

    def _flush_given(self) -> None:
        self._flush_scheduled = False
        self._flush()
        if self._session.closed:  # a GOAWAY either way, and this was the last stream
            self._closed_by_session()

    def _respond(self, stream_id: int, method: bytes, response: Response, started: float) -> None:
        if self._session.respond(stream_id, response):
            self._server.http.count(method, response.status, time.perf_counter() - started)

    # -- output --------------------------------------------------------------------------------
    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        data = self._session.data_to_send()
        if data:
            transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _peername(self) -> Any:
        return None if self._transport is None else self._transport.get_extra_info("peername")

    def shutdown(self, now: float) -> None:
        """Graceful shutdown (RFC 9113 §6.8): GOAWAY and PING now, the final GOAWAY a round trip
        later; closed once the streams it names are answered."""
        self._session.begin_shutdown(now)
        self._flush()
        if self._session.closed:
            self._close()

    def abort(self) -> None:
        """Shutdown grace over: the checks still waiting are dropped, the connection closed."""
        self._drop_waiting()
        self._session.shutdown()
        self._flush()
        self._close()

    def abort_transport(self) -> None:
        """The client is gone (no PING ACK): nothing more can be sent to it."""
        if self._transport is not None:
            self._transport.abort()


class N5gEirServer:
    """The listeners of ``[n5g_eir] listen`` and their connections."""

    def __init__(self, handler: EquipmentIdentityCheck, settings: N5gEirSettings) -> None:
        self.handler = handler
        self.settings = settings
        self.http = HttpMetrics(INTERFACE)
        self.connections: set[_Connection] = set()
        self.networks = parse_networks(settings.allowed_networks)
        self.stopping = False
        self._refusals = RefusalLog(log)
        self._servers: list[tuple[str, asyncio.Server | TlsListener]] = []
        self._ticker: asyncio.Task[None] | None = None

    def count_refusal(self, reason: str, why: str) -> None:
        """A connection refused (``reason``: network, limit): counted, and logged at most once
        every RefusalLog interval (a flood of them must not flood the log)."""
        self.http.refused[reason] = self.http.refused.get(reason, 0) + 1
        self._refusals.refused(f"N5g-eir connection refused: {why}")

    @property
    def handshakes(self) -> int:
        """TLS handshakes under way (each holds a place among ``max_connections``)."""
        return handshakes_under_way(server for _, server in self._servers)

    def admitted(self, peername: Any) -> bool:
        """A connection's source address against ``allowed_networks``: False when refused
        (counted)."""
        if self.networks:
            why = address_refused(_host(peername), self.networks)
            if why is not None:
                self.count_refusal("network", why)
                return False
        return True

    def full(self) -> bool:
        """``max_connections`` open, TLS handshakes under way counted."""
        limit = self.settings.max_connections
        return bool(limit) and len(self.connections) + self.handshakes >= limit

    def admitted_tls(self, peername: Any) -> bool:
        """:meth:`admitted` and, before the handshake, ``max_connections`` (closed without a
        GOAWAY, which would need the handshake)."""
        if not self.admitted(peername):
            return False
        if self.full():
            limit = self.settings.max_connections
            self.count_refusal("limit", f"connection limit of {limit} reached")
            return False
        return True

    async def start(self, sockets: Sequence[socket.socket] | None = None) -> None:
        """Listen on ``settings.listen``, or serve ``sockets`` (one per entry, already bound
        and listening: a worker process is handed its supervisor's)."""
        loop = asyncio.get_running_loop()
        context = None
        for n, endpoint in enumerate(self.settings.listen):
            server: asyncio.Server | TlsListener
            if endpoint.scheme == "https":
                # Admitted at accept, before the handshake: a refused client costs none.
                context = context or tls_context(self.settings)
                sock = sockets[n] if sockets is not None else listening_socket(
                    ListenEndpoint("tcp", endpoint.host, endpoint.port))
                server = TlsListener(loop, sock, functools.partial(_Connection, self, True),
                                     context, self.admitted_tls, TLS_HANDSHAKE_TIMEOUT)
            else:
                factory = functools.partial(_Connection, self, False)
                if sockets is not None:
                    server = await loop.create_server(factory, sock=sockets[n])
                else:
                    server = await loop.create_server(
                        factory, endpoint.host, endpoint.port, backlog=1024
                    )
            self._servers.append((endpoint.scheme, server))
        self._ticker = loop.create_task(self._tick())

    async def _tick(self) -> None:
        """Once a second, every connection's timers (a few AMF connections: a short walk)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = loop.time()
            for connection in list(self.connections):
                connection.tick(now)

    @property
    def sockets(self) -> list[tuple[str, str, int]]:
        """(scheme, address, port) of every listening socket (port 0 resolved)."""
        out = []
        for scheme, server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((scheme, host, port))
        return out

    async def stop(self, limit: float | None = None) -> None:
        """Stop accepting; on every connection GOAWAY NO_ERROR in two steps (RFC 9113 §6.8: the
        streams the client opened before it saw the first are served too); the streams in
        flight are answered (checks waiting for the registry: at most
        ``shutdown_grace_seconds``, and at most ``limit``), then each connection closes."""
        self.stopping = True
        for _, server in self._servers:
            server.close()
        now = asyncio.get_running_loop().time()
        for connection in list(self.connections):
            connection.shutdown(now)
        grace = self.settings.shutdown_grace_seconds
        if limit is not None:
            grace = min(grace, limit)
        deadline = now + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.abort()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for _, server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()


def _host(peername: Any) -> str | None:
    """The address of a socket's peer name ((host, port, ...) for IP), None for anything else."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None
