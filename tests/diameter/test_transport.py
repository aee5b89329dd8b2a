"""Integration over real loopback sockets: Server, Client and raw peers that misbehave."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from diameter import watchdog
from diameter.answer import answer_to
from diameter.application import Application, PeerInfo
from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.framing import Framer
from diameter.node import Node
from diameter.settings import ListenEndpoint, TransportSettings
from diameter.transport import Client, ClientClosed, PeerConnection, Server, WindowFull
from gateway.metrics import OverloadCollector
from tests.diameter.test_peer_helpers import (
    ECR,
    EIR_HOST,
    MME_HOST,
    S13,
    VENDOR_3GPP,
    Recorder,
    base_request,
    cer,
    ecr,
    ecr_message,
    eir_node,
    mme_node,
)

LOCAL = TransportSettings(listen=(ListenEndpoint("tcp", "127.0.0.1", 0),))


async def start_server(node: Node, settings: TransportSettings = LOCAL) -> tuple[Server, int]:
    server = Server(node, settings)
    await server.start()
    return server, server.sockets[0][2]


@pytest.fixture
async def eir() -> AsyncIterator[tuple[Server, int]]:
    server, port = await start_server(eir_node())
    yield server, port
    await server.stop(timeout=0.5)


class RawPeer:
    """A hand-driven TCP peer: writes whatever it is told, frames what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = Framer()
        self.queue: list[bytes] = []

    @classmethod
    async def open(cls, port: int, sock: socket.socket | None = None) -> RawPeer:
        if sock is not None:
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self, timeout: float = 3.0) -> Message | None:
        """The next message, or None at end of stream."""
        async with asyncio.timeout(timeout):
            while not self.queue:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.queue.extend(self.framer.feed(data))
        return decode_message(self.queue.pop(0))

    async def handshake(self, origin_host: str = MME_HOST) -> Message:
        self.send(cer(origin_host))
        cea = await self.read()
        assert cea is not None and cea.command_code == 257
        return cea

    async def closed(self, timeout: float = 3.0) -> bool:
        """True when the other side closes (anything still arriving is drained)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except (TimeoutError, ConnectionResetError):
            return False
        return True

    def close(self) -> None:
        self.writer.close()


def count_writes(connection: PeerConnection) -> list[int]:
    """The sizes of ``connection``'s writes from now on, as they are made."""
    writes: list[int] = []
    assert connection.transport is not None
    write = connection.transport.write

    def counted(data: bytes | bytearray | memoryview) -> None:
        writes.append(len(data))
        write(data)

    connection.transport.write = counted  # type: ignore[method-assign]
    return writes


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------
# Capabilities exchange, requests


async def test_cer_cea_and_request(eir: tuple[Server, int]) -> None:
    server, port = eir
    client = await Client.connect(mme_node(), "127.0.0.1", port)
    assert client.info is not None and client.info.origin_host == EIR_HOST
    assert client.info.applications == frozenset({S13})
    await wait_for(lambda: len(server.open_peers) == 1)
    assert server.open_peers[0].origin_host == MME_HOST
    answer = await client.request(ecr_message(end_to_end=0))
    assert answer.get("Result-Code") == 2001 and answer.get("Equipment-Status") == 0
    await client.close()


async def test_tcp_nodelay_on_both_ends(eir: tuple[Server, int]) -> None:
    server, port = eir
    client = await Client.connect(mme_node(), "127.0.0.1", port)
    await wait_for(lambda: len(server.connections) == 1)
    (connection,) = server.connections
    for transport in (connection.transport, client.connection.transport):  # type: ignore[union-attr]
        assert transport is not None
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    await client.close()


async def test_unknown_peer_gets_3010_and_is_closed() -> None:
    server, port = await start_server(eir_node(allowed_hosts=("hss.*",)))
    try:
        raw = await RawPeer.open(port)
        cea = await raw.handshake()
        assert cea.get("Result-Code") == 3010 and cea.is_error
        assert await raw.closed()
        with pytest.raises(ClientClosed):
            await Client.connect(mme_node(), "127.0.0.1", port)
    finally:
        await server.stop(timeout=1.0)


