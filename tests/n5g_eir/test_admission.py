"""N5g-eir connection admission over loopback: ``n5g_eir.allowed_networks`` (a connection from
elsewhere is closed at once, nothing read or sent) and ``n5g_eir.max_connections`` (one more is
told GOAWAY ENHANCE_YOUR_CALM naming no stream, RFC 9113 §6.8, then closed), counted in
``http_connections_refused_total``; what is admitted is served as before."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from diameter.networks import address_refused, parse_networks
from gateway.n5g_eir.frames import ACK, PREFACE, ErrorCode, FrameType, frame, settings_frame
from gateway.n5g_eir.problem import Response
from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH
from gateway.n5g_eir.server import N5gEirServer
from gateway.n5g_eir.settings import HttpEndpoint, N5gEirSettings
from tests.certs import TestCa
from tests.tls_hello import answer_to_client_hello, client_hello

QUERY = f"{EQUIPMENT_STATUS_PATH}?pei=imei-352099001234560"
WHITELISTED = Response(200, b"application/json", b'{"status":"WHITELISTED"}')
StartServer = Callable[..., Coroutine[Any, Any, N5gEirServer]]
NGHTTP = shutil.which("nghttp")


class _Handler:
    def handle(self, method: bytes, path: bytes, connection_in_flight: int = 0,
               authorization: bytes | None = None) -> Response:
        return WHITELISTED


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    started: list[N5gEirServer] = []

    async def start(host: str = "127.0.0.1", **settings: Any) -> N5gEirServer:
        server = N5gEirServer(_Handler(),  # type: ignore[arg-type]
                              N5gEirSettings(listen=(HttpEndpoint("http", host, 0),),
                                             **settings))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(limit=1.0)


def _client(server: N5gEirServer) -> httpx.AsyncClient:
    _, host, port = server.sockets[0]
    host = f"[{host}]" if ":" in host else host
    return httpx.AsyncClient(http1=False, http2=True, base_url=f"http://{host}:{port}",
                             timeout=10)


async def _raw_session(server: N5gEirServer) -> bytes:
    """Everything the server sends an h2c client that sends its preface and SETTINGS, up to
    the server's close (bounded: 10 s)."""
    _, host, port = server.sockets[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(PREFACE + settings_frame({}) + frame(FrameType.SETTINGS, ACK, 0))
        received = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    finally:
        writer.close()


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        out.append((data[pos + 3], int.from_bytes(data[pos + 5:pos + 9], "big"),
                    data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    assert pos == len(data), "a frame cut short"
    return out


async def test_a_connection_past_the_limit_is_told_goaway_and_closed(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections=2)
    first, second = _client(server), _client(server)
    try:
        for client in (first, second):
            assert (await client.get(QUERY)).status_code == 200
        assert len(server.connections) == 2
        sent = _frames(await _raw_session(server))
        # The server preface, then GOAWAY: no stream processed, ENHANCE_YOUR_CALM, the reason.
        assert [kind for kind, _, _ in sent] == [FrameType.SETTINGS, FrameType.GOAWAY]
        last_stream, code = struct.unpack(">II", sent[1][2][:8])
        assert (last_stream, code) == (0, ErrorCode.ENHANCE_YOUR_CALM)
        assert b"connection limit of 2" in sent[1][2][8:]
        assert server.http.refused == {"limit": 1} and len(server.connections) == 2
        # The two admitted are served as before; one gone, a new one is admitted.
        assert (await second.get(QUERY)).status_code == 200
        await first.aclose()
        async with asyncio.timeout(10):
            while len(server.connections) > 1:
                await asyncio.sleep(0.01)
        async with _client(server) as third:
            assert (await third.get(QUERY)).status_code == 200
    finally:
        await first.aclose()
        await second.aclose()
    [refused] = [m for m in server.http.collect() if m.name == "http_connections_refused"]
    assert {(s.labels["reason"], s.value) for s in refused.samples
            if s.name == "http_connections_refused_total"} == {("network", 0), ("limit", 1)}


@pytest.mark.skipif(NGHTTP is None, reason="needs nghttp (Debian nghttp2-client) to see the "
                                           "GOAWAY as nghttp2 reads it")
async def test_nghttp_past_the_limit_reads_goaway_enhance_your_calm(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections=1)
    _, host, port = server.sockets[0]
    async with _client(server) as amf:
        assert (await amf.get(QUERY)).status_code == 200
        assert NGHTTP is not None
        process = await asyncio.create_subprocess_exec(
            NGHTTP, "-v", f"http://{host}:{port}{QUERY}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    text = out.decode() + err.decode()
    assert "processed=0" in text, text  # nghttp exits 0 all the same
    assert "recv GOAWAY" in text and "last_stream_id=0" in text, text
    assert "ENHANCE_YOUR_CALM" in text and "connection limit of 1 reached" in text, text
    assert server.http.refused == {"limit": 1}


async def test_no_limit_when_max_connections_is_0(start_server: StartServer) -> None:
    server = await start_server(max_connections=0)
    clients = [_client(server) for _ in range(5)]
    try:
        for client in clients:
            assert (await client.get(QUERY)).status_code == 200
        assert len(server.connections) == 5 and server.http.refused == {}
    finally:
        for client in clients:
            await client.aclose()


async def test_a_source_outside_the_allowed_networks_is_closed_unanswered(
    start_server: StartServer,
) -> None:
    server = await start_server(allowed_networks=("10.0.0.0/8", "192.0.2.0/24"))
    try:
        received = await _raw_session(server)
    except ConnectionResetError:
        received = b""  # aborted: reset
    assert received == b""  # not even the server preface
    assert server.http.refused == {"network": 1} and not server.connections
    allowed = await start_server(allowed_networks=("10.0.0.0/8", "127.0.0.0/8"))
    async with _client(allowed) as amf:
        assert (await amf.get(QUERY)).status_code == 200
    assert allowed.http.refused == {}


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
async def test_allowed_networks_over_ipv6(start_server: StartServer) -> None:
    refused = await start_server("::1", allowed_networks=("127.0.0.0/8",))
    with pytest.raises(httpx.HTTPError):
        async with _client(refused) as amf:
            await amf.get(QUERY)
    assert refused.http.refused == {"network": 1}
    served = await start_server("::1", allowed_networks=("::1/128",))
    async with _client(served) as amf:
        assert (await amf.get(QUERY)).status_code == 200


@pytest.mark.parametrize(("address", "refused"), [
    ("10.1.2.3", False), ("11.0.0.1", True),
    ("::ffff:10.1.2.3", False),  # a dual-stack listener's IPv4 client: its IPv4 address
    ("2001:db8::1", False), ("2001:db9::1", True), ("fe80::1%eth0", True),
    ("amf.example", True), (None, True),
])
def test_address_refused(address: str | None, refused: bool) -> None:
    networks = parse_networks(["10.0.0.0/8", "2001:db8::/32"])
    assert (address_refused(address, networks) is not None) is refused


# --- over TLS: refused at accept, before the handshake ---------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    ca = TestCa(tmp_path_factory.mktemp("n5g-admission"), "n5g-admission")
    issued = ca.issue("eir.example.net")
    return str(issued.cert), str(issued.key), str(ca.cert)


async def _start_tls_server(tls_files: tuple[str, str, str], **settings: Any) -> N5gEirServer:
    cert, key, _ = tls_files
    server = N5gEirServer(_Handler(),  # type: ignore[arg-type]
                          N5gEirSettings(listen=(HttpEndpoint("https", "127.0.0.1", 0),),
                                         tls_cert=cert, tls_key=key, **settings))
    await server.start()
    return server


async def _answer_to_client_hello(server: N5gEirServer) -> bytes:
    _, host, port = server.sockets[0]
    return await answer_to_client_hello(host, port)


async def _tls_client(server: N5gEirServer, ca: str) -> httpx.AsyncClient:
    _, host, port = server.sockets[0]
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    return httpx.AsyncClient(http1=False, http2=True, verify=context,
                             base_url=f"https://{host}:{port}", timeout=10)


async def test_over_tls_a_source_outside_the_allowed_networks_gets_no_handshake(
    tls_files: tuple[str, str, str],
) -> None:
    # A refused address must not cost a handshake (a flood of them would cost its CPU): closed
    # at accept, its ClientHello never answered (no ServerHello).
    server = await _start_tls_server(tls_files, allowed_networks=("10.0.0.0/8",))
    try:
        assert await _answer_to_client_hello(server) == b""
        assert server.http.refused == {"network": 1} and not server.connections
    finally:
        await server.stop(limit=1.0)
    allowed = await _start_tls_server(tls_files, allowed_networks=("127.0.0.0/8",))
    try:
        async with await _tls_client(allowed, tls_files[2]) as amf:
            response = await amf.get(QUERY)
            assert response.status_code == 200 and response.http_version == "HTTP/2"
        assert allowed.http.refused == {}
    finally:
        await allowed.stop(limit=1.0)


async def test_over_tls_a_connection_past_the_limit_gets_no_handshake(
    tls_files: tuple[str, str, str],
) -> None:
    server = await _start_tls_server(tls_files, max_connections=1)
    try:
        async with await _tls_client(server, tls_files[2]) as amf:
            assert (await amf.get(QUERY)).status_code == 200
            # One more: closed at accept (a GOAWAY would need the handshake it saves).
            assert await _answer_to_client_hello(server) == b""
            assert server.http.refused == {"limit": 1} and len(server.connections) == 1
            assert (await amf.get(QUERY)).status_code == 200
        async with asyncio.timeout(10):
            while server.connections:
                await asyncio.sleep(0.01)
        # A handshake under way holds its place: a client that connects and stalls counts.
        _, host, port = server.sockets[0]
        _, stalled = await asyncio.open_connection(host, port)
        try:
            await asyncio.sleep(0.1)
            assert await _answer_to_client_hello(server) == b""
            assert server.http.refused == {"limit": 2}
        finally:
            stalled.close()
        async with asyncio.timeout(10):
            while server.handshakes:
                await asyncio.sleep(0.01)
        async with await _tls_client(server, tls_files[2]) as amf:
            assert (await amf.get(QUERY)).status_code == 200
    finally:
        await server.stop(limit=1.0)


def _hello_answers(port: int, count: int) -> list[int]:
    """The size of the server's first answer to each of ``count`` ClientHellos, each sent the
    moment its connection is up (0: nothing within 5 s)."""
    hello = client_hello()
    sizes = []
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(hello)
            try:
                sizes.append(len(sock.recv(65536)))
            except TimeoutError:
                sizes.append(0)
    return sizes


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_client_hello_sent_at_once_gets_its_server_hello(
    tls_files: tuple[str, str, str], loop_name: str,
) -> None:
    # On uvloop a handshake started on an accepted transport lost a ClientHello read before it
    # started (uvloop starts reading after connection_made, paused or not): the handshake then
    # waited out its timeout. The gateway runs on uvloop (make run).
    async def main() -> list[int]:
        server = await _start_tls_server(tls_files)
        try:
            return await asyncio.to_thread(_hello_answers, server.sockets[0][2], 3)
        finally:
            await server.stop(limit=1.0)

    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        sizes = uvloop.run(main())
    else:
        sizes = asyncio.run(main())
    assert all(sizes), sizes
