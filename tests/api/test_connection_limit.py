"""api.max_connections over loopback: past the limit a connection gets 503 (problem+json,
Retry-After, Connection: close) and is closed, nothing read; over TLS it is closed before its
handshake, and a handshake under way holds a place. A place freed serves the next client."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest

from gateway.api.app import ApiServer
from tests.api.conftest import OPS, api_env
from tests.certs import TestCa
from tests.e2e.conftest import StartGateway, start_gateway  # noqa: F401 - the fixture
from tests.tls_hello import answer_to_client_hello


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b""
    async with asyncio.timeout(10):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def _wait_open(api: ApiServer, count: int) -> None:
    assert api.site is not None
    async with asyncio.timeout(10):
        while api.site.open() != count:
            await asyncio.sleep(0.01)


async def test_past_the_limit_503_then_closed(
    start_gateway: StartGateway,  # noqa: F811
) -> None:
    gateway = await start_gateway(**api_env(EIR_API_MAX_CONNECTIONS="2"))
    api = gateway.api
    assert api is not None and api.site is not None
    port = api.port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await _wait_open(api, 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: eir\r\n\r\n")
    refused = await _read_until_closed(reader)
    writer.close()
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nConnection: close" in head and b"\r\nRetry-After: 1" in head
    assert b"\r\nContent-Type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 503 and "api.max_connections" in problem["detail"]
    assert api.site.refused == 1
    # aiohttp itself reads the 503 as an answer, not as a broken connection.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/openapi.json") as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
    assert api.site.refused == 2
    scraped = generate_latest(gateway.metrics.registry).decode()
    assert "eir_api_connections_refused_total 2.0" in scraped
    assert "eir_api_connections 2.0" in scraped
    # A place freed: the next client is served.
    for _, w in held[:1]:
        w.close()
    await _wait_open(api, 1)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/v1/jobs",
                               headers={"Authorization": f"Bearer {OPS}"}) as r:
            assert r.status == 200
    for _, w in held[1:]:
        w.close()


async def test_no_limit_when_max_connections_is_0(
    start_gateway: StartGateway,  # noqa: F811
) -> None:
    gateway = await start_gateway(**api_env(EIR_API_MAX_CONNECTIONS="0"))
    api = gateway.api
    assert api is not None and api.site is not None
    held = [await asyncio.open_connection("127.0.0.1", api.port) for _ in range(80)]
    await _wait_open(api, 80)  # past the default 64
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{api.port}/openapi.json") as r:
            assert r.status == 200
    assert api.site.refused == 0
    for _, w in held:
        w.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca = TestCa(tmp_path_factory.mktemp("api-limit"), "api-limit")
    issued = ca.issue("eir.example.net")
    return issued.cert, issued.key, ca.cert


async def test_over_tls_past_the_limit_no_handshake(
    start_gateway: StartGateway, tls_files: tuple[Path, Path, Path],  # noqa: F811
) -> None:
    cert, key, ca = tls_files
    gateway = await start_gateway(**api_env(
        EIR_API_MAX_CONNECTIONS="1", EIR_API_TLS_CERT=str(cert), EIR_API_TLS_KEY=str(key)))
    api = gateway.api
    assert api is not None and api.site is not None
    context = ssl.create_default_context(cafile=str(ca))
    base = f"https://127.0.0.1:{api.port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(f"{base}/openapi.json") as r:
            assert r.status == 200
        await _wait_open(api, 1)  # kept alive by the session
        # One more: closed at accept, its ClientHello never answered.
        assert await answer_to_client_hello("127.0.0.1", api.port, ()) == b""
        assert api.site.refused == 1
    await _wait_open(api, 0)
    # A handshake under way holds the place: a client that connects and stalls counts.
    _, stalled = await asyncio.open_connection("127.0.0.1", api.port)
    await _wait_open(api, 1)
    assert await answer_to_client_hello("127.0.0.1", api.port, ()) == b""
    assert api.site.refused == 2
    stalled.close()
    await _wait_open(api, 0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(f"{base}/openapi.json") as r:
            assert r.status == 200