async def test_no_common_application_5010(eir: tuple[Server, int]) -> None:
    _, port = eir
    raw = await RawPeer.open(port)
    raw.send(cer(apps=[Avp.new("Auth-Application-Id", 16777251)]))
    cea = await raw.read()
    assert cea is not None and cea.get("Result-Code") == 5010
    assert await raw.closed()
    with pytest.raises(ClientClosed, match="5010"):
        await Client.connect(mme_node([Application(16777251, {})]), "127.0.0.1", port)


async def test_garbage_before_cer_closes_and_server_keeps_serving(eir: tuple[Server, int]) -> None:
    _server, port = eir
    raw = await RawPeer.open(port)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await raw.read() is None  # closed with no answer
    client = await Client.connect(mme_node(), "127.0.0.1", port)
    assert (await client.request(ecr_message(end_to_end=0))).get("Result-Code") == 2001
    await client.close()


async def test_non_cer_first_message_closed(eir: tuple[Server, int]) -> None:
    _, port = eir
    raw = await RawPeer.open(port)
    raw.send(base_request(280))
    assert await raw.read() is None


async def test_half_written_message_then_disconnect(eir: tuple[Server, int]) -> None:
    server, port = eir
    raw = await RawPeer.open(port)
    await raw.handshake()
    raw.send(ecr()[:37])
    await raw.writer.drain()
    raw.close()
    await wait_for(lambda: not server.connections)
    client = await Client.connect(mme_node(), "127.0.0.1", port)
    assert client.is_open
    await client.close()


async def test_bad_version_in_open_state_answered_then_closed(eir: tuple[Server, int]) -> None:
    _, port = eir
    raw = await RawPeer.open(port)
    await raw.handshake()
    data = bytearray(ecr())
    data[0] = 3
    raw.send(bytes(data))
    answer = await raw.read()
    assert answer is not None and answer.get("Result-Code") == 5011
    assert await raw.read() is None


async def test_message_split_across_reads_and_many_in_one_read(eir: tuple[Server, int]) -> None:
    _, port = eir
    raw = await RawPeer.open(port)
    await raw.handshake()
    data = b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(3))
    for i in range(0, len(data), 7):
        raw.send(data[i : i + 7])
        await raw.writer.drain()
    got = [await raw.read() for _ in range(3)]
    assert sorted(m.hop_by_hop for m in got if m) == [0, 1, 2]


async def test_1000_pipelined_requests_answered_in_full(eir: tuple[Server, int]) -> None:
    _, port = eir
    raw = await RawPeer.open(port)
    await raw.handshake()
    raw.send(b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(1000)))
    got = []
    for _ in range(1000):
        message = await raw.read()
        assert message is not None
        got.append(message)
    assert sorted(m.hop_by_hop for m in got) == list(range(1000))
    assert {m.get("Result-Code") for m in got} == {2001}


async def test_several_peers_at_once(eir: tuple[Server, int]) -> None:
    _server, port = eir

    async def one(n: int) -> set[int]:
        node = mme_node()
        node.identity = replace(node.identity, origin_host=f"mme{n}.example.net")
        client = await Client.connect(node, "127.0.0.1", port)
        answers = await asyncio.gather(
            *(client.request(ecr_message(end_to_end=0, origin_host=f"mme{n}.example.net")) for _ in range(50))
        )
        await client.close()
        return {a.get("Result-Code") for a in answers}

    results = await asyncio.gather(*(one(n) for n in range(8)))
    assert results == [{2001}] * 8


# ---------------------------------------------------------------------------------------------
# Handlers: slow, failing, raw answers; bounds


def gated_node(gate: asyncio.Event, **settings: Any) -> Node:
    """ECR handler: IMEIs starting with 0 wait for ``gate``; others answer at once (sync)."""
    node = eir_node({}, **settings)

    def handle(request: Message, peer: PeerInfo) -> Message | Awaitable[Message]:
        answer = answer_to(request, node.identity, 2001, body=[Avp.new("Auth-Session-State", 1)])
        imei = request.find(1401, VENDOR_3GPP).find(1402, VENDOR_3GPP).value  # type: ignore[union-attr]
        if not imei.startswith("0"):
            return answer

        async def later() -> Message:
            await gate.wait()
            return answer

        return later()

    node.applications[S13] = replace(node.applications[S13], handlers={ECR: handle})
    return node


