"""The provisioning and query API over aiohttp: routes, bearer-token roles, problem+json errors.

Every handler does its SQLite work in a thread (``asyncio.to_thread``): the event loop also
serves S13 when the API runs inside the gateway. Reads need the ``read`` role, writes the
``write`` role; IMSIs are masked unless the token has ``pii``. ``/openapi.json`` needs no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from diameter.settings import ListenEndpoint
from diameter.transport.server import listening_socket
from gateway import state
from gateway.api.head_timeout import SWEEP_SECONDS, HeadTimeout
from gateway.api.jobs import ImportJobs, OnChange
from gateway.api.limited_site import LimitedSite
from gateway.api.openapi import document
from gateway.api.problem import Problem, bad_input, problem_response
from gateway.api.tokens import Token, TokenTable
from gateway.audit import ACTIONS, AuditRecord
from gateway.classify import Classifier
from gateway.config import GatewayConfig
from gateway.imei import Imei, is_decimal
from gateway.lists import (
    EntryExists,
    EntryKind,
    ListColour,
    ListEntry,
    ListError,
    entry_from_json,
    entry_json,
    entry_target,
    parse_entry_id,
)
from gateway.observations import mask_imsi
from gateway.provisioning import FORMATS, MAX_PAGE, CursorError, Provisioning
from gateway.report import (
    check_report,
    clone_report,
    imsi_problem,
    observations_report,
    parse_body,
    tac_report,
)

log = logging.getLogger("eir.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTENT_TYPES = {"csv": "text/csv", "jsonl": "application/jsonl"}
_TOKEN = web.RequestKey("token", Token)  # the authenticated token of a request
_UPLOAD_CHUNK = 1 << 20
API_BACKLOG = 128  # as aiohttp's own listeners
MAX_CHECKED_IMEI = 64  # an S13 IMEI AVP is 14-16 digits; anything longer is not a check
_PAIR_ID = re.compile(r"^(pair:[0-9]+(?:-[0-9]+)?:)([0-9]+)$")


def _actor(request: web.Request) -> str:
    return f"api:{request[_TOKEN].name}"


def _clear_imsis(request: web.Request) -> bool:
    return "pii" in request[_TOKEN].roles


class ApiServer:
    """The API of one gateway (or of ``eir-gateway api``): ``start()``, ``port``, ``stop()``."""

    def __init__(
        self,
        config: GatewayConfig,
        classifier: Classifier,
        service: Provisioning,
        on_change: OnChange | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.sock = sock  # a listening socket bound by a supervisor; None: bind api.listen
        self.classifier = classifier
        self.service = service
        # Observation reads go through the list store's PostgreSQL pool (None: SQLite).
        self._db = state.database_of(classifier.lists.store)
        self.on_change = on_change
        self.tokens = TokenTable(config.api.tokens)
        self.jobs = ImportJobs(service, on_change)
        self._runner: web.AppRunner | None = None
        self.site: LimitedSite | None = None
        self.head_timeout = HeadTimeout(config.api.header_timeout_seconds)
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.app = self._app()

    # -- life cycle ------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self.head_timeout.middleware, self._errors,
                                           self._auth])
        r = app.router
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/v1/lists/entries", self.list_entries)
        r.add_post("/v1/lists/entries", self.create_entry)
        r.add_get("/v1/lists/export", self.export)
        r.add_post("/v1/lists/imports", self.submit_import)
        r.add_get("/v1/lists/{list}/entries/{entry}", self.get_entry)
        r.add_put("/v1/lists/{list}/entries/{entry}", self.put_entry)
        r.add_delete("/v1/lists/{list}/entries/{entry}", self.delete_entry)
        r.add_get("/v1/jobs", self.list_jobs)
        r.add_get("/v1/jobs/{job}", self.get_job)
        r.add_get("/v1/checks/{imei}", self.check)
        r.add_get("/v1/tacs/{tac}", self.tac)
        r.add_get("/v1/imeis/{imei}/list-entries", self.imei_entries)
        r.add_get("/v1/imeis/{imei}/observations", self.observations)
        r.add_get("/v1/imeis/{imei}/clone-detection", self.clone_detection)
        r.add_get("/v1/audit", self.audit)
        return app

    async def start(self) -> None:
        api = self.config.api
        context = None
        if api.tls_cert and api.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(api.tls_cert, api.tls_key)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        sock = self.sock
        if sock is None:
            assert api.host is not None
            sock = listening_socket(ListenEndpoint("tcp", api.host, api.port), API_BACKLOG)
        self.site = LimitedSite(self._runner, sock, api.max_connections, context)
        await self.site.start()
        self.port = sock.getsockname()[1]
        server = self._runner.server
        if self.head_timeout.timeout and server is not None:
            self._sweeper = asyncio.create_task(self._sweep(server))

    async def _sweep(self, server: web.Server) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.head_timeout.sweep(server.connections, loop.time())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.jobs.close()

    # -- middlewares -----------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as p:
            return problem_response(p)
        except web.HTTPException as exc:  # aiohttp's own: 404 no route, 405, 413, ...
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return problem_response(Problem(exc.status, exc.reason, headers=headers))

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/openapi.json":
            return await handler(request)
        # RFC 6750 §3: a missing or wrong token is 401 with a Bearer challenge.
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Problem(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                          headers={"WWW-Authenticate": 'Bearer realm="eir-gateway"'})
        token = self.tokens.authenticate(secret.strip())
        if token is None:
            raise Problem(401, "the bearer token is not valid", headers={
                "WWW-Authenticate": 'Bearer realm="eir-gateway", error="invalid_token"'})
        role = "read" if request.method in ("GET", "HEAD") else "write"
        if role not in token.roles:
            raise Problem(403, f"the token {token.name!r} lacks the {role!r} role", headers={
                "WWW-Authenticate": f'Bearer realm="eir-gateway", error="insufficient_scope", '
                                    f'scope="{role}"'})
        request[_TOKEN] = token
        return await handler(request)

    # -- helpers ---------------------------------------------------------------------------------

    def _entry(self, entry: ListEntry, clear: bool) -> dict[str, Any]:
        out = entry_json(entry)
        assert out is not None
        return out if clear else _mask_entry(out)

    def _path_entry(self, request: web.Request, reason: str = "") -> ListEntry:
        colour = request.match_info["list"]
        if colour not in {c.value for c in ListColour}:
            raise bad_input("list", f"{colour!r} is not black, grey or white")
        try:
            return parse_entry_id(colour, request.match_info["entry"], reason)
        except ListError as exc:
            raise Problem(400, str(exc), "entry") from None

    def _imei(self, request: web.Request) -> Imei:
        text = request.match_info["imei"]
        imei = parse_body(text)
        if imei is None:
            raise bad_input("imei", f"{text!r} is not an IMEI (14 digits, 15 with a valid check "
                                    "digit, or a 16-digit IMEISV)")
        return imei

    @property
    def _body_timeout(self) -> float | None:
        return self.config.api.body_timeout_seconds or None

    def _body_stalled(self) -> Problem:
        """408 (RFC 9110 §15.5.9) for a body that stopped coming; the connection is closed
        after it (a client trickling a body held it, and an upload's file, for ever)."""
        return Problem(408, f"no part of the request body within "
                            f"{self.config.api.body_timeout_seconds:g} s", close=True)

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    async def _json_body(self, request: web.Request) -> Any:
        if request.content_type != "application/json":
            raise Problem(415, "the body must be application/json")
        try:
            async with asyncio.timeout(self._body_timeout):
                return await request.json()
        except TimeoutError:
            raise self._body_stalled() from None
        except ValueError as exc:
            raise bad_input("body", f"not JSON: {exc}") from None
        except RecursionError:  # json.loads gives up on deep nesting with this, not ValueError
            raise bad_input("body", "not JSON this API reads: nested too deeply") from None

    # -- handlers --------------------------------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(document())

    async def list_entries(self, request: web.Request) -> web.Response:
        q = request.query
        colour = _choice(q, "list", [c.value for c in ListColour])
        kind = _choice(q, "kind", [k.value for k in EntryKind])
        limit = _int(q, "limit", 100, 1, MAX_PAGE)
        cursor = _text(q, "cursor")

        def page() -> tuple[list[ListEntry], str | None, int]:
            entries, nxt = self.service.page(
                ListColour(colour) if colour else None, EntryKind(kind) if kind else None,
                cursor, limit,
            )
            return entries, nxt, self.service.version()

        try:
            entries, nxt, version = await asyncio.to_thread(page)
        except CursorError as exc:
            raise bad_input("cursor", str(exc)) from None
        clear = _clear_imsis(request)
        return web.json_response({
            "version": version,
            "entries": [self._entry(e, clear) for e in entries],
            "next_cursor": nxt,
        })

    async def create_entry(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        try:
            entry = entry_from_json(body)
        except ListError as exc:
            raise Problem(400, str(exc), exc.field or "body") from None
        try:
            stored = await asyncio.to_thread(self.service.create, entry, _actor(request))
        except EntryExists as exc:
            raise Problem(409, f"{exc}: PUT updates it") from None
        await self._changed()
        location = f"/v1/lists/{entry_target(entry).replace('/', '/entries/', 1)}"
        return web.json_response(self._entry(stored, _clear_imsis(request)), status=201,
                                 headers={"Location": location})

    async def get_entry(self, request: web.Request) -> web.Response:
        entry = self._path_entry(request)
        stored = await asyncio.to_thread(self.service.get, entry)
        if stored is None:
            raise Problem(404, f"no entry {_masked_target(entry, _clear_imsis(request))}")
        return web.json_response(self._entry(stored, _clear_imsis(request)))

    async def put_entry(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise bad_input("body", "must be a JSON object")
        unknown = sorted(set(body) - {"reason"})
        if unknown:
            raise bad_input(unknown[0], "unknown field (only reason can change)")
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise bad_input("reason", "must be a string")
        entry = self._path_entry(request, reason)
        created, stored = await asyncio.to_thread(self.service.put, entry, _actor(request))
        await self._changed()
        return web.json_response(self._entry(stored, _clear_imsis(request)),
                                 status=201 if created else 200)

    async def delete_entry(self, request: web.Request) -> web.Response:
        entry = self._path_entry(request)
        removed = await asyncio.to_thread(self.service.delete, entry, _actor(request))
        if removed is None:
            raise Problem(404, f"no entry {_masked_target(entry, _clear_imsis(request))}")
        await self._changed()
        return web.Response(status=204)

    async def imei_entries(self, request: web.Request) -> web.Response:
        imei = self._imei(request)
        entries = await asyncio.to_thread(self.service.matching, imei.as_int)
        clear = _clear_imsis(request)
        return web.json_response(
            {"imei": imei.body, "entries": [self._entry(e, clear) for e in entries]}
        )

    async def check(self, request: web.Request) -> web.Response:
        imei = request.match_info["imei"]
        if len(imei) > MAX_CHECKED_IMEI:
            raise bad_input("imei", f"longer than {MAX_CHECKED_IMEI} characters")
        imsi = _text(request.query, "imsi")
        sv = request.query.get("sv")  # any text: one that is not 2 digits is answered 5004
        if imsi is not None:
            problem = imsi_problem(imsi)
            if problem is not None:
                raise Problem(400, f"imsi {problem}", "imsi")
        report = await check_report(
            self.config, self.classifier, imei, imsi or None, sv, not _clear_imsis(request)
        )
        return web.json_response(report)

    async def tac(self, request: web.Request) -> web.Response:
        text = request.match_info["tac"]
        if len(text) == 8 and is_decimal(text):
            tac = text
        else:
            imei = parse_body(text)
            if imei is None:
                raise bad_input("tac", f"{text!r} is neither an 8-digit TAC nor an IMEI")
            tac = imei.tac
        record = tac_report(self.classifier, tac)
        if record is None:
            raise Problem(404, f"TAC {tac} is not in the TAC database")
        return web.json_response(record)

    async def observations(self, request: web.Request) -> web.Response:
        imei = self._imei(request)
        report = await asyncio.to_thread(
            observations_report, self.config, imei, not _clear_imsis(request), self._db
        )
        return web.json_response(report)

    async def clone_detection(self, request: web.Request) -> web.Response:
        imei = self._imei(request)
        report = await asyncio.to_thread(
            clone_report, self.config, self.classifier, imei, not _clear_imsis(request),
            None, self._db,
        )
        return web.json_response(report)

    async def audit(self, request: web.Request) -> web.Response:
        q = request.query
        limit = _int(q, "limit", 100, 1, MAX_PAGE)
        filters: dict[str, Any] = {"after": _int(q, "after", 0, 0, 2**62), "limit": limit}
        for name in ("actor", "target"):
            filters[name] = _text(q, name)
        filters["action"] = _choice(q, "action", list(ACTIONS))
        for name in ("since", "until"):
            filters[name] = _time(q, name)
        records = await asyncio.to_thread(self.service.audit, **filters)
        clear = _clear_imsis(request)
        return web.json_response({
            "records": [_audit_json(r, clear) for r in records],
            "next_after": records[-1].seq if len(records) == limit else None,
        })

    async def export(self, request: web.Request) -> web.StreamResponse:
        fmt = _choice(request.query, "format", list(FORMATS)) or "csv"
        chunks: Iterator[tuple[str, int]] = self.service.export_chunks(fmt)
        response = web.StreamResponse(headers={
            "Content-Type": f"{CONTENT_TYPES[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="lists.{fmt}"',
        })
        await response.prepare(request)
        end = ("", -1)
        while True:
            # Each chunk is read in a thread: a 10-million-entry export never holds the loop.
            chunk, n = await asyncio.to_thread(next, chunks, end)
            if n < 0:
                break
            if chunk:
                await response.write(chunk.encode())
        await response.write_eof()
        return response

    async def submit_import(self, request: web.Request) -> web.Response:
        fmt = _choice(request.query, "format", list(FORMATS))
        if fmt is None:
            ctype = request.content_type
            fmt = {"text/csv": "csv", "application/jsonl": "jsonl",
                   "application/x-ndjson": "jsonl"}.get(ctype)
            if fmt is None:
                raise Problem(415, "send text/csv or application/jsonl (or say ?format=)")
        name = _text(request.query, "file") or f"upload.{fmt}"
        limit = self.config.api.max_import_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Problem(413, f"the file is larger than api.max_import_bytes ({limit})")
        path = await self._receive(request, limit)
        if path.stat().st_size == 0:
            path.unlink()
            raise bad_input("body", "empty: send the file as the request body")
        job = self.jobs.submit(path, fmt, _actor(request), name)
        return web.json_response(job.as_json(), status=202,
                                 headers={"Location": f"/v1/jobs/{job.id}"})

    async def _receive(self, request: web.Request, limit: int) -> Path:
        """Stream the body into a file of the imports directory (writes in a thread)."""
        directory = self.config.api.imports_dir
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        path = directory / f"{uuid.uuid4().hex}.upload"
        handle = await asyncio.to_thread(open, path, "wb")
        size = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(self._body_timeout):
                        chunk = await request.content.read(_UPLOAD_CHUNK)
                except TimeoutError:
                    raise self._body_stalled() from None
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise Problem(413, f"the file is larger than api.max_import_bytes ({limit})")
                await asyncio.to_thread(handle.write, chunk)
        except BaseException:
            await asyncio.to_thread(handle.close)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        await asyncio.to_thread(handle.close)
        return path

    async def list_jobs(self, request: web.Request) -> web.Response:
        return web.json_response({"jobs": [j.as_json() for j in self.jobs.all()]})

    async def get_job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            raise Problem(404, f"no import job {request.match_info['job']!r}")
        return web.json_response(job.as_json())


# -- request parsing and masking ---------------------------------------------------------------


def _text(query: Any, name: str) -> str | None:
    """A query parameter; present but empty is bad input (an empty filter is a mistake)."""
    value = query.get(name)
    if value == "":
        raise bad_input(name, "empty")
    return None if value is None else str(value)


def _choice(query: Any, name: str, choices: list[str]) -> str | None:
    value = _text(query, name)
    if value is not None and value not in choices:
        raise bad_input(name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _int(query: Any, name: str, default: int, low: int, high: int) -> int:
    text = _text(query, name)
    if text is None:
        return default
    # More digits than the bound's is out of range without int(), which refuses (ValueError)
    # more than 4,300 digits.
    digits = text.lstrip("0") or "0"
    if (not (text.isascii() and text.isdigit()) or len(digits) > len(str(high))
            or not low <= int(digits) <= high):
        raise bad_input(name, f"{text[:32]!r} is not an integer from {low} to {high}")
    return int(digits)


def _time(query: Any, name: str) -> float | None:
    text = _text(query, name)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise bad_input(name, f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise bad_input(name, f"{text!r} has no time zone (add Z or +00:00)")
    return when.timestamp()


def _mask_entry(entry: dict[str, Any]) -> dict[str, Any]:
    if entry.get("imsi"):
        entry = {**entry, "imsi": mask_imsi(entry["imsi"])}
    return entry


def _mask_target(target: str) -> str:
    colour, _, name = target.partition("/")
    m = _PAIR_ID.match(name)
    return target if m is None else f"{colour}/{m.group(1)}{mask_imsi(m.group(2))}"


def _masked_target(entry: ListEntry, clear: bool) -> str:
    target = entry_target(entry)
    return target if clear else _mask_target(target)


def _audit_json(r: AuditRecord, clear: bool) -> dict[str, Any]:
    before, after, target = r.before, r.after, r.target
    if not clear:
        before = None if before is None else _mask_entry(before)
        after = None if after is None else _mask_entry(after)
        target = _mask_target(target)
    return {
        "seq": r.seq,
        "at": datetime.fromtimestamp(r.at, UTC).isoformat(timespec="milliseconds"),
        "actor": r.actor,
        "action": r.action,
        "target": target,
        "before": before,
        "after": after,
    }


def api_served(config: GatewayConfig) -> bool:
    """Whether ``api.listen`` is set and a token exists (without one nobody could use the API,
    so nothing is bound)."""
    return config.api.host is not None and bool(config.api.tokens)


async def start_api(
    config: GatewayConfig, classifier: Classifier, on_change: OnChange | None = None,
    sock: socket.socket | None = None,
) -> ApiServer | None:
    """Serve the API when :func:`api_served` (on ``sock`` when given); None otherwise."""
    api = config.api
    if api.host is None:
        return None
    if not api_served(config):
        log.info("provisioning API not served: no api.tokens or api.token_file")
        return None
    store = classifier.lists.store
    if store is None:
        return None
    server = ApiServer(config, classifier, Provisioning(store), on_change, sock)
    await server.start()
    log.info("provisioning API on %s://%s:%s (%d tokens)",
             "https" if api.tls_cert else "http", api.host, server.port, len(api.tokens))
    return server
