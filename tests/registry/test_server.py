"""Reference server over loopback: status codes, problem details, auth, caching headers, feed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from registry_client.local import LocalRegistry
from registry_client.model import Report, ReportType
from registry_client.server import RegistryServer
from registry_client.wire import parse_tac_declaration
from tests.registry.conftest import NON_PARTICIPATING, OUTSIDE, STOLEN, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def assert_problem(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """RFC 9457 §3.1 members, media type application/problem+json."""
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    assert isinstance(body["detail"], str)
    return body


async def test_get_imei_verdict_and_max_age(server: RegistryServer, http: Any) -> None:
    async with http.get(f"{server.url}/v1/imeis/{STOLEN}07") as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "max-age=60"
        body = await resp.json()
    assert body["imei"] == STOLEN and body["tac"] == STOLEN[:8]
    assert body["status"] == "manufactured" and body["source"] == "declared_range"
    assert body["reports"] == [
        {
            "imei": STOLEN,
            "type": "stolen",
            "country": "FR",
            "since": "2026-02-10",
            "withdrawn": False,
        }
    ]
    async with http.get(f"{server.url}/v1/imeis/{NON_PARTICIPATING}") as resp:
        assert resp.headers["Cache-Control"] == "max-age=5"  # negative max-age for unknown
        assert (await resp.json())["status"] == "unknown"


@pytest.mark.parametrize("imei", ["1234", "352099001761480", "3520990017614x", "1" * 17])
async def test_bad_imei_is_400(server: RegistryServer, http: Any, imei: str) -> None:
    async with http.get(f"{server.url}/v1/imeis/{imei}") as resp:
        await assert_problem(resp, 400)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
)
@pytest.mark.parametrize(
    "path", [f"/v1/imeis/{STOLEN}", "/v1/tacs/35209900", "/v1/changes", "/v1/imeis:check"]
)
async def test_auth_required(server: RegistryServer, headers: dict[str, str], path: str) -> None:
    async with aiohttp.ClientSession() as session:
        method = "POST" if path.endswith(":check") else "GET"
        async with session.request(
            method, server.url + path, headers=headers, json={"imeis": [STOLEN]}
        ) as resp:
            await assert_problem(resp, 401)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_batch_in_request_order(server: RegistryServer, http: Any) -> None:
    imeis = [OUTSIDE, STOLEN + "0" + "1", NON_PARTICIPATING]
    async with http.post(f"{server.url}/v1/imeis:check", json={"imeis": imeis}) as resp:
        assert resp.status == 200
        results = (await resp.json())["results"]
    assert [r["imei"] for r in results] == [OUTSIDE, STOLEN, NON_PARTICIPATING]
    assert [r["status"] for r in results] == ["not_manufactured", "manufactured", "unknown"]
    assert server.request_counts["/v1/imeis:check"] == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"imeis": []}, 400),
        ({"imeis": "35209900176148"}, 400),
        ({"imeis": [35209900176148]}, 400),
        ({"imeis": [STOLEN, "12"]}, 400),
        ({}, 400),
        ([STOLEN], 400),
        ({"imeis": [STOLEN] * 1001}, 413),
    ],
)
async def test_batch_errors(server: RegistryServer, http: Any, body: Any, status: int) -> None:
    async with http.post(f"{server.url}/v1/imeis:check", json=body) as resp:
        await assert_problem(resp, status)


async def test_batch_body_not_json(server: RegistryServer, http: Any) -> None:
    url = f"{server.url}/v1/imeis:check"
    async with http.post(url, data=b"{", headers={"Content-Type": "application/json"}) as resp:
        await assert_problem(resp, 400)
    deep = b"[" * 100_000  # past the JSON reader's recursion limit: RecursionError, was a 500
    async with http.post(url, data=deep, headers={"Content-Type": "application/json"}) as resp:
        await assert_problem(resp, 400)
    async with http.post(url, data=b'{"imeis": []}', headers={"Content-Type": "text/plain"}) as r:
        await assert_problem(r, 400)


async def test_tac_etag_and_304(server: RegistryServer, http: Any, local: LocalRegistry) -> None:
    url = f"{server.url}/v1/tacs/35332011"
    async with http.get(url) as resp:
        assert resp.status == 200
        etag = resp.headers["ETag"]
        body = await resp.json()
    assert body["participating"] is True
    assert body["ranges"] == [
        {"first": "100000", "last": "199999"},
        {"first": "500000", "last": "599999"},
    ]
    async with http.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304 and resp.headers["ETag"] == etag
    async with http.get(url, headers={"If-None-Match": f'"other", W/{etag}'}) as resp:
        assert resp.status == 304
    async with http.get(url, headers={"If-None-Match": '"stale"'}) as resp:
        assert resp.status == 200
    local.apply([parse_tac_declaration({**body, "participating": False})])
    async with http.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 200 and resp.headers["ETag"] != etag


async def test_tac_errors(server: RegistryServer, http: Any) -> None:
    async with http.get(f"{server.url}/v1/tacs/12345678") as resp:
        await assert_problem(resp, 404)
    async with http.get(f"{server.url}/v1/tacs/1234") as resp:
        await assert_problem(resp, 400)


async def test_changes_feed(server: RegistryServer, http: Any, local: LocalRegistry) -> None:
    seen: list[dict[str, Any]] = []
    cursor = ""
    while True:
        params = {"limit": "4", **({"since": cursor} if cursor else {})}
        async with http.get(f"{server.url}/v1/changes", params=params) as resp:
            assert resp.status == 200
            page = await resp.json()
        seen.extend(page["changes"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert [c["kind"] for c in seen] == ["tac"] * 3 + ["report"] * 3
    local.apply([Report(OUTSIDE, ReportType.LOST, "GH")])
    async with http.get(f"{server.url}/v1/changes", params={"since": cursor}) as resp:
        page = await resp.json()
    assert page["changes"] == [
        {"kind": "report", "imei": OUTSIDE, "type": "lost", "country": "GH", "withdrawn": False}
    ]
    assert page["has_more"] is False


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "limit=x", "since=abc", "since=-1"])
async def test_changes_bad_query(server: RegistryServer, http: Any, query: str) -> None:
    async with http.get(f"{server.url}/v1/changes?{query}") as resp:
        await assert_problem(resp, 400)


async def test_unknown_path_and_method(server: RegistryServer, http: Any) -> None:
    async with http.get(f"{server.url}/v2/nothing") as resp:
        await assert_problem(resp, 404)
    async with http.delete(f"{server.url}/v1/changes") as resp:
        await assert_problem(resp, 405)
        assert "GET" in resp.headers["Allow"]


async def test_open_server_without_tokens(local: LocalRegistry) -> None:
    srv = RegistryServer(local)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{srv.url}/v1/imeis/{STOLEN}") as resp:
                assert resp.status == 200
    finally:
        await srv.stop()


async def test_storage_failure_is_503_problem(local: LocalRegistry) -> None:
    srv = RegistryServer(local)
    await srv.start()
    try:
        local.close_sync()  # the database disappears under the server
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{srv.url}/v1/imeis/{STOLEN}") as resp:
                await assert_problem(resp, 503)
    finally:
        await srv.stop()