async def test_slow_handler_does_not_block_other_requests() -> None:
    gate = asyncio.Event()
    server, port = await start_server(gated_node(gate))
    try:
        client = await Client.connect(mme_node(), "127.0.0.1", port)
        slow = asyncio.ensure_future(client.request(ecr_message(end_to_end=0, imei="01234567890123")))
        fast = await asyncio.gather(*(client.request(ecr_message(end_to_end=0)) for _ in range(10)))
        assert [a.get("Result-Code") for a in fast] == [2001] * 10
        assert not slow.done()
        gate.set()
        assert (await slow).get("Result-Code") == 2001
        await client.close()
    finally:
        await server.stop(timeout=1.0)


async def test_too_busy_3004_past_the_in_flight_bound() -> None:
    gate = asyncio.Event()
    server, port = await start_server(gated_node(gate, max_in_flight_per_peer=4))
    try:
        client = await Client.connect(mme_node(), "127.0.0.1", port)
        got: dict[int, bytes] = {}
        for i in range(10):
            raw = ecr(end_to_end=i + 1, imei="01234567890123")
            client.send_raw(raw, lambda hbh, answer: got.__setitem__(hbh, answer))
        await wait_for(lambda: len(got) == 6)
        codes = [decode_message(a) for a in got.values()]
        assert {m.get("Result-Code") for m in codes} == {3004}
        assert all(m.is_error for m in codes)
        assert server.in_flight == 4
        gate.set()
        await wait_for(lambda: len(got) == 10)
        assert sorted(decode_message(a).get("Result-Code") for a in got.values()) == [2001] * 4 + [3004] * 6
        await client.close()
    finally:
        await server.stop(timeout=1.0)


async def test_handler_exception_answers_5012_connection_survives() -> None:
    calls = 0

    def boom(request: Message, peer: PeerInfo) -> Message:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug in the application")

    async def async_boom(request: Message, peer: PeerInfo) -> Message:
        raise ValueError("async bug")

    for handler in (boom, async_boom):
        server, port = await start_server(eir_node({ECR: handler}))
        try:
            client = await Client.connect(mme_node(), "127.0.0.1", port)
            for _ in range(2):
                answer = await client.request(ecr_message(end_to_end=0))
                assert answer.get("Result-Code") == 5012
                assert answer.get("Auth-Session-State") == 1
            assert client.is_open
            await client.close()
        finally:
            await server.stop(timeout=1.0)
    assert calls == 2


async def test_handler_may_return_pre_encoded_bytes() -> None:
    node = eir_node({})

    async def handle(request: Message, peer: PeerInfo) -> bytes:
        return answer_to(request, node.identity, 2001, body=[Avp.new("Auth-Session-State", 1)]).encode()

    node.applications[S13] = replace(node.applications[S13], handlers={ECR: handle})
    server, port = await start_server(node)
    try:
        client = await Client.connect(mme_node(), "127.0.0.1", port)
        raw = await client.request_raw(ecr(end_to_end=5))
        assert decode_message(raw).get("Result-Code") == 2001
        await client.close()
    finally:
        await server.stop(timeout=1.0)


async def test_handler_returning_futures_answered_together_from_callbacks() -> None:
    # A handler may return a future it settles later (the S13 handler does, for checks that
    # wait on one round trip to Redis): answered with no task, the answers settled in one loop
    # iteration written in one go; a failed future answers 5012, a cancelled one nothing.
    node = eir_node({})
    waiting: list[tuple[Message, asyncio.Future[Message]]] = []

    def handle(request: Message, peer: PeerInfo) -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        waiting.append((request, future))
        return future

    node.applications[S13] = replace(node.applications[S13], handlers={ECR: handle})
    server, port = await start_server(node)
    try:
        raw = await RawPeer.open(port)
        await raw.handshake()
        (connection,) = server.connections
        writes = count_writes(connection)
        for i in range(12):
            raw.send(ecr(hop_by_hop=i + 1, end_to_end=i + 1))
        await wait_for(lambda: len(waiting) == 12)
        assert server.in_flight == 12 and not connection.tasks - {f for _, f in waiting}
        for request, future in waiting[:10]:
            future.set_result(answer_to(request, node.identity, 2001,
                                        body=[Avp.new("Auth-Session-State", 1)]))
        waiting[10][1].set_exception(RuntimeError("the store broke"))
        answers = [await raw.read() for _ in range(11)]
        assert sorted(a.get("Result-Code") for a in answers if a) == [2001] * 10 + [5012]
        assert len(writes) == 1  # settled together, written together
        waiting[11][1].cancel()
        await wait_for(lambda: server.in_flight == 0)
        assert not connection.tasks
    finally:
        await server.stop(timeout=0.3)


