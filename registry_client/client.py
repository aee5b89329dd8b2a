"""Async HTTP client of the global IMEI registry (registry-api.yaml), a ``VerdictSource``.

Path of one ``check``:

1. normalise the IMEI to its 14-digit body;
2. ``cached()``: cache (LRU + TTL, ``Cache-Control: max-age`` honoured, ``unknown`` capped at
   negative_ttl) -> origin CACHE; else the mirror copy, when mirror mode is on and the TAC is
   mirrored -> origin MIRROR (an online verdict for a declared TAC the copy lacks makes the
   client fetch ``/v1/tacs/{tac}`` into it);
3. breaker open (or its half-open probe out) -> RegistryUnavailable at once;
4. single-flight: a check of an IMEI already in flight waits for that request;
5. otherwise the IMEI joins the pending batch, flushed after ``batch_window`` or at
   ``batch_max`` (<= 1000) as one ``POST /v1/imeis:check`` (a batch of one is a
   ``GET /v1/imeis/{imei}``) -> origin ONLINE. At most ``max_connections`` batches are out at
   once, and no more than would open the circuit breaker should they all fail (its
   ``breaker_failure_threshold``, less the failures so far), each with at most one request on
   the wire: the rest wait, growing into the next batch, and are dropped unsent once no check
   waits for them any more.

Every check waits at most ``budget`` seconds (its own timer), then gets RegistryUnavailable.
The round trip itself is bounded by ``request_timeout`` and may outlive the budget: an answer
that arrives late still fills the cache. For the breaker, though, a request unanswered after
``budget`` has failed (``breaker.py``: each attempt reports one outcome, and only outcomes of
requests admitted since the last state change count). Retries, with jittered exponential
backoff on 5xx, 429 (waiting at least ``Retry-After``, RFC 9110 §10.2.3) and connection errors,
are only started while the latest deadline among the batch's checks leaves room, and each needs
the breaker's admission like any request. Anything that goes wrong surfaces as
``RegistryUnavailable`` and nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from registry_client.breaker import BreakerState, CircuitBreaker, Ticket
from registry_client.cache import VerdictCache
from registry_client.local import LocalRegistry
from registry_client.metrics import CACHE_EVENTS, OUTCOMES, registry_metrics
from registry_client.mirror import MirrorError, RegistryMirror
from registry_client.model import (
    RegistryStatus,
    RegistryUnavailable,
    RegistryVerdict,
    VerdictOrigin,
)
from registry_client.settings import RegistrySettings
from registry_client.wire import InvalidImei, RecordError, normalise_imei, parse_verdict

log = logging.getLogger(__name__)
_FAILURE_LOG_INTERVAL = 60.0  # seconds between two log lines about the same kind of failure
_LOOP_LAG_TOLERANCE = 0.01  # a budget timer firing later than this: our loop paused, not the registry

MAX_BATCH = 1000  # registry-api.yaml: imeis maxItems


class _Failure(Exception):
    """One failed round trip; ``retryable`` per the policy above."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclasses.dataclass(slots=True)
class _Flight:
    """One IMEI being asked for (single-flight): every concurrent check of it waits here."""

    imei: str
    deadline: float  # loop time; the first check's
    waiters: list[asyncio.Future[RegistryVerdict]]

    def waiting(self) -> bool:
        """Does any check still wait for this IMEI?"""
        return any(not waiter.done() for waiter in self.waiters)

    # A waiter already done expired at its budget or its check was cancelled: skip it.
    def succeed(self, verdict: RegistryVerdict) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(verdict)

    def fail(self, error: RegistryUnavailable) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error)


def _expire(waiter: asyncio.Future[RegistryVerdict], budget: float) -> None:
    if not waiter.done():
        waiter.set_exception(
            RegistryUnavailable(f"no registry verdict within the {budget}s budget")
        )


