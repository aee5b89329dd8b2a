"""The initiating side (an MME simulator): ``Client.connect`` does CER/CEA, the core answers
DWR, ``request`` matches answers by Hop-by-Hop within a bounded window, ``close`` sends DPR.
``request_raw`` and ``send_raw`` are the fast paths for pre-encoded requests."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterable

from diameter.application import PeerInfo
from diameter.codec import Message, decode_message
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.errors import DiameterError
from diameter.events import AnswerReceived, Event, PeerDown, PeerUp
from diameter.node import Node
from diameter.peer import Peer, Role
from diameter.settings import TransportSettings
from diameter.transport.connection import PeerConnection
from diameter.transport.sctp import SctpTransport
from diameter.transport.sockets import bind_sctp, connect_sctp, sctp_socket, sctp_unavailable


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
        connection_factory: Callable[..., PeerConnection] = PeerConnection,
    ) -> Client:
        """Connect, exchange CER/CEA and return once the peer is I-Open (raises otherwise).

        ``host`` may list several addresses for an SCTP multi-homed association.
        ``connection_factory`` builds the protocol (a ``PeerConnection`` subclass, e.g. one that
        records the bytes); it gets ``PeerConnection``'s arguments."""
        client = cls(node, max_outstanding=max_outstanding)
        loop = client._loop
        hosts = [host] if isinstance(host, str) else list(host)
        peer = Peer(node, Role.INITIATOR, loop.time(), transport=transport, peer_host=peer_host)
        peer.start(loop.time())
        connection = connection_factory(
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
                sock = await client._sctp_connect(hosts, port, local_addresses, settings)
                SctpTransport(loop, sock, connection)
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
            async with asyncio.timeout(timeout):
                client.info = await asyncio.shield(client._up)
        except BaseException:
            connection.abort()
            raise
        return client

    async def _sctp_connect(
        self,
        hosts: list[str],
        port: int,
        local_addresses: tuple[str, ...],
        settings: TransportSettings | None,
    ) -> socket.socket:
        reason = sctp_unavailable()
        if reason is not None:
            raise DiameterError(f"cannot connect over SCTP: {reason}")
        family = socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET
        sock = sctp_socket(family, (settings or TransportSettings()).sctp)
        try:
            if local_addresses:
                bind_sctp(sock, local_addresses, 0)
            await connect_sctp(sock, hosts, port)
        except BaseException:
            sock.close()
            raise
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
        hop_by_hop = self.submit(raw, on_answer)
        self._flush()
        return hop_by_hop

    def submit(self, raw: bytes | bytearray, on_answer: Callable[[int, bytes], None]) -> int:
        """``send_raw`` without the write: requests queue in the core until ``flush()`` (or the
        end of the read being processed), so a burst goes out in one write."""
        if len(self._pending) >= self.max_outstanding:
            raise WindowFull("window of outstanding requests full")
        hop_by_hop = self.peer.send_raw_request(raw, self._loop.time())
        self._pending[hop_by_hop] = on_answer
        return hop_by_hop

    def flush(self) -> None:
        """Write what ``submit`` queued."""
        self._flush()

    async def _wait(self, hop_by_hop: int, timeout: float | None) -> bytes:
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[hop_by_hop] = future
        self._flush()
        try:
            async with asyncio.timeout(timeout):
                return await future
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
            async with asyncio.timeout(wait):
                await asyncio.shield(connection.closed)
        except TimeoutError:
            connection.abort()
            await connection.closed

    async def wait_closed(self) -> None:
        if self.connection is not None:
            await self.connection.closed