async def test_client_raw_window(eir: tuple[Server, int]) -> None:
    _, port = eir
    client = await Client.connect(mme_node(), "127.0.0.1", port, max_outstanding=2)
    got: list[tuple[int, bytes]] = []
    first = client.send_raw(ecr(end_to_end=1), lambda h, a: got.append((h, a)))
    second = client.send_raw(ecr(end_to_end=2), lambda h, a: got.append((h, a)))
    with pytest.raises(WindowFull):
        client.send_raw(ecr(end_to_end=3), lambda h, a: got.append((h, a)))
    await wait_for(lambda: len(got) == 2)
    assert sorted(h for h, _ in got) == sorted([first, second])
    assert all(int.from_bytes(a[12:16], "big") == h for h, a in got)
    await client.close()


async def test_duplicate_over_the_wire_not_processed_twice() -> None:
    calls = 0
    node = eir_node({})

    def handle(request: Message, peer: PeerInfo) -> Message:
        nonlocal calls
        calls += 1
        return answer_to(request, node.identity, 2001, body=[Avp.new("Auth-Session-State", 1)])

    node.applications[S13] = replace(node.applications[S13], handlers={ECR: handle})
    server, port = await start_server(node)
    try:
        raw = await RawPeer.open(port)
        await raw.handshake()
        raw.send(ecr(hop_by_hop=1, end_to_end=42) + ecr(hop_by_hop=2, end_to_end=42))
        first, second = await raw.read(), await raw.read()
        assert first is not None and second is not None
        assert (first.hop_by_hop, second.hop_by_hop) == (1, 2)
        assert calls == 1
    finally:
        await server.stop(timeout=0.3)


async def test_backpressure_pauses_reading_while_writes_do_not_drain() -> None:
    settings = replace(LOCAL, write_high_water=4096, write_low_water=1024)
    server, port = await start_server(eir_node(), settings)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        raw = await RawPeer.open(port, sock)
        await raw.handshake()
        (connection,) = server.connections
        assert connection.transport is not None
        server_sock = connection.transport.get_extra_info("socket")
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        batch = b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(500))
        paused = False
        for _ in range(20):
            raw.send(batch)
            await asyncio.sleep(0.02)
            if not connection.transport.is_reading():
                paused = True
                break
        assert paused
        # Reading everything resumes the server: all answers come.
        total = 0
        while total < 500:
            message = await raw.read()
            assert message is not None
            total += 1
        raw.close()
    finally:
        await server.stop(timeout=1.0)


# ---------------------------------------------------------------------------------------------
# Watchdog and disconnect over sockets (short timers: the 6 s minimum lowered for tests only)


@pytest.fixture
def short_tw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watchdog, "TW_MINIMUM", 0.01)


@pytest.mark.usefixtures("short_tw")
async def test_dwr_dwa_with_short_timers(eir: tuple[Server, int]) -> None:
    _, port = eir
    node = mme_node(watchdog_interval=0.05, watchdog_jitter=0.0)
    client = await Client.connect(node, "127.0.0.1", port)
    recorder = node.observer
    assert isinstance(recorder, Recorder)
    await wait_for(lambda: recorder.messages.count(("in", "DWA", None)) >= 2)
    assert ("out", "DWR", None) in recorder.messages
    assert client.is_open
    await client.close()


@pytest.mark.usefixtures("short_tw")
async def test_server_closes_a_peer_that_never_answers_dwr() -> None:
    server, port = await start_server(eir_node(watchdog_interval=0.05, watchdog_jitter=0.0))
    try:
        raw = await RawPeer.open(port)
        await raw.handshake()
        dwr = await raw.read()
        assert dwr is not None and dwr.command_code == 280 and dwr.is_request
        # Not answered: no second DWR, the connection closes after two more expiries.
        assert await raw.read() is None
        await wait_for(lambda: not server.connections)
    finally:
        await server.stop(timeout=1.0)