def _as_cached(v: RegistryVerdict) -> RegistryVerdict:
    return RegistryVerdict(
        v.imei,
        v.tac,
        v.status,
        v.manufacturer,
        v.source,
        v.reports,
        VerdictOrigin.CACHE,
        v.fetched_at,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_max_age(value: str | None) -> float | None:
    """Freshness from Cache-Control (RFC 9111 §5.2.2): 0 for no-store/no-cache, None if absent."""
    if not value:
        return None
    max_age: float | None = None
    for directive in value.split(","):
        name, _, arg = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            arg = arg.strip().strip('"')
            if arg.isdigit():
                max_age = float(arg)
    return max_age


def client_ssl_context(settings: RegistrySettings) -> ssl.SSLContext | None:
    """Verify the registry with ``tls_ca`` (else system CAs); present ``tls_cert`` (mTLS)."""
    if not (settings.tls_ca or settings.tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.tls_ca)
    if settings.tls_cert:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


class HttpRegistryClient:
    """``VerdictSource`` over a remote registry. Create inside or outside a loop; use in one.

    Raises OSError / ssl.SSLError at construction when the TLS files cannot be loaded.
    """

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        metrics_registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._batch_max = max(1, min(MAX_BATCH, settings.batch_max))
        # Built now so that unreadable TLS files fail at startup, not on the first check.
        self._ssl: ssl.SSLContext | bool = client_ssl_context(settings) or True
        metrics = registry_metrics(metrics_registry)
        self._m_requests = {o: metrics.requests.labels(outcome=o) for o in OUTCOMES}
        self._m_cache = {e: metrics.cache_events.labels(event=e) for e in CACHE_EVENTS}
        self._m_duration = metrics.duration
        self._m_circuit = metrics.circuit_state
        self._m_circuit.set(BreakerState.CLOSED)
        self._logged_state = BreakerState.CLOSED
        self._failure_log: dict[str, tuple[float, int]] = {}  # kind -> (last logged, suppressed)
        self._cache = VerdictCache(settings.cache_size, clock)
        self._cache.on_event = lambda event: self._m_cache[event].inc()
        self.breaker = CircuitBreaker(
            settings.breaker_failure_threshold, settings.breaker_reset_timeout
        )
        self._inflight: dict[str, _Flight] = {}
        self._pending: list[_Flight] = []
        self._flush_handle: asyncio.Handle | None = None
        # Batches out (each has at most one request on the wire): at most max_connections.
        self._batches_out = 0
        self._max_batches_out = max(1, settings.max_connections)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: set[str] = set()  # TACs being fetched into the mirror
        self._session: aiohttp.ClientSession | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.mirror: RegistryMirror | None = None
        if settings.mirror:
            store = LocalRegistry(settings.mirror_database, origin=VerdictOrigin.MIRROR)
            self.mirror = RegistryMirror(
                store,
                settings.url,
                self._get_session,
                request_timeout=settings.request_timeout,
                page_limit=settings.mirror_page_size,
                max_staleness=settings.mirror_max_staleness,
            )

    # -- lifecycle -------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "eir-gateway-registry-client"}
            if self.settings.token:
                headers["Authorization"] = f"Bearer {self.settings.token}"
            headers.update(dict(self.settings.extra_headers))
            connector = aiohttp.TCPConnector(
                limit=max(1, self.settings.max_connections),
                ssl=self._ssl,
                keepalive_timeout=30.0,
            )
            self._session = aiohttp.ClientSession(connector=connector, headers=headers)
            # aiohttp resends a GET once when its connection breaks (RFC 9112 §9.3.1 allows
            # it); here every retry must pass the breaker, so the client's own loop does them.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def start(self) -> None:
        """Open the connection pool and, in mirror mode, start syncing (first sync right away)."""
        if not self._started and not self._closed:
            self._start_soon()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        closing = RegistryUnavailable("registry client closed")
        for flight in self._pending:
            flight.fail(closing)
        self._pending = []
        tasks = list(self._tasks)
        if self._mirror_task is not None:
            tasks.append(self._mirror_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self.mirror is not None:
            self.mirror.store.close_sync()

    async def sync_mirror(self) -> int:
        """One mirror sync now (also done periodically after ``start``); raises MirrorError."""
        if self.mirror is None:
            raise MirrorError("mirror mode is off")
        return await self.mirror.sync()

    # -- VerdictSource ---------------------------------------------------------------------

    def cached(self, imei: str) -> RegistryVerdict | None:
        """Fresh cached verdict (origin CACHE), else the mirror's (origin MIRROR), else None.

        Never blocks: a dict lookup and an expiry check; in mirror mode, for a miss, the mirror's
        in-memory memo or one indexed read of its local SQLite file.
        """
        if not self._started and not self._closed:
            self._start_soon()
        if len(imei) != 14:
            try:
                imei = normalise_imei(imei)
            except InvalidImei:
                return None
        entry = self._cache.get(imei)
        if entry is not None:
            verdict = entry.verdict
            unknown = verdict.status is RegistryStatus.UNKNOWN
            self._m_cache["negative_hit" if unknown else "hit"].inc()
            return verdict
        if self.mirror is not None:
            local = self.mirror.verdict(imei)
            if local is not None:
                self._m_cache["mirror_hit"].inc()
                return local
        return None

    def _start_soon(self) -> None:
        """First use inside a running loop: start (pool, mirror sync) without awaiting."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._started = True
        self._get_session()
        if self.mirror is not None:
            self._mirror_task = loop.create_task(
                self.mirror.run(self.settings.mirror_interval), name="registry-mirror"
            )

    async def check(self, imei: str) -> RegistryVerdict:
        if self._closed:
            raise RegistryUnavailable("registry client closed")
        try:
            key = normalise_imei(imei)
        except InvalidImei as exc:
            raise RegistryUnavailable(f"not sent to the registry: {exc}") from None
        hit = self.cached(key)  # also starts the client on first use
        if hit is not None:
            return hit
        self._m_cache["miss"].inc()
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.breaker.refuses(now):
            self._m_requests["circuit_open"].inc()
            raise RegistryUnavailable("registry circuit breaker is open")
        budget = self.settings.budget
        # Each check has its own waiter and timer: giving up (budget, cancellation) touches
        # neither the shared request nor the other checks of the same IMEI.
        waiter: asyncio.Future[RegistryVerdict] = loop.create_future()
        flight = self._inflight.get(key)
        if flight is None:
            flight = self._inflight[key] = _Flight(key, now + budget, [waiter])
            self._enqueue(flight, loop)  # after the waiter: a flight nobody waits for is dropped
        else:
            flight.waiters.append(waiter)
        timer = loop.call_at(now + budget, _expire, waiter, budget)
        try:
            return await waiter
        finally:
            timer.cancel()

    # -- single-flight and batching --------------------------------------------------------

    def _enqueue(self, flight: _Flight, loop: asyncio.AbstractEventLoop) -> None:
        self._pending.append(flight)
        if self._batches_out >= self._max_batches_out or self.breaker.holding_back():
            return  # the end of a request out flushes (_attempt, _batch_done): no timer
        if len(self._pending) >= self._batch_max:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(self.settings.batch_window, self._flush)

    def _flush(self) -> None:
        """Send the pending IMEIs, batch_max at a time, while fewer than max_connections are out.

        Each batch gets the breaker's ticket here: refused (open, probe out) it fails at once;
        while the breaker holds back, or all connections are busy, it waits for a request out to
        end. A flight nobody waits for any more (its checks' budgets ran out meanwhile) is dropped
        unsent, counted as ``pool_exhausted``: a saturated or failing registry is not sent work
        that no check will use.
        """
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._closed or not self._pending:
            return
        if not all(flight.waiting() for flight in self._pending):
            live: list[_Flight] = []
            for flight in self._pending:
                if flight.waiting():
                    live.append(flight)
                else:
                    self._land(flight)
            self._m_requests["pool_exhausted"].inc(len(self._pending) - len(live))
            self._pending = live
        loop = asyncio.get_running_loop()
        breaker = self.breaker
        while self._pending and self._batches_out < self._max_batches_out:
            if breaker.holding_back():
                return  # until a request out ends (see _attempt)
            ticket = breaker.admit(loop.time())
            self._set_circuit_gauge()
            batch = self._pending[: self._batch_max]
            del self._pending[: self._batch_max]
            if ticket is None:
                self._m_requests["circuit_open"].inc(len(batch))
                refused = RegistryUnavailable("registry circuit breaker is open")
                for flight in batch:
                    self._land(flight)
                    flight.fail(refused)
                continue
            self._batches_out += 1
            task = loop.create_task(self._run_batch(batch, ticket))
            self._tasks.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._batches_out -= 1
        if self._pending and not self._closed:
            self._flush()

    def _land(self, flight: _Flight) -> None:
        if self._inflight.get(flight.imei) is flight:
            del self._inflight[flight.imei]

    async def _run_batch(self, batch: list[_Flight], ticket: Ticket) -> None:
        deadline = max(f.deadline for f in batch)
        try:
            results = await self._fetch([f.imei for f in batch], deadline, ticket)
        except RegistryUnavailable as exc:
            error: RegistryUnavailable = exc
        except asyncio.CancelledError:
            for flight in batch:
                self._land(flight)
                flight.fail(RegistryUnavailable("registry client closed"))
            raise
        except Exception as exc:  # never let anything but RegistryUnavailable reach a check
            log.exception("registry batch failed unexpectedly")
            error = RegistryUnavailable(f"registry client error: {exc!r}")
        else:
            negative_ttl = self.settings.negative_ttl
            for flight, (verdict, ttl) in zip(batch, results, strict=True):
                if verdict.status is RegistryStatus.UNKNOWN:
                    ttl = min(ttl, negative_ttl)
                self._cache.put(flight.imei, _as_cached(verdict), ttl)
                self._land(flight)
                flight.succeed(verdict)
            self._refresh_mirror([verdict for verdict, _ in results])
            return
        for flight in batch:
            self._land(flight)
            flight.fail(error)

    def _refresh_mirror(self, verdicts: list[RegistryVerdict]) -> None:
        """Online verdicts for declared TACs the copy lacks: fetch ``/v1/tacs/{tac}`` for it."""
        mirror = self.mirror
        if mirror is None or mirror.synced_at is None or self._closed:
            return
        for tac in {v.tac for v in verdicts if v.manufacturer or v.source == "declared_range"}:
            if tac in self._refreshing or mirror.store.tac(tac) is not None:
                continue
            self._refreshing.add(tac)
            task = asyncio.get_running_loop().create_task(self._refresh_tac(mirror, tac))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _refresh_tac(self, mirror: RegistryMirror, tac: str) -> None:
        try:
            await mirror.refresh_tac(tac)
        except MirrorError as exc:
            log.debug("registry mirror could not refresh TAC %s: %s", tac, exc)
        finally:
            self._refreshing.discard(tac)

    # -- round trips -----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Equal-jitter exponential backoff: half fixed, half random."""
        cap = min(self.settings.backoff_max, self.settings.backoff_base * (2**attempt))
        return cap / 2 + random.uniform(0, cap / 2)

    def _set_circuit_gauge(self, cause: str = "") -> None:
        state = self.breaker.state
        self._m_circuit.set(state)
        if state is self._logged_state:
            return
        # One line per transition: an operator sees the outage start and end, not every check.
        if state is BreakerState.OPEN:
            log.warning(
                "registry circuit open (%s): checks answer registry_unavailable, next probe in "
                "%g s",
                cause or "failures",
                self.breaker.reset_timeout,
            )
        elif state is BreakerState.CLOSED:
            log.warning("registry answering again: circuit closed")
        self._logged_state = state

    def _log_failure(self, failure: _Failure) -> None:
        """Each failure at most once a minute per kind (a 401 is logged, not 10,000 times)."""
        kind = str(failure).split(":")[0]
        now = time.monotonic()
        last, suppressed = self._failure_log.get(kind, (-_FAILURE_LOG_INTERVAL, 0))
        if now - last < _FAILURE_LOG_INTERVAL:
            self._failure_log[kind] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        level = logging.WARNING if failure.retryable else logging.ERROR
        log.log(level, "registry request failed: %s%s", failure, more)
        self._failure_log[kind] = (now, 0)

    async def _fetch(
        self, imeis: list[str], deadline: float, ticket: Ticket
    ) -> list[tuple[RegistryVerdict, float]]:
        """One request, retried while the breaker admits it and ``deadline`` leaves room."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await self._attempt(imeis, ticket)
            except _Failure as failure:
                if not failure.retryable or attempt >= self.settings.retries:
                    raise RegistryUnavailable(str(failure)) from None
                delay = self._backoff(attempt)
                if failure.retry_after is not None:
                    delay = max(delay, failure.retry_after)
                if loop.time() + delay >= deadline:
                    raise RegistryUnavailable(f"{failure}; no budget left to retry") from None
                await asyncio.sleep(delay)
                attempt += 1
                # A retry needs the breaker's admission like any request: none while it is
                # open, its probe is out, or it holds back.
                retry = None if self.breaker.holding_back() else self.breaker.admit(loop.time())
                self._set_circuit_gauge()
                if retry is None:
                    self._m_requests["circuit_open"].inc(len(imeis))
                    raise RegistryUnavailable(
                        f"{failure}; not retried: the circuit breaker holds requests back"
                    ) from None
                ticket = retry

    async def _attempt(
        self, imeis: list[str], ticket: Ticket
    ) -> list[tuple[RegistryVerdict, float]]:
        """One round trip whose outcome goes to the breaker exactly once.

        An answer later than ``budget`` is of no use to the checks that waited for it, so the
        breaker hears "failure" when the budget runs out: a hanging registry opens the circuit
        within about twice the budget rather than after ``request_timeout``. The round trip goes
        on (a late verdict still fills the cache) and holds its connection until it ends.
        """
        loop = asyncio.get_running_loop()
        budget = self.settings.budget
        reported = False

        def report(ok: bool, cause: str) -> None:
            nonlocal reported
            if reported or self._closed:
                return
            reported = True
            now = loop.time()
            changed = self.breaker.success(ticket, now) if ok else self.breaker.failure(ticket, now)
            if changed:
                self._set_circuit_gauge(cause)
            if self._pending:  # held back, or refused now that it opened
                self._flush()

        due = loop.time() + budget
        extended = False
        timer: asyncio.TimerHandle

        def overdue() -> None:
            nonlocal timer, extended
            late = loop.time() - due
            if late > _LOOP_LAG_TOLERANCE and not extended:
                # This loop ran late (a pause here, not at the registry): the answer may be
                # waiting unread in the socket. Give it as long again before calling it failed.
                extended = True
                timer = loop.call_later(late, overdue)
                return
            self._log_failure(_Failure(f"registry did not answer within the {budget:g}s budget",
                                       retryable=True))
            report(False, f"no answer within the {budget:g}s budget")

        timer = loop.call_at(due, overdue)
        try:
            results = await self._round_trip(imeis, self.settings.request_timeout)
        except _Failure as failure:
            self._log_failure(failure)
            report(False, str(failure))
            raise
        except BaseException as exc:  # also cancellation: never leave a ticket unreported
            report(False, f"registry client error: {exc!r}")
            raise
        finally:
            timer.cancel()
        report(True, "")
        return results

    async def _round_trip(
        self, imeis: list[str], timeout: float
    ) -> list[tuple[RegistryVerdict, float]]:
        session = self._get_session()
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = "ok"
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        if len(imeis) == 1:
            request = session.get(f"{self._base}/v1/imeis/{imeis[0]}", timeout=client_timeout)
        else:
            request = session.post(
                f"{self._base}/v1/imeis:check", json={"imeis": imeis}, timeout=client_timeout
            )
        try:
            async with request as resp:
                if resp.status == 429 or resp.status >= 500:
                    outcome = "throttled" if resp.status == 429 else "server_error"
                    raise _Failure(
                        f"registry answered {resp.status}",
                        retryable=True,
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                    )
                if resp.status != 200:
                    outcome = "client_error"
                    raise _Failure(f"registry answered {resp.status}", retryable=False)
                if resp.content_type != "application/json":
                    outcome = "invalid_response"
                    raise _Failure(f"registry answered {resp.content_type}", retryable=False)
                raw = await resp.read()
                ttl = parse_max_age(resp.headers.get("Cache-Control"))
            fetched_at = time.time()
            try:
                body = json.loads(raw)
                if len(imeis) == 1:
                    items = [body]
                else:
                    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                        raise RecordError("body must be an object with a results array")
                    items = body["results"]
                if len(items) != len(imeis):
                    raise RecordError(f"{len(items)} results for {len(imeis)} IMEIs")
                verdicts = [
                    parse_verdict(item, origin=VerdictOrigin.ONLINE, fetched_at=fetched_at)
                    for item in items
                ]
                for asked, verdict in zip(imeis, verdicts, strict=True):
                    if verdict.imei != asked:
                        raise RecordError(f"result for {verdict.imei} where {asked} was asked")
            # RecordError is a ValueError; RecursionError: JSON nested past the reader's limit
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                outcome = "invalid_response"
                raise _Failure(
                    f"registry answer outside the contract: {exc}", retryable=False
                ) from None
            fresh = self.settings.cache_ttl if ttl is None else ttl
            return [(v, fresh) for v in verdicts]
        except TimeoutError:
            outcome = "timeout"
            raise _Failure(
                f"registry did not answer within {timeout:.3f}s", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            outcome = "connection_error"
            raise _Failure(f"registry connection failed: {exc!r}", retryable=True) from None
        finally:
            self._m_duration.observe(loop.time() - started)
            self._m_requests[outcome].inc()
