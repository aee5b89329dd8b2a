"""Mirror mode: keep a local SQLite copy of the registry current from ``GET /v1/changes``.

The copy is a ``LocalRegistry`` (origin MIRROR) in its own file. Each page of changes and the
cursor that follows it are stored in one transaction, so after a crash or restart the mirror
resumes exactly where it stopped (the cursor lives in the same file, meta key ``mirror.cursor``).
If the configured registry URL differs from the one the cursor belongs to, the feed restarts from
the beginning (records are upserts, so re-reading is harmless).

Verdicts are answered locally for TACs the copy holds a declaration for, once at least one sync
has completed and while the last successful sync is younger than ``max_staleness``; other IMEIs
(and every IMEI while the copy is stale) go online. ``refresh_tac`` revalidates one declaration through
``GET /v1/tacs/{tac}`` with ``If-None-Match`` (RFC 9110 §13.1.2), cheap when nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from registry_client.local import LocalRegistry
from registry_client.model import RegistryVerdict, Report, VerdictOrigin
from registry_client.wire import (
    RecordError,
    TacDeclaration,
    is_tac,
    parse_report,
    parse_tac_declaration,
)

log = logging.getLogger(__name__)

CURSOR_KEY = "mirror.cursor"
URL_KEY = "mirror.url"
SYNCED_KEY = "mirror.synced_at"


class MirrorError(Exception):
    """A sync or refresh that failed (transport, status or contract); the copy is unchanged."""


class RegistryMirror:
    def __init__(
        self,
        store: LocalRegistry,
        url: str,
        session: Callable[[], aiohttp.ClientSession],
        *,
        request_timeout: float = 10.0,
        page_limit: int = 1000,
        max_staleness: float = 0.0,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.url = url.rstrip("/")
        self._session = session
        self.request_timeout = request_timeout
        self.page_limit = max(1, min(10_000, page_limit))  # registry-api.yaml limit 1..10000
        self.max_staleness = max_staleness
        self.clock = clock
        if store.get_meta(URL_KEY) != self.url:
            store.set_meta(CURSOR_KEY, "")
            store.set_meta(URL_KEY, self.url)
            store.set_meta(SYNCED_KEY, "")
        self.synced_at: float | None = float(store.get_meta(SYNCED_KEY) or 0) or None

    @property
    def cursor(self) -> str:
        return self.store.get_meta(CURSOR_KEY) or ""

    @property
    def is_fresh(self) -> bool:
        """Synced at least once, and (with a staleness limit) recently enough to be trusted."""
        synced_at = self.synced_at
        if synced_at is None:
            return False
        return not self.max_staleness or self.clock() - synced_at <= self.max_staleness

    def verdict(self, imei: str) -> RegistryVerdict | None:
        """Local verdict for a 14-digit IMEI whose TAC the copy declares; else None (also when
        the copy is stale: a feed that stopped must not keep answering from old data)."""
        if not self.is_fresh or self.store.tac(imei[:8]) is None:
            return None
        verdict = self.store.cached(imei)
        if verdict is None or verdict.origin is VerdictOrigin.MIRROR:
            return verdict
        return verdict._replace(origin=VerdictOrigin.MIRROR)

    def _get(self, path: str, **kwargs: Any) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        return self._session().get(self.url + path, timeout=timeout, **kwargs)

    async def sync(self) -> int:
        """Fetch pages until ``has_more`` is false; returns how many records were received."""
        received = 0
        while True:
            cursor = self.cursor
            params = {"limit": str(self.page_limit)}
            if cursor:
                params["since"] = cursor
            try:
                async with self._get("/v1/changes", params=params) as resp:
                    if resp.status != 200 or resp.content_type != "application/json":
                        raise MirrorError(f"/v1/changes answered {resp.status} {resp.content_type}")
                    body = json.loads(await resp.read())
            except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:
                raise MirrorError(f"/v1/changes: {exc!r}") from exc
            records, next_cursor, has_more = _parse_page(body)
            now = self.clock()
            self.store.apply_with_meta(records, {CURSOR_KEY: next_cursor, SYNCED_KEY: repr(now)})
            self.synced_at = now
            received += len(records)
            if not has_more:
                return received
            if next_cursor == cursor:
                raise MirrorError("/v1/changes: has_more with a cursor that does not advance")

    async def refresh_tac(self, tac: str) -> bool:
        """Revalidate one TAC declaration; True when the copy changed."""
        if not is_tac(tac):
            raise ValueError(f"TAC must be 8 digits, got {tac!r}")
        etag_key = f"etag.{tac}"
        headers = {}
        etag = self.store.get_meta(etag_key)
        if etag and self.store.tac(tac) is not None:
            headers["If-None-Match"] = etag
        try:
            async with self._get(f"/v1/tacs/{tac}", headers=headers) as resp:
                if resp.status in (304, 404):
                    return False
                if resp.status != 200 or resp.content_type != "application/json":
                    raise MirrorError(f"/v1/tacs/{tac} answered {resp.status} {resp.content_type}")
                declaration = parse_tac_declaration(json.loads(await resp.read()))
                new_etag = resp.headers.get("ETag", "")
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:
            raise MirrorError(f"/v1/tacs/{tac}: {exc!r}") from exc
        if declaration.tac != tac:
            raise MirrorError(f"/v1/tacs/{tac} answered TAC {declaration.tac}")
        return self.store.apply_with_meta([declaration], {etag_key: new_etag}) > 0

    async def run(self, interval: float) -> None:
        """Sync now and every ``interval`` seconds until cancelled; failures are logged."""
        while True:
            try:
                count = await self.sync()
                log.debug("registry mirror synced %d records, cursor %s", count, self.cursor)
            except MirrorError as exc:
                log.warning("registry mirror sync failed: %s", exc)
                if self.synced_at is not None and not self.is_fresh:
                    age = self.clock() - self.synced_at
                    log.warning("registry mirror last synced %.0f s ago: checks go online", age)
            await asyncio.sleep(interval)


def _parse_page(body: object) -> tuple[list[TacDeclaration | Report], str, bool]:
    if not isinstance(body, dict):
        raise MirrorError("/v1/changes: body must be an object")
    changes, cursor, has_more = body.get("changes"), body.get("next_cursor"), body.get("has_more")
    if (
        not isinstance(changes, list)
        or not isinstance(cursor, str)
        or not isinstance(has_more, bool)
    ):
        raise MirrorError("/v1/changes: changes, next_cursor and has_more are required")
    records: list[TacDeclaration | Report] = []
    for index, item in enumerate(changes):
        try:
            if isinstance(item, dict) and (item.get("kind") == "report" or "imei" in item):
                records.append(parse_report(item, strict_imei=True))
            else:
                records.append(parse_tac_declaration(item))
        except RecordError as exc:
            raise MirrorError(f"/v1/changes: changes[{index}]: {exc}") from None
    return records, cursor, has_more