@pytest.mark.usefixtures("short_tw")
async def test_a_peer_that_never_reads_is_let_go_once_closed() -> None:
    # The watchdog closes a peer that reads nothing (our DWRs unanswered). close() waits for
    # the answers still buffered to be read: the connection, and its place under
    # max_connections, was held for ever. Now aborted dpa_timeout after the close.
    node = eir_node(watchdog_interval=0.05, watchdog_jitter=0.0, dpa_timeout=0.2)
    server, port = await start_server(node)
    try:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, cer(MME_HOST))
        assert (await loop.sock_recv(sock, 20))[5:8] == (257).to_bytes(3, "big")  # the CEA
        (connection,) = server.connections
        assert connection.transport is not None
        server_sock = connection.transport.get_extra_info("socket")
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # Read no more: the answers to these stay in the server's buffer.
        await loop.sock_sendall(sock, b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(500)))
        await wait_for(lambda: connection.peer is not None and connection.peer.closed)
        await wait_for(lambda: not server.connections)
        sock.close()
    finally:
        await server.stop(timeout=1.0)


@pytest.mark.usefixtures("short_tw")
async def test_server_answers_dwr(eir: tuple[Server, int]) -> None:
    _, port = eir
    raw = await RawPeer.open(port)
    await raw.handshake()
    raw.send(base_request(280, 77))
    dwa = await raw.read()
    assert dwa is not None and dwa.get("Result-Code") == 2001 and dwa.hop_by_hop == 77


async def test_client_close_sends_dpr_server_answers_dpa(eir: tuple[Server, int]) -> None:
    server, port = eir
    client = await Client.connect(mme_node(), "127.0.0.1", port)
    await wait_for(lambda: len(server.open_peers) == 1)
    await client.close(DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU)
    assert client.down_reason == "stopped: DPA received"
    await wait_for(lambda: not server.connections)


async def test_server_stop_sends_dpr_to_every_peer() -> None:
    server, port = await start_server(eir_node())
    clients = []
    for n in range(3):
        node = mme_node()
        node.identity = replace(node.identity, origin_host=f"mme{n}.example.net")
        clients.append(await Client.connect(node, "127.0.0.1", port))
    await server.stop(DisconnectCause.BUSY, timeout=2.0)
    for client in clients:
        await asyncio.wait_for(client.wait_closed(), 2.0)
        assert client.down_reason is not None and "DPR received (Disconnect-Cause 1)" in client.down_reason
    assert not server.connections
    with pytest.raises(OSError):
        await Client.connect(mme_node(), "127.0.0.1", port)


async def test_server_stop_waits_for_requests_in_flight() -> None:
    gate = asyncio.Event()
    server, port = await start_server(gated_node(gate))
    client = await Client.connect(mme_node(), "127.0.0.1", port)
    pending = asyncio.ensure_future(client.request(ecr_message(end_to_end=0, imei="01234567890123")))
    await wait_for(lambda: server.in_flight == 1)
    stopping = asyncio.ensure_future(server.stop(timeout=2.0))
    await asyncio.sleep(0.05)
    gate.set()
    assert (await pending).get("Result-Code") == 2001
    await stopping
    await asyncio.wait_for(client.wait_closed(), 2.0)


async def test_duplicate_via_another_connection_answered_when_first_completes() -> None:
    gate = asyncio.Event()
    server, port = await start_server(gated_node(gate))
    try:
        first = await RawPeer.open(port)
        await first.handshake()
        relay = await RawPeer.open(port)
        await relay.handshake("dra.example.net")  # relays the MME's retransmission
        first.send(ecr(hop_by_hop=1, end_to_end=7, imei="01234567890123"))
        await wait_for(lambda: server.in_flight == 1)
        relay.send(ecr(hop_by_hop=2, end_to_end=7, imei="01234567890123"))
        await asyncio.sleep(0.05)
        assert server.in_flight == 1  # the copy is not processed
        gate.set()
        a, b = await first.read(), await relay.read()
        assert a is not None and b is not None
        assert (a.hop_by_hop, b.hop_by_hop) == (1, 2)
        assert a.get("Result-Code") == b.get("Result-Code") == 2001
    finally:
        await server.stop(timeout=0.3)


async def test_handler_returning_nothing_answers_5012() -> None:
    server, port = await start_server(eir_node({ECR: lambda request, peer: None}))
    try:
        client = await Client.connect(mme_node(), "127.0.0.1", port)
        assert (await client.request(ecr_message(end_to_end=0))).get("Result-Code") == 5012
        await client.close()
    finally:
        await server.stop(timeout=1.0)


