"""The API over TLS, and standalone (`eir-gateway api`, a real process beside the lists
database the gateway uses)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.api.conftest import OPS, TOKENS, Api, api_env
from tests.e2e.conftest import StartGateway, gateway_env, start_gateway  # noqa: F401
from tests.monitoring.test_prometheus import free_port, until
from tests.n5g_eir.test_server import pki  # noqa: F401 - the module's certificates fixture


async def test_api_over_tls(
    start_gateway: StartGateway,  # noqa: F811
    pki: dict[str, tuple[str, str]],  # noqa: F811
) -> None:
    cert, key = pki["eir"]
    gateway = await start_gateway(**api_env(EIR_API_TLS_CERT=cert, EIR_API_TLS_KEY=key))
    assert gateway.api is not None
    context = ssl.create_default_context(cafile=cert)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        api = Api(gateway, session, f"https://127.0.0.1:{gateway.api.port}")
        status, body, _ = await api.call("GET", "/v1/lists/entries?limit=1")
        assert status == 200 and body["entries"]
    async with aiohttp.ClientSession() as session:  # plain HTTP to the TLS port: refused
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{gateway.api.port}/openapi.json") as r:
                await r.read()


def _cli_env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EIR_")}
    env.update(gateway_env(state))
    env.update(extra)
    return env


async def _serving(session: aiohttp.ClientSession, base: str) -> None:
    """Until ``eir-gateway api`` answers at ``base`` (60 s)."""

    async def serving() -> bool:
        try:
            async with session.get(base + "/openapi.json") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await until(serving, "eir-gateway api to serve", 60)


async def test_standalone_api_serves_and_stops(tmp_path: Path) -> None:
    port = free_port()
    env = _cli_env(tmp_path / "var", EIR_API_LISTEN=f"127.0.0.1:{port}", EIR_API_TOKENS=TOKENS)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "api", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {OPS}"}
        ) as session:
            base = f"http://127.0.0.1:{port}"
            await _serving(session, base)
            new = {"list": "black", "kind": "imei", "value": "35209900000018", "reason": "x"}
            async with session.post(base + "/v1/lists/entries", json=new) as r:
                assert r.status == 201
            async with session.get(base + "/v1/checks/35209900000018") as r:
                assert (await r.json())["decided_by"] == "blacklisted"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The change is in the lists database a gateway uses, with its audit record.
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "lists", "audit"], env=_cli_env(tmp_path / "var"),
        capture_output=True, text=True, timeout=60,
    )
    assert " api:ops create black/imei:35209900000018 " in done.stdout, done.stdout


def test_standalone_api_without_tokens_refuses(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "api"], env=_cli_env(tmp_path / "var"),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "no token is configured" in done.stderr


async def _sessions(dsn: str) -> int:
    """Connections PostgreSQL accepted to the database of ``dsn`` so far (PostgreSQL 14+)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


async def test_standalone_api_on_postgresql_notify_and_one_pool(
    tmp_path: Path, postgres_dsn: str
) -> None:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (the 'postgresql' extra)")
    from gateway.lists import make_entry
    from gateway.pg.database import Database
    from gateway.pg.lists import PgListStore
    from gateway.pg.observations import PgObservationLog

    imei = "35209900000026"
    log = PgObservationLog(postgres_dsn)
    log.start()
    log.record(imei, "001010000000001")
    log.flush()
    log.close()
    port = free_port()
    env = _cli_env(tmp_path / "var", EIR_API_LISTEN=f"127.0.0.1:{port}", EIR_API_TOKENS=TOKENS,
                   EIR_STATE_BACKEND="postgresql", EIR_STATE_DSN=postgres_dsn,
                   EIR_CLONE_DETECTION_ENABLED="true",
                   # Only the NOTIFY hint (and the store's 1 s poll) can bring a change in time.
                   EIR_LISTS_POLL_INTERVAL_SECONDS="60")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "api", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    store = await asyncio.to_thread(PgListStore, Database(postgres_dsn))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {OPS}"}) as session:
            base = f"http://127.0.0.1:{port}"
            await _serving(session, base)
            # Observation reads share the API's pool: 30 of them, nowhere near 30 connections.
            before = await _sessions(postgres_dsn)
            for n in range(30):
                path = f"/v1/imeis/{imei}/" + ("observations" if n % 2 else "clone-detection")
                async with session.get(base + path) as r:
                    assert r.status == 200
                    body = await r.json()
                assert len(body.get("observations", body.get("imsis"))) == 1, body
            assert await _sessions(postgres_dsn) - before < 5
            # A change written elsewhere (a gateway, the CLI) shows within seconds, not a poll.
            await asyncio.to_thread(store.put, make_entry("black", "imei", imei), "cli:test")

            async def blacklisted() -> bool:
                async with session.get(base + f"/v1/checks/{imei}") as r:
                    return bool((await r.json())["decided_by"] == "blacklisted")

            await until(blacklisted, "the change to reach eir-gateway api", 10)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        store.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
