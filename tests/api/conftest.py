"""A gateway with its provisioning API on loopback (port 0), and an HTTP client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.service import Gateway
from tests.e2e.conftest import StartGateway, start_gateway  # noqa: F401 - the fixture

ADMIN = "admin-secret-0123456789"  # read+write+pii
OPS = "ops-secret-0123456789ab"  # read+write
VIEWER = "viewer-secret-012345678"  # read
TOKENS = f"admin:read+write+pii:{ADMIN},ops:read+write:{OPS},viewer:read:{VIEWER}"


def api_env(**overrides: str) -> dict[str, str]:
    return {"EIR_API_LISTEN": "127.0.0.1:0", "EIR_API_TOKENS": TOKENS, **overrides}


@dataclass
class Api:
    gateway: Gateway
    session: aiohttp.ClientSession
    base: str

    async def call(
        self, method: str, path: str, token: str | None = OPS, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers,
                                        **kwargs) as r:
            text = await r.text()
            ctype = r.headers.get("Content-Type", "")
            body: Any = text
            if "json" in ctype and "jsonl" not in ctype and text:
                import json

                body = json.loads(text)
            return r.status, body, r.headers


@pytest.fixture
async def api(start_gateway: StartGateway) -> AsyncIterator[Api]:  # noqa: F811
    gateway = await start_gateway(**api_env())
    assert gateway.api is not None and gateway.api.port
    async with aiohttp.ClientSession() as session:
        yield Api(gateway, session, f"http://127.0.0.1:{gateway.api.port}")