async def test_client_submit_then_flush_and_connection_factory(eir: tuple[Server, int]) -> None:
    _, port = eir
    written: list[int] = []

    class Counting(PeerConnection):
        def _flush(self) -> None:
            if self.peer is not None and self.peer._out:
                written.append(len(self.peer._out))
            super()._flush()

    client = await Client.connect(mme_node(), "127.0.0.1", port, connection_factory=Counting)
    assert isinstance(client.connection, Counting)
    got: list[int] = []
    written.clear()
    for i in range(5):
        client.submit(ecr(end_to_end=i + 1), lambda h, a: got.append(h))
    assert written == [] and client.outstanding == 5
    client.flush()
    assert written == [5]  # one write for the burst
    await wait_for(lambda: len(got) == 5)
    await client.close()


# ---------------------------------------------------------------------------------------------
# Fair reading


async def test_a_pipelining_peer_does_not_hold_the_loop_for_a_whole_read() -> None:
    # Peer A pipelines 3000 requests (several hundred kB: reads of up to 256 kB each); when A's
    # first request is handled, peer B's single request is put on the wire. With a budget of
    # messages per callback, B is served after a few budgets of A's, not after A's whole read.
    order: list[str] = []
    b_request: list[bytes] = []
    node = eir_node()
    ok = node.applications[S13].handlers[ECR]

    def handle(request: Message, peer: PeerInfo) -> Message | Awaitable[Message]:
        order.append(peer.origin_host)
        if len(order) == 1 and b_request:
            b.send(b_request.pop())  # B's request reaches the server while A's read is served
        return ok(request, peer)

    node.applications[S13] = replace(node.applications[S13], handlers={ECR: handle})
    settings = replace(LOCAL, read_budget=32)
    server, port = await start_server(node, settings)
    try:
        a, b = await RawPeer.open(port), await RawPeer.open(port)
        await a.handshake("a.mme.test")
        await b.handshake("b.mme.test")
        b_request.append(ecr(origin_host="b.mme.test", hop_by_hop=1, end_to_end=1))
        a.send(b"".join(ecr(origin_host="a.mme.test", hop_by_hop=i, end_to_end=i) for i in range(3000)))
        await a.writer.drain()
        answer = await b.read(timeout=30)
        assert answer is not None and answer.get("Result-Code") == 2001
        got = 0
        while got < 3000:  # every one of A's requests is answered as well
            message = await a.read(timeout=30)
            assert message is not None
            got += 1
        position = order.index("b.mme.test")
        assert position < 8 * 32, f"B served after {position} of A's requests"
        a.close()
        b.close()
    finally:
        await server.stop(timeout=1.0)


# ---------------------------------------------------------------------------------------------
# Admission: a bound on connections


async def test_connections_past_max_connections_are_closed_at_accept() -> None:
    # A flood of connects that never send CER held a socket (and its objects) each until the
    # CER timeout, without bound: past max_connections one is closed at once, nothing read.
    node = eir_node()
    server, port = await start_server(node, replace(LOCAL, max_connections=2))
    silent = [await RawPeer.open(port) for _ in range(2)]
    try:
        await wait_for(lambda: len(server.connections) == 2)
        extra = await RawPeer.open(port)
        extra.send(cer("mme-extra.example.net"))
        assert await extra.read() is None  # closed without a CEA
        assert node.connections_refused == 1 and len(server.connections) == 2
        [refused] = [m for m in OverloadCollector(node).collect()
                     if m.name == "diameter_connections_refused"]
        assert [s.value for s in refused.samples] == [1]
        silent[0].close()
        await wait_for(lambda: len(server.connections) == 1)
        late = await RawPeer.open(port)
        await late.handshake()  # a place again: served as before
        late.close()
    finally:
        for peer in silent:
            peer.close()
        await server.stop(timeout=0.5)


async def test_no_connection_limit_when_max_connections_is_0() -> None:
    node = eir_node()
    server, port = await start_server(node, replace(LOCAL, max_connections=0))
    peers = [await RawPeer.open(port) for _ in range(5)]
    try:
        for n, peer in enumerate(peers):
            await peer.handshake(f"mme{n}.example.net")
        assert node.connections_refused == 0
    finally:
        for peer in peers:
            peer.close()
        await server.stop(timeout=0.5)
