"""asyncio adapters for the sans-IO peer core: TCP, TLS over TCP, SCTP (RFC 6733 §2.1).

The adapters only move bytes: they feed ``Peer.receive_data``, write ``Peer.data_to_send()``,
keep one timer on ``Peer.next_deadline()``, call application handlers for ``RequestReceived``
(synchronous results are answered at once, awaitables run as one task per request and are answered
as they finish) and close the transport when ``Peer.should_close`` says so.

- ``Server``: listens on every ``ListenEndpoint`` of a ``TransportSettings``; graceful ``stop``.
- ``Client``: the initiator (an MME simulator): CER/CEA, DWR/DWA, ``request`` matched by
  Hop-by-Hop, a bounded window of outstanding requests, raw fast path, ``close`` with DPR.

TCP_NODELAY on every connection; reading pauses while a peer's writes do not drain
(``write_high_water`` / ``write_low_water``). SCTP: one-to-one sockets, payload protocol id 46
(RFC 6733 §2.1.1, §11.5), several local addresses (multi-homing) through pysctp when installed.
Messages go on stream 0 with ordered delivery: RFC 6733 §2.1.1 recommends the U flag, but
unordered delivery could let a request overtake the CER (§5.6.1 closes on that) or a DPR overtake
the answers before it; a receiver accepts any stream either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from diameter.application import PeerInfo
from diameter.codec import Message, decode_message
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.errors import DiameterError
from diameter.events import AnswerReceived, Event, PeerDown, PeerUp, RequestReceived
from diameter.node import Node
from diameter.peer import Peer, Role
from diameter.settings import ListenEndpoint, TransportSettings

log = logging.getLogger(__name__)

DIAMETER_PPID = 46  # RFC 6733 §11.5: Diameter in clear-text SCTP DATA chunks
_SCTP_NODELAY = 3
_SCTP_DEFAULT_SEND_PARAM = 10
# struct sctp_sndrcvinfo: stream, ssn, flags (u16), ppid, context, timetolive, tsn, cumtsn (u32),
# assoc_id (s32); the kernel copies the ppid to the wire as is, so it is given in network order.
_SNDRCVINFO = struct.Struct("=HHHxxIIIIIi")


def origin_state_now() -> int:
    """An Origin-State-Id for this start (RFC 6733 §8.16): seconds since the epoch."""
    return int(time.time()) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Sockets


def sctp_unavailable() -> str | None:
    """Why SCTP cannot be used here, or None when the kernel opens SCTP sockets."""
    proto = getattr(socket, "IPPROTO_SCTP", 132)
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    except OSError as exc:
        return f"the kernel cannot open SCTP sockets ({exc.strerror or exc})"
    probe.close()
    return None


def _pysctp() -> Any:
    try:
        import sctp
    except ImportError:
        return None
    return sctp


def sctp_socket(family: int = socket.AF_INET) -> socket.socket:
    """A one-to-one (SOCK_STREAM) SCTP socket sending PPID 46 by default, Nagle off."""
    proto = getattr(socket, "IPPROTO_SCTP", 132)
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(proto, _SCTP_NODELAY, 1)
        info = _SNDRCVINFO.pack(0, 0, 0, socket.htonl(DIAMETER_PPID), 0, 0, 0, 0, 0)
        sock.setsockopt(proto, _SCTP_DEFAULT_SEND_PARAM, info)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _bind_sctp(sock: socket.socket, addresses: Iterable[str], port: int) -> None:
    """Bind to one address, or to several (multi-homing, sctp_bindx through pysctp)."""
    addresses = list(addresses)
    if len(addresses) == 1:
        sock.bind((addresses[0], port))
        return
    sctp = _pysctp()
    if sctp is None:
        raise DiameterError("SCTP multi-homing needs pysctp (the 'sctp' extra)")
    wrapper = sctp.sctpsocket_tcp(sock.family, sock)
    wrapper.bindx([(address, port) for address in addresses])


def server_ssl_context(settings: TransportSettings) -> ssl.SSLContext:
    """TLS for incoming connections (RFC 6733 §13.1: port 5868, TLS from the first byte)."""
    if not settings.tls_cert or not settings.tls_key:
        raise DiameterError("TLS listener without tls_cert/tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca:
        context.load_verify_locations(settings.tls_ca)
    if settings.tls_verify_client:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        if sock.proto in (0, socket.IPPROTO_TCP):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            sock.setsockopt(sock.proto, _SCTP_NODELAY, 1)


# ---------------------------------------------------------------------------------------------
# One connection


class PeerConnection(asyncio.Protocol):
    """Drives one ``Peer`` core from an asyncio transport."""

    def __init__(
        self,
        node: Node,
        role: Role,
        *,
        transport_name: str = "tcp",
        settings: TransportSettings | None = None,
        peer: Peer | None = None,
        local_addresses: tuple[str, ...] = (),
        on_event: Callable[[PeerConnection, Event], None] | None = None,
        on_open: Callable[[PeerConnection], None] | None = None,
    ) -> None:
        self.node = node
        self.on_open = on_open
        self.role = role
        self.transport_name = transport_name
        self.settings = settings or TransportSettings()
        self.peer: Peer | None = peer
        self.local_addresses = local_addresses
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.on_open is not None:
            self.on_open(self)
        _set_nodelay(transport)
        transport.set_write_buffer_limits(
            high=self.settings.write_high_water, low=self.settings.write_low_water
        )
        peername = transport.get_extra_info("peername")
        remote = (str(peername[0]), int(peername[1])) if peername else None
        local = self.local_addresses
        if not local:
            sockname = transport.get_extra_info("sockname")
            if sockname and sockname[0] not in ("0.0.0.0", "::"):
                local = (str(sockname[0]),)
        now = self._loop.time()
        if self.peer is None:
            self.peer = Peer(
                self.node,
                self.role,
                now,
                remote_address=remote,
                local_addresses=local,
                transport=self.transport_name,
            )
        else:
            self.peer.remote_address = remote
            self.peer.local_addresses = local
        self.peer.on_wakeup = self._wakeup
        if self.role is Role.INITIATOR:
            self._handle(self.peer.connection_made(now))
        else:
            self._flush()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        assert peer is not None
        try:
            events = peer.receive_data(data, self._loop.time())
        except Exception:
            # A bug met by one peer's bytes closes that connection only, never the server.
            log.exception("%r: unexpected error on received data; closing", peer)
            self.abort()
            return
        self._handle(events)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.peer is not None:
            events = self.peer.connection_lost(self._loop.time())
            for event in events:
                self._dispatch(event)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        # Backpressure: the peer does not read its answers; stop reading its requests.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- events ---------------------------------------------------------------------------------
    def _handle(self, events: list[Event]) -> None:
        for event in events:
            self._dispatch(event)
        self._flush()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._request(event)
        elif self.on_event is not None:
            self.on_event(self, event)

    def _request(self, event: RequestReceived) -> None:
        peer = self.peer
        assert peer is not None
        try:
            result = event.handler(event.message, event.peer)
        except Exception as exc:
            log.exception("handler for %r failed", event.message)
            peer.fail_request(event, self._loop.time(), f"handler failed: {type(exc).__name__}")
            return
        if isinstance(result, (bytes, Message)):
            peer.send_answer(event, result, self._loop.time())
            return
        try:
            future = asyncio.ensure_future(result)
        except TypeError:
            log.error("handler returned %r, neither an answer nor an awaitable", type(result))
            peer.fail_request(event, self._loop.time(), "handler returned no answer")
            return
        task = self._loop.create_task(self._await(event, future))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _await(self, event: RequestReceived, future: asyncio.Future[Any]) -> None:
        peer = self.peer
        assert peer is not None
        try:
            answer = await future
        except asyncio.CancelledError:
            peer.abandon_request(event)
            raise
        except Exception as exc:
            log.exception("handler for %r failed", event.message)
            peer.fail_request(event, self._loop.time(), f"handler failed: {type(exc).__name__}")
        else:
            if isinstance(answer, (bytes, Message)):
                peer.send_answer(event, answer, self._loop.time())
            else:
                log.error("handler returned %r, not an answer", type(answer))
                peer.fail_request(event, self._loop.time(), "handler returned no answer")
        self._flush()

    def _wakeup(self) -> None:
        """Another connection changed this one (election, duplicate answer)."""
        if self.peer is not None and self.transport is not None:
            self._loop.call_soon(self._handle, self.peer.next_events())

    # -- output and timer -----------------------------------------------------------------------
    def _flush(self) -> None:
        peer, transport = self.peer, self.transport
        if peer is None or transport is None:
            return
        data = peer.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
        if peer.should_close:
            if not transport.is_closing():
                transport.close()
            return
        deadline = peer.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.peer is not None:
            self._handle(self.peer.handle_timeout(self._loop.time()))

    def stop(self, cause: int) -> None:
        if self.peer is not None:
            self._handle(self.peer.stop(cause, self._loop.time()))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


# ---------------------------------------------------------------------------------------------
# Server


class Server:
    """Listens on every endpoint of ``settings`` and serves ``node``'s applications."""

    def __init__(
        self,
        node: Node,
        settings: TransportSettings | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.node = node
        self.settings = settings or TransportSettings()
        node.max_in_flight_total = self.settings.max_in_flight_total
        self._ssl_context = ssl_context
        self._servers: list[tuple[ListenEndpoint, asyncio.Server]] = []
        self.connections: set[PeerConnection] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for endpoint in self.settings.listen:
            server = await self._listen(loop, endpoint)
            self._servers.append((endpoint, server))
            log.info("listening on %s", [s.getsockname() for s in server.sockets])

    async def _listen(self, loop: asyncio.AbstractEventLoop, endpoint: ListenEndpoint) -> asyncio.Server:
        name = endpoint.transport
        if name == "tcp":
            return await loop.create_server(
                lambda: self._protocol("tcp"), endpoint.host, endpoint.port, reuse_address=True
            )
        if name == "tls":
            context = self._ssl_context or server_ssl_context(self.settings)
            return await loop.create_server(
                lambda: self._protocol("tls"),
                endpoint.host,
                endpoint.port,
                ssl=context,
                reuse_address=True,
            )
        if name == "sctp":
            reason = sctp_unavailable()
            if reason is not None:
                raise DiameterError(f"cannot listen on SCTP: {reason}")
            addresses = (endpoint.host, *endpoint.extra_addresses)
            family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
            sock = sctp_socket(family)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind_sctp(sock, addresses, endpoint.port)
            sock.listen(128)
            return await loop.create_server(
                lambda: self._protocol("sctp", addresses), sock=sock
            )
        raise DiameterError(f"unknown transport {name!r}")

    def _protocol(self, name: str, local: tuple[str, ...] = ()) -> PeerConnection:
        connection = PeerConnection(
            self.node,
            Role.RESPONDER,
            transport_name=name,
            settings=self.settings,
            local_addresses=local,
            on_event=self._on_event,
            on_open=self._opened,
        )
        return connection

    def _opened(self, connection: PeerConnection) -> None:
        # Registered once the transport is up: a failed TLS handshake leaves nothing behind.
        self.connections.add(connection)
        connection.closed.add_done_callback(lambda _: self.connections.discard(connection))

    def _on_event(self, connection: PeerConnection, event: Event) -> None:
        if isinstance(event, PeerUp):
            log.info("peer %s up over %s", event.info.origin_host, connection.transport_name)
        elif isinstance(event, PeerDown):
            log.info("connection %s closed: %s", connection.peer, event.reason)

    @property
    def sockets(self) -> list[tuple[str, str, int]]:
        """(transport, host, port) of every bound socket (port 0 resolved)."""
        out = []
        for endpoint, server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((endpoint.transport, str(host), int(port)))
        return out

    @property
    def open_peers(self) -> list[PeerInfo]:
        return [c.peer.info for c in self.connections if c.peer and c.peer.is_open and c.peer.info]

    @property
    def in_flight(self) -> int:
        return self.node.in_flight_total

    async def stop(self, cause: int = DisconnectCause.REBOOTING, timeout: float = 5.0) -> None:
        """Graceful stop: stop accepting, let requests in flight finish, DPR to every peer,
        wait for the DPAs (the peers close, RFC 6733 §5.4), close what is left at ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _, server in self._servers:
            server.close()
        tasks = {t for c in self.connections for t in c.tasks}
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()) / 2)
        for connection in list(self.connections):
            connection.stop(cause)
        waiting = [c.closed for c in self.connections if not c.closed.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, deadline - loop.time()))
        for connection in list(self.connections):
            for task in connection.tasks:
                task.cancel()
            connection.abort()
        for _, server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()


# ---------------------------------------------------------------------------------------------
# Client (initiator)


class ClientClosed(DiameterError):
    """The connection closed before the answer came."""

    result_code = 3002


class WindowFull(DiameterError):
    """``send_raw`` with the window of outstanding requests full."""

    result_code = 3004


class Client:
    """An initiator connection: ``await Client.connect(node, host, port)``."""

    def __init__(self, node: Node, *, max_outstanding: int = 1024) -> None:
        self.node = node
        self.max_outstanding = max_outstanding
        self.connection: PeerConnection | None = None
        self.info: PeerInfo | None = None
        self.down_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        self._up: asyncio.Future[PeerInfo] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[bytes] | Callable[[int, bytes], None]] = {}
        self._window = asyncio.Semaphore(max_outstanding)

    @classmethod
    async def connect(
        cls,
        node: Node,
        host: str | Iterable[str],
        port: int,
        *,
        transport: str = "tcp",
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local_addresses: tuple[str, ...] = (),
        peer_host: str | None = None,
        max_outstanding: int = 1024,
        settings: TransportSettings | None = None,
    ) -> Client:
        """Connect, exchange CER/CEA and return once the peer is I-Open (raises otherwise).

        ``host`` may list several addresses for an SCTP multi-homed association."""
        client = cls(node, max_outstanding=max_outstanding)
        loop = client._loop
        hosts = [host] if isinstance(host, str) else list(host)
        peer = Peer(node, Role.INITIATOR, loop.time(), transport=transport, peer_host=peer_host)
        peer.start(loop.time())
        connection = PeerConnection(
            node,
            Role.INITIATOR,
            transport_name=transport,
            settings=settings,
            peer=peer,
            local_addresses=local_addresses,
            on_event=client._on_event,
        )
        client.connection = connection
        try:
            if transport == "sctp":
                sock = await client._sctp_connect(hosts, port, local_addresses)
                await loop.create_connection(lambda: connection, sock=sock)
            else:
                local_addr = (local_addresses[0], 0) if local_addresses else None
                await loop.create_connection(
                    lambda: connection,
                    hosts[0],
                    port,
                    ssl=ssl_context if transport == "tls" else None,
                    server_hostname=server_hostname if transport == "tls" else None,
                    local_addr=local_addr,
                )
        except OSError:
            peer.connection_failed(loop.time())
            raise
        timeout = node.settings.cea_timeout + 1.0
        try:
            client.info = await asyncio.wait_for(asyncio.shield(client._up), timeout)
        except BaseException:
            connection.abort()
            raise
        return client

    async def _sctp_connect(
        self, hosts: list[str], port: int, local_addresses: tuple[str, ...]
    ) -> socket.socket:
        reason = sctp_unavailable()
        if reason is not None:
            raise DiameterError(f"cannot connect over SCTP: {reason}")
        family = socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET
        sock = sctp_socket(family)
        if local_addresses:
            _bind_sctp(sock, local_addresses, 0)
        if len(hosts) > 1:
            sctp = _pysctp()
            if sctp is None:
                raise DiameterError("SCTP multi-homing needs pysctp (the 'sctp' extra)")
            sock.setblocking(True)
            await asyncio.to_thread(
                sctp.sctpsocket_tcp(family, sock).connectx, [(h, port) for h in hosts]
            )
            sock.setblocking(False)
        else:
            await self._loop.sock_connect(sock, (hosts[0], port))
        return sock

    # -- events ---------------------------------------------------------------------------------
    def _on_event(self, connection: PeerConnection, event: Event) -> None:
        if isinstance(event, AnswerReceived):
            waiter = self._pending.pop(event.hop_by_hop, None)
            if waiter is None:
                return
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_result(event.raw)
            else:
                waiter(event.hop_by_hop, event.raw)
        elif isinstance(event, PeerUp):
            if not self._up.done():
                self._up.set_result(event.info)
        elif isinstance(event, PeerDown):
            self.down_reason = event.reason
            error = ClientClosed(f"connection closed: {event.reason}")
            if not self._up.done():
                self._up.set_exception(error)
            pending, self._pending = self._pending, {}
            for waiter in pending.values():
                if isinstance(waiter, asyncio.Future) and not waiter.done():
                    waiter.set_exception(error)

    # -- requests -------------------------------------------------------------------------------
    @property
    def peer(self) -> Peer:
        assert self.connection is not None and self.connection.peer is not None
        return self.connection.peer

    @property
    def is_open(self) -> bool:
        return self.connection is not None and self.peer.is_open

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    async def request(self, message: Message, timeout: float | None = None) -> Message:
        """Send a request (Hop-by-Hop and, when zero, End-to-End are filled in) and await its
        answer, decoded."""
        async with self._window:
            hop_by_hop = self.peer.send_request(message, self._loop.time())
            raw = await self._wait(hop_by_hop, timeout)
        return decode_message(raw)

    async def request_raw(self, raw: bytes | bytearray, timeout: float | None = None) -> bytes:
        """Fast path: pre-encoded request bytes (their Hop-by-Hop is rewritten) -> answer bytes."""
        async with self._window:
            hop_by_hop = self.peer.send_raw_request(raw, self._loop.time())
            return await self._wait(hop_by_hop, timeout)

    def send_raw(self, raw: bytes | bytearray, on_answer: Callable[[int, bytes], None]) -> int:
        """Fastest path: no future per request. Returns the Hop-by-Hop Identifier used;
        ``on_answer(hop_by_hop, answer_bytes)`` is called when the answer arrives. Raises
        ``WindowFull`` when ``max_outstanding`` requests are waiting."""
        if len(self._pending) >= self.max_outstanding:
            raise WindowFull("window of outstanding requests full")
        hop_by_hop = self.peer.send_raw_request(raw, self._loop.time())
        self._pending[hop_by_hop] = on_answer
        self._flush()
        return hop_by_hop

    async def _wait(self, hop_by_hop: int, timeout: float | None) -> bytes:
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[hop_by_hop] = future
        self._flush()
        try:
            return await asyncio.wait_for(future, timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._pending.pop(hop_by_hop, None)
            if self.connection is not None and self.connection.peer is not None:
                self.peer.forget_request(hop_by_hop)
            raise

    def _flush(self) -> None:
        if self.connection is not None:
            self.connection._flush()

    async def close(
        self, cause: int = DisconnectCause.REBOOTING, timeout: float | None = None
    ) -> None:
        """Graceful close: DPR, then the DPA (we close on it, RFC 6733 §5.4) or the timeout."""
        connection = self.connection
        if connection is None:
            return
        connection.stop(cause)
        wait = timeout if timeout is not None else self.node.settings.dpa_timeout + 1.0
        try:
            await asyncio.wait_for(asyncio.shield(connection.closed), wait)
        except TimeoutError:
            connection.abort()
            await connection.closed

    async def wait_closed(self) -> None:
        if self.connection is not None:
            await self.connection.closed
