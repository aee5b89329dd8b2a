"""Simulated AMFs asking a 5G-EIR over N5g-eir (TS 29.511 §5.2.2.2, GetEquipmentStatus), as
during registration (TS 23.502 §4.2.2.2.2, step 12).

Each connection is one HTTP/2 client (:class:`Http2ClientSession`): cleartext h2c with prior
knowledge, as the Open5GS and free5GC AMFs connect, or TLS with ALPN ``h2`` (TS 29.500
§5.2.2.2). A connection is up once the server's SETTINGS arrived. The checks are the S13
simulator's (IMEI file or generator): each becomes a PEI (:func:`pei_of`) and, with an IMSI, a
SUPI ``imsi-``; its request header block is encoded once before the run, so sending is one
HEADERS frame. The loops, limits and report are :mod:`gateway.simulator.loops`'.

Outcomes: ``WHITELISTED``/``BLACKLISTED``/``GREYLISTED`` (200 EirResponseData),
``EQUIPMENT_UNKNOWN`` (404 with cause ERROR_EQUIPMENT_UNKNOWN), otherwise ``HTTP_<status>``;
result keys are the HTTP status with the ProblemDetails cause (``400
MANDATORY_QUERY_PARAM_INCORRECT``). A check the S13 side expects to be answered for a
malformed IMEI (which no PEI can carry) is expected as ``HTTP_400`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import quote

from diameter.transport import client_ssl_context
from gateway.imei import is_decimal, luhn_check_digit
from gateway.n5g_eir.http2_client import (
    ConnectionTerminated,
    Http2ClientSession,
    ResponseReceived,
    StreamReset,
    request_block,
)
from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH
from gateway.simulator.loops import Link, LoadRun, Outstanding
from gateway.simulator.settings import SimulatorSettings
from gateway.simulator.traffic import OUTCOME_UNKNOWN, Check

ALPN_H2 = "h2"  # RFC 9113 §3.2
USER_AGENT = b"AMF"  # TS 29.500 §5.2.2.2: the NF type of the service consumer
ACCEPT = b"application/json, application/problem+json"
_STATUS_NAMES = frozenset(("WHITELISTED", "BLACKLISTED", "GREYLISTED"))
_PEI_TYPES = ("imei-", "imeisv-", "mac-", "eui-")
GOOD_RESULTS = frozenset(("200", "404 ERROR_EQUIPMENT_UNKNOWN"))
MALFORMED_OUTCOME = "HTTP_400"


def pei_of(check: Check) -> str:
    """The PEI an AMF sends for a check (TS 29.571 Pei): ``imeisv-`` with the 14-digit IMEI and
    the Software-Version when the check has one and its IMEI is valid, else ``imei-`` with the
    15 digits (the Luhn digit added to a 14-digit IMEI; a wrong one kept, so the 5G-EIR sees
    the same bad check digit as S13). A text already naming a PEI type is sent as it is;
    anything else (a malformed IMEI) goes out as ``imei-<text>``, which the 5G-EIR refuses."""
    imei = check.imei
    if imei.startswith(_PEI_TYPES):
        return imei
    if is_decimal(imei) and len(imei) in (14, 15):
        body = imei[:14]
        valid = len(imei) == 14 or luhn_check_digit(body) == imei[14]
        if check.sv is not None and valid:
            return f"imeisv-{body}{check.sv}"
        return f"imei-{imei if len(imei) == 15 else body + luhn_check_digit(body)}"
    return f"imei-{imei}"


def expected_of(check: Check) -> str | None:
    """What the 5G-EIR should answer for a check whose S13 expectation is ``check.expected``."""
    if check.expected is None:
        return None
    pei = pei_of(check)
    if pei.startswith("imei-") and not (len(pei) == 20 and is_decimal(pei[5:])):
        return MALFORMED_OUTCOME  # 400 MANDATORY_QUERY_PARAM_INCORRECT
    return check.expected


def query_of(check: Check) -> str:
    query = f"pei={quote(pei_of(check), safe='-')}"
    if check.imsi is not None:
        query += f"&supi=imsi-{check.imsi}"
    return f"{EQUIPMENT_STATUS_PATH}?{query}"


@dataclass(frozen=True, slots=True)
class _Prepared:
    check: Check  # with the N5g-eir expectation
    block: bytes  # the request's HPACK header block


def outcome_of_response(status: int, body: bytes) -> tuple[str, str]:
    """(result key, outcome) of a GetEquipmentStatus response."""
    document: Any = None
    with contextlib.suppress(ValueError):
        document = json.loads(body) if body else None
    if not isinstance(document, dict):
        document = {}
    if status == 200:
        name = document.get("status")
        return "200", name if name in _STATUS_NAMES else "HTTP_200"
    cause = document.get("cause")
    result = f"{status} {cause}" if isinstance(cause, str) and cause else str(status)
    if status == 404 and cause == "ERROR_EQUIPMENT_UNKNOWN":
        return result, OUTCOME_UNKNOWN
    return result, f"HTTP_{status}"


class _Protocol(asyncio.Protocol):
    """Feeds the session and hands its events to the run."""

    def __init__(self, run: AmfSimulation, session: Http2ClientSession) -> None:
        self.run = run
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.conn: _AmfConnection | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.why_closed = "connection closed by the peer"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != ALPN_H2:
            self.ready.set_exception(ConnectionError("the server did not select ALPN h2"))
            transport.close()
            return
        self.session.initiate()
        transport.write(self.session.data_to_send())

    def data_received(self, data: bytes) -> None:
        session = self.session
        events = session.receive(data)
        if not self.ready.done() and session.settings_received:
            self.ready.set_result(None)
        conn = self.conn
        if conn is not None:
            self.run._on_events(conn, events)
        elif any(isinstance(e, ConnectionTerminated) for e in events):
            if not self.ready.done():
                self.ready.set_exception(ConnectionError("the server refused the connection"))
        self.flush()

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if exc is not None:
            self.why_closed = f"connection closed: {exc}"
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.why_closed))
        if self.conn is not None:
            self.run._connection_closed(self.conn, f"AMF {self.conn.index + 1}: {self.why_closed}")


class _AmfConnection(Link):
    __slots__ = ("protocol", "session")

    def __init__(self, index: int, protocol: _Protocol) -> None:
        super().__init__(index)
        self.protocol = protocol
        self.session = protocol.session


class AmfSimulation(LoadRun[_AmfConnection]):
    """One run of simulated AMFs."""

    good_results = GOOD_RESULTS

    def __init__(self, settings: SimulatorSettings, checks: Sequence[Check]) -> None:
        super().__init__(settings, checks)
        scheme = b"https" if settings.transport == "tls" else b"http"
        authority = f"{settings.tls_server_name or settings.host}:{settings.port}".encode()
        self._prepared: list[_Prepared] = []
        blocks: dict[str, bytes] = {}
        for check in self.checks:
            path = query_of(check)
            block = blocks.get(path)
            if block is None:
                block = blocks[path] = request_block(
                    b"GET", scheme, authority, path.encode("ascii"),
                    (b"user-agent", USER_AGENT), (b"accept", ACCEPT))
            expected = expected_of(check)
            prepared = check if expected == check.expected else replace(check, expected=expected)
            self._prepared.append(_Prepared(prepared, block))
        self._verify = settings.verify and any(p.check.expected is not None
                                               for p in self._prepared)
        self._answers_in = 0
        self._names: dict[tuple[int, bytes], tuple[str, str]] = {}

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.transport != "tls":
            return None
        context = client_ssl_context(s.tls_ca, s.tls_cert, s.tls_key, check_hostname=s.tls_verify)
        context.set_alpn_protocols([ALPN_H2])
        return context

    async def _connect(self, index: int) -> _AmfConnection:
        s = self.settings
        loop = asyncio.get_running_loop()
        context = self._ssl_context()
        session = Http2ClientSession()
        protocol = _Protocol(self, session)
        server_name = (s.tls_server_name or s.host) if context is not None else None
        async with asyncio.timeout(s.connect_timeout):
            await loop.create_connection(lambda: protocol, s.host, s.port, ssl=context,
                                         server_hostname=server_name)
        try:
            async with asyncio.timeout(s.connect_timeout):
                await asyncio.shield(protocol.ready)
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        conn = _AmfConnection(index, protocol)
        protocol.conn = conn
        return conn

    async def _close(self, conn: _AmfConnection) -> None:
        protocol = conn.protocol
        if protocol.transport is None:
            return
        conn.session.close()
        protocol.flush()
        protocol.transport.close()

    def _flush(self, conn: _AmfConnection) -> None:
        conn.protocol.flush()

    def _unmatched(self) -> int:
        return self._answers_in - (self.stats.answered + self.stats.late)

    def _send(self, conn: _AmfConnection, seq: int, started: float) -> bool:
        index = seq % len(self._prepared)
        prepared = self._prepared[index]
        try:
            stream_id = conn.session.request(prepared.block)
        except ConnectionError:
            self.stats.send_errors += 1
            return False
        conn.outstanding[stream_id] = Outstanding(started, index, prepared.check)
        self.stats.sent += 1
        self.stats.categories[prepared.check.category] += 1
        return True

    def _on_events(self, conn: _AmfConnection,
                   events: list[ResponseReceived | StreamReset | ConnectionTerminated]) -> None:
        now = time.perf_counter()
        for event in events:
            if type(event) is ResponseReceived:
                self._answers_in += 1
                request = conn.outstanding.pop(event.stream_id, None)
                if request is None:
                    self._late(conn, event.stream_id)
                    continue
                key = (event.status, event.body)
                named = self._names.get(key)
                if named is None:
                    named = outcome_of_response(event.status, event.body)
                    if len(self._names) < 256:
                        self._names[key] = named
                self._answered(conn, request, named[0], named[1], now)
            elif type(event) is StreamReset:
                # Refused (past the limit, or above a GOAWAY's last stream): never processed.
                if conn.outstanding.pop(event.stream_id, None) is not None:
                    self.stats.lost += 1
            else:
                assert isinstance(event, ConnectionTerminated)
                conn.protocol.why_closed = (
                    f"the EIR sent {event.reason} (last stream {event.last_stream_id})"
                    if event.by_peer else f"HTTP/2 error of the EIR: {event.reason}"
                )
                if conn.alive:
                    conn.alive = False  # no new streams; those in flight are still answered
                    if not self._closing and not self._done.done():
                        self.cut_short.append(f"AMF {conn.index + 1}: {conn.protocol.why_closed}")
                    self._check_done()
