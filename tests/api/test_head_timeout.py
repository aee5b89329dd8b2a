"""api.header_timeout_seconds over loopback: a client that sends its request head a byte at a
time (slowloris) is closed once the timeout has passed, unanswered; one that sent a whole head
is served however slowly its body comes; an idle keep-alive connection goes the same way."""

from __future__ import annotations

import asyncio

from gateway.api.app import ApiServer
from tests.api.conftest import OPS, api_env
from tests.e2e.conftest import StartGateway, start_gateway  # noqa: F401 - the fixture

TIMEOUT = "1"  # seconds; the sweep's resolution is 1 s more
# Every bound below is at least ten times the timeout: a loaded machine only makes it wait.
SLOW_BYTES = 60
SLOW_PAUSE = 0.25


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def _connect(
    start_gateway: StartGateway, timeout: str,  # noqa: F811
) -> tuple[ApiServer, asyncio.StreamReader, asyncio.StreamWriter]:
    """A gateway with api.header_timeout_seconds = ``timeout``, and a connection to its API."""
    gateway = await start_gateway(**api_env(EIR_API_HEADER_TIMEOUT_SECONDS=timeout))
    assert gateway.api is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.api.port)
    return gateway.api, reader, writer


async def test_a_head_sent_a_byte_at_a_time_is_closed_unanswered(
    start_gateway: StartGateway,  # noqa: F811
) -> None:
    api, reader, writer = await _connect(start_gateway, TIMEOUT)
    closed = asyncio.create_task(_read_until_closed(reader))
    head = b"GET /openapi.json HTTP/1.1\r\nHost: eir\r\nX-Slow: " + b"a" * SLOW_BYTES
    sent = 0
    try:
        for byte in head:  # 15 s in all: never whole, the timeout long past
            if closed.done():
                break
            writer.write(bytes([byte]))
            sent += 1
            await asyncio.sleep(SLOW_PAUSE)
        async with asyncio.timeout(10):
            received = await closed
    finally:
        writer.close()
    assert received == b"" and sent < len(head)
    assert api.head_timeout.closed == 1


async def test_a_whole_head_is_served_while_its_body_trickles_in(
    start_gateway: StartGateway,  # noqa: F811
) -> None:
    api, reader, writer = await _connect(start_gateway, TIMEOUT)
    body = b"list,kind,value,imsi,reason\nblack,imei,35209900176148,,stolen\n"
    writer.write(b"POST /v1/lists/imports HTTP/1.1\r\nHost: eir\r\n"
                 b"Authorization: Bearer " + OPS.encode() + b"\r\n"
                 b"Content-Type: text/csv\r\nContent-Length: %d\r\n\r\n" % len(body))
    try:
        for n in range(0, len(body), 8):  # 2 s of body after its head: past the timeout
            writer.write(body[n:n + 8])
            await asyncio.sleep(0.25)
        async with asyncio.timeout(10):
            status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 202"), status
        # Answered, the connection is kept alive: then idle past the timeout, closed.
        async with asyncio.timeout(10):
            rest = await _read_until_closed(reader)
        assert b"/v1/jobs/" in rest
    finally:
        writer.close()
    assert api.head_timeout.closed == 1


async def test_no_timeout_when_0(start_gateway: StartGateway) -> None:  # noqa: F811
    api, reader, writer = await _connect(start_gateway, "0")
    assert api.head_timeout.timeout == 0 and api._sweeper is None
    try:
        writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: eir\r\n")
        await asyncio.sleep(2.5)  # past what a 1 s timeout and its sweep would allow
        writer.write(b"\r\n")
        async with asyncio.timeout(10):
            status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
    finally:
        writer.close()


async def test_a_body_that_stops_coming_gets_408_and_the_connection_closes(
    start_gateway: StartGateway,  # noqa: F811
) -> None:
    """api.body_timeout_seconds: an upload, or an entry's JSON, whose body stops coming is
    answered 408 and its connection closed (it held both, and the upload's file, for ever)."""
    gateway = await start_gateway(**api_env(EIR_API_BODY_TIMEOUT_SECONDS=TIMEOUT,
                                            EIR_API_HEADER_TIMEOUT_SECONDS="0"))
    assert gateway.api is not None
    imports = gateway.config.api.imports_dir
    for path, ctype in (("/v1/lists/imports", b"text/csv"), ("/v1/lists/entries",
                                                              b"application/json")):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.api.port)
        try:
            writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: eir\r\n"
                         b"Authorization: Bearer " + OPS.encode() + b"\r\n"
                         b"Content-Type: " + ctype + b"\r\nContent-Length: 1000\r\n\r\n"
                         b"list,kind")  # and no more
            async with asyncio.timeout(30):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"connection: close" in head.lower(), head
        assert b"no part of the request body within 1 s" in body
    assert not imports.exists() or not list(imports.glob("*.upload"))  # the upload removed
