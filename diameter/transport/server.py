"""The listening side: a ``Server`` serves a node's applications on every endpoint of a
``TransportSettings`` (TCP, TLS, SCTP) and stops gracefully (RFC 6733 §5.4)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence

from diameter.application import PeerInfo
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.errors import DiameterError
from diameter.events import Event, PeerDown, PeerUp
from diameter.node import Node
from diameter.peer import Role
from diameter.settings import ListenEndpoint, SctpSettings, TransportSettings
from diameter.transport.connection import PeerConnection
from diameter.transport.load import LoadSampler
from diameter.transport.refusals import RefusalLog, handshakes_under_way
from diameter.transport.sctp import SctpListener
from diameter.transport.sockets import bind_sctp, sctp_socket, sctp_unavailable, server_ssl_context
from diameter.transport.tls_accept import TlsListener

log = logging.getLogger(__name__)


# Connections the kernel queues before they are accepted (capped by net.core.somaxconn): MMEs
# reconnecting together after a restart must not wait a SYN retransmission (1 s) each.
LISTEN_BACKLOG = 1024

def listening_socket(
    endpoint: ListenEndpoint,
    backlog: int = LISTEN_BACKLOG,
    sctp_options: SctpSettings | None = None,
) -> socket.socket:
    """A bound, listening, non-blocking socket for ``endpoint`` (TLS is TCP underneath); an
    SCTP one gets ``sctp_options``, which every association it accepts inherits.

    Made apart from any event loop so that a supervising process can bind once and hand the
    socket to its worker processes, which then share the one accept queue."""
    if endpoint.transport not in ("tcp", "tls", "sctp"):
        raise DiameterError(f"unknown transport {endpoint.transport!r}")
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    if endpoint.transport == "sctp":
        reason = sctp_unavailable()
        if reason is not None:
            raise DiameterError(f"cannot listen on SCTP: {reason}")
        sock = sctp_socket(family, sctp_options)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # As asyncio does: [::] serves IPv6 only, so 0.0.0.0 can be listed beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if endpoint.transport == "sctp":
            bind_sctp(sock, endpoint.addresses, endpoint.port)
        else:
            sock.bind((endpoint.host, endpoint.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Server:
    """Listens on every endpoint of ``settings`` and serves ``node``'s applications.

    ``sockets`` gives an already listening socket per endpoint, in the order of
    ``settings.listen`` (inherited from a supervising process); by default each is bound here."""

    def __init__(
        self,
        node: Node,
        settings: TransportSettings | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        self.node = node
        self.settings = settings or TransportSettings()
        node.max_in_flight_total = self.settings.max_in_flight_total
        self._ssl_context = ssl_context
        if sockets is not None and len(sockets) != len(self.settings.listen):
            raise ValueError("one listening socket per endpoint of settings.listen")
        self._inherited = sockets
        self._servers: list[tuple[ListenEndpoint, asyncio.Server | SctpListener | TlsListener]] = []
        self.connections: set[PeerConnection] = set()
        self._refusals = RefusalLog(log)
        # Event loop lag, and the queueing delay for the node's overload control (3004, DOIC).
        self.load = LoadSampler(node, self.connections, node.overload.settings.interval)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for i, endpoint in enumerate(self.settings.listen):
                sock = (
                    self._inherited[i] if self._inherited is not None
                    else listening_socket(endpoint, sctp_options=self.settings.sctp)
                )
                try:
                    server = await self._serve(loop, endpoint, sock)
                except BaseException:
                    if self._inherited is None:
                        sock.close()
                    raise
                self._servers.append((endpoint, server))
                log.info("listening on %s", ", ".join(
                    f"{t}://{h if ':' not in h else f'[{h}]'}:{p}"
                    for t, h, p in self._bound(endpoint, server)
                ))
        except BaseException:
            # All or nothing: an endpoint that cannot listen leaves no other one open.
            for _, started in self._servers:
                started.close()
            self._servers.clear()
            raise
        self.load.start()

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, endpoint: ListenEndpoint, sock: socket.socket
    ) -> asyncio.Server | SctpListener | TlsListener:
        name = endpoint.transport
        if name == "tls":
            # The handshake runs once a connection is admitted, not for every one accepted
            # (diameter.transport.tls_accept), and within the CER timeout.
            return TlsListener(
                loop, sock, lambda: self._protocol("tls"),
                self._ssl_context or server_ssl_context(self.settings),
                self._admitted, self.node.settings.cer_timeout,
            )
        if name == "sctp":
            # Not loop.create_server: see diameter.transport.sctp (uvloop closes SCTP sockets).
            addresses = endpoint.addresses
            return SctpListener(loop, sock, lambda: self._protocol("sctp", addresses), addresses)
        return await loop.create_server(
            lambda: self._protocol(name), sock=sock, backlog=LISTEN_BACKLOG
        )

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

    def _opened(self, connection: PeerConnection) -> bool:
        """Admit a connection (False: closed at once, nothing read); over TLS it was at
        accept, before its handshake."""
        if connection.transport_name != "tls":
            assert connection.transport is not None
            if not self._admitted(connection.transport.get_extra_info("peername")):
                return False
        # Registered once the transport is up: a failed TLS handshake leaves nothing behind.
        self.connections.add(connection)
        connection.closed.add_done_callback(lambda _: self.connections.discard(connection))
        return True

    def _admitted(self, peername: object) -> bool:
        """Past ``max_connections`` (TLS handshakes under way counted) a connection is refused.
        RFC 6733 §5.6 has no state for it: to the peer it is a connection closed before CEA
        (I-Peer-Disc in Wait-I-CEA), which it retries after Tc, at another EIR if it has one."""
        limit = self.settings.max_connections
        handshakes = handshakes_under_way(server for _, server in self._servers)
        if limit and len(self.connections) + handshakes >= limit:
            self.node.connections_refused += 1
            self._refusals.refused(
                f"connection from {peername} refused: diameter.max_connections ({limit}) reached"
            )
            return False
        return True

    def _on_event(self, connection: PeerConnection, event: Event) -> None:
        if isinstance(event, PeerUp):
            log.info("peer %s up over %s", event.info.origin_host, connection.transport_name)
        elif isinstance(event, PeerDown):
            log.info("connection %s closed: %s", connection.peer, event.reason)

    @property
    def sockets(self) -> list[tuple[str, str, int]]:
        """(transport, host, port) of every bound socket (port 0 resolved)."""
        return [bound for endpoint, server in self._servers for bound in self._bound(endpoint, server)]

    @staticmethod
    def _bound(
        endpoint: ListenEndpoint, server: asyncio.Server | SctpListener | TlsListener
    ) -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = []
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            # A multi-homed SCTP socket names one address; it listens on every one it bound.
            hosts = endpoint.addresses if isinstance(server, SctpListener) else (host,)
            out.extend((endpoint.transport, str(h), int(port)) for h in hosts)
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
        self.load.stop()
        tasks = {t for c in self.connections for t in c.tasks}
        tasks.update(c.answered() for c in self.connections if c.deferred)
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
            connection.withdraw_deferred()
            connection.abort()
        for _, server in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()
        self._servers.clear()
