"""Reference registry HTTP server: a ``LocalRegistry`` served over every path of registry-api.yaml.

Errors are ``application/problem+json`` (RFC 9457 §3: type, title, status, detail; ``type`` is
``about:blank`` so ``title`` is the status phrase, §4.2.1). Bearer tokens (RFC 6750) are checked
when any are configured; a missing or wrong token gets 401 with ``WWW-Authenticate: Bearer``.
Verdicts carry ``Cache-Control: max-age`` (shorter for ``unknown``); ``/v1/tacs/{tac}`` carries a
strong ``ETag`` and answers ``If-None-Match`` with 304 (RFC 9110 §13.1.2). ``request_counts``
counts requests per route template, so tests can assert how many round trips a client made.
``faults`` (``registry_client.faults``) makes it misbehave on purpose, for tests and benchmarks.

    server = RegistryServer(LocalRegistry.open(path, seeds), tokens=("secret",))
    await server.start()          # 127.0.0.1, port 0 -> server.url
    ...
    await server.stop()
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from registry_client.faults import FaultInjector
from registry_client.local import LocalRegistry, record_to_json
from registry_client.model import RegistryStatus
from registry_client.wire import (
    InvalidImei,
    is_tac,
    normalise_imei,
    tac_to_json,
    verdict_to_json,
)

MAX_BATCH = 1000  # registry-api.yaml: imeis maxItems
MAX_CHANGES = 10_000  # registry-api.yaml: limit maximum
DEFAULT_CHANGES = 1000
PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """RFC 9457 problem details with ``type: about:blank``."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def _json(body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        content_type="application/json",
        headers=headers,
    )


def _etag(body: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    return f'"{digest}"'


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 §13.1.2)."""
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in header.split(","))


class RegistryServer:
    """The reference registry. ``tokens`` empty means no authentication (a demo registry)."""

    def __init__(
        self,
        registry: LocalRegistry,
        *,
        tokens: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        max_age: int = 3600,
        negative_max_age: int = 300,
        ssl_context: ssl.SSLContext | None = None,
        faults: FaultInjector | None = None,
    ):
        self.registry = registry
        self.faults = faults
        self.tokens = frozenset(tokens)
        self.host = host
        self.port = port
        self.max_age = max_age
        self.negative_max_age = negative_max_age
        self.ssl_context = ssl_context
        self.request_counts: Counter[str] = Counter()
        self.app = self._make_app()
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        # handler_cancellation: a client that gives up ends the work done for it.
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        # port 0: the kernel chose one
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- app -------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        middlewares: list[Middleware] = [self._count, self._errors, self._auth]
        if self.faults is not None:
            middlewares.insert(0, self.faults.middleware)
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/v1/imeis/{imei}", self.get_imei)
        app.router.add_post("/v1/imeis:check", self.check_imeis)
        app.router.add_get("/v1/tacs/{tac}", self.get_tac)
        app.router.add_get("/v1/changes", self.get_changes)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request.match_info.route.resource
        self.request_counts[info.canonical if info is not None else "(unmatched)"] += 1
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Router errors (404, 405) as problem details too."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return problem(exc.status, exc.reason, headers)
        except Exception:  # e.g. the database is locked or gone: tell the client to come back
            log.exception("registry request %s %s failed", request.method, request.path)
            return problem(503, "the registry cannot answer right now")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.tokens:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return problem(
                401, "bearer token required", {"WWW-Authenticate": 'Bearer realm="imei-registry"'}
            )
        offered = token.strip().encode()
        # constant-time comparison, so response timing does not reveal token prefixes
        if not any(hmac.compare_digest(offered, t.encode()) for t in self.tokens):
            return problem(
                401,
                "bearer token not accepted",
                {"WWW-Authenticate": 'Bearer realm="imei-registry", error="invalid_token"'},
            )
        return await handler(request)

    # -- handlers --------------------------------------------------------------------------

    def _cache_control(self, statuses: Iterable[RegistryStatus]) -> dict[str, str]:
        negative = any(s is RegistryStatus.UNKNOWN for s in statuses)
        age = min(self.max_age, self.negative_max_age) if negative else self.max_age
        return {"Cache-Control": f"max-age={age}"}

    async def get_imei(self, request: web.Request) -> web.Response:
        raw = request.match_info["imei"]
        try:
            verdict = self.registry.verdict(raw)
        except InvalidImei as exc:
            return problem(400, str(exc))
        return _json(verdict_to_json(verdict), self._cache_control([verdict.status]))

    async def check_imeis(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return problem(400, "request body must be application/json")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: too deep
            return problem(400, "request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("imeis"), list):
            return problem(400, "request body must be an object with an 'imeis' array")
        imeis = body["imeis"]
        if not imeis:
            return problem(400, "imeis must hold at least one IMEI")
        if len(imeis) > MAX_BATCH:
            return problem(413, f"at most {MAX_BATCH} IMEIs per request, got {len(imeis)}")
        for index, raw in enumerate(imeis):
            if not isinstance(raw, str):
                return problem(400, f"imeis[{index}] must be a string")
            try:
                normalise_imei(raw)
            except InvalidImei as exc:
                return problem(400, f"imeis[{index}]: {exc}")
        verdicts = self.registry.verdicts(imeis)
        # The batch's freshness is the one of its shortest-lived verdict.
        headers = self._cache_control(v.status for v in verdicts)
        return _json({"results": [verdict_to_json(v) for v in verdicts]}, headers)

    async def get_tac(self, request: web.Request) -> web.Response:
        tac = request.match_info["tac"]
        if not is_tac(tac):
            return problem(400, f"TAC must be 8 digits, got {tac!r}")
        declaration = self.registry.tac(tac)
        if declaration is None:
            return problem(404, f"nothing is declared for TAC {tac}")
        body = tac_to_json(declaration, kind=True)
        etag = _etag(body)
        headers = {"ETag": etag, "Cache-Control": f"max-age={self.max_age}"}
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            return web.Response(status=304, headers=headers)
        return _json(body, headers)

    async def get_changes(self, request: web.Request) -> web.Response:
        since_raw = request.query.get("since", "")
        if since_raw == "":
            since = 0
        elif since_raw.isdigit() and since_raw.isascii():
            since = int(since_raw)
        else:
            return problem(
                400, f"since must be a cursor returned as next_cursor, got {since_raw!r}"
            )
        limit_raw = request.query.get("limit")
        limit = DEFAULT_CHANGES
        if limit_raw is not None:
            try:
                limit = int(limit_raw)
            except ValueError:
                return problem(400, f"limit must be an integer, got {limit_raw!r}")
            if not 1 <= limit <= MAX_CHANGES:
                return problem(400, f"limit must be between 1 and {MAX_CHANGES}, got {limit}")
        page = self.registry.changes(since, limit)
        return _json(
            {
                "changes": [record_to_json(r) for r in page.changes],
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
            }
        )


def server_ssl_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """TLS for the server; with ``client_ca`` clients must present a certificate (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
