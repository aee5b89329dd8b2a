"""Decision events: RFC 5424 messages field by field, framing, detection, the bounded bus, and
delivery to real receivers (UDP and TCP listeners run here, rsyslog, an HTTP webhook)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncio_dgram
import pytest
from aiohttp import web

from gateway.classify import Classifier
from gateway.events.bus import EventBus, EventsCollector
from gateway.events.detector import EventDetector
from gateway.events.model import DecisionEvent, EventType
from gateway.events.sinks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryFailed,
    SinkStats,
    StreamSyslog,
    UdpSyslog,
    Webhook,
)
from gateway.events.syslog import SyslogFormatter, octet_counted
from gateway.imei import luhn_check_digit
from gateway.lists import ListStore, OperatorLists, make_entry
from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH
from gateway.policy import Policy
from tests.e2e.conftest import StartGateway, connect_mme, start_gateway  # noqa: F401
from tests.n5g_eir.test_server import h2c_client

IMEI = "35209900000018"
SECRET = "webhook-secret-0123456789"
# RFC 5424 §6: HEADER SP STRUCTURED-DATA [SP MSG]
SYSLOG = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<version>1) (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) "
    r"(?P<procid>\S+) (?P<msgid>\S+) (?P<sd>\[(?:[^\]\\]|\\.)*\]) (?P<msg>.*)$"
)
SD_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def event(kind: EventType = EventType.LISTED, **fields: Any) -> DecisionEvent:
    values: dict[str, Any] = dict(
        type=kind, at=1_764_860_400.123456, imei=IMEI, imsi="001010123456789",
        status="BLACKLISTED", reason="blacklisted", origin_host="mme1.example.net",
        interface="s13",
    )
    values.update(fields)
    return DecisionEvent(**values)


def parse_syslog(line: str) -> dict[str, Any]:
    m = SYSLOG.match(line)
    assert m is not None, line
    out: dict[str, Any] = m.groupdict()
    sd = out["sd"][1:-1]
    out["sd_id"] = sd.split(" ", 1)[0]
    out["params"] = {k: re.sub(r"\\(.)", r"\1", v) for k, v in SD_PARAM.findall(sd)}
    return out


def test_rfc5424_message_field_by_field() -> None:
    f = SyslogFormatter("local3", "eir-1.example.net", "eir@32473", mask_imsi=True, procid=4242)
    m = parse_syslog(f.format(event()).decode())
    assert int(m["pri"]) == 19 * 8 + 4  # local3, warning
    assert m["version"] == "1" and m["hostname"] == "eir-1.example.net"
    assert m["timestamp"] == "2025-12-04T15:00:00.123456Z"
    assert m["app"] == "eir-gateway" and m["procid"] == "4242" and m["msgid"] == "listed"
    assert m["sd_id"] == "eir@32473"
    assert m["params"] == {"type": "listed", "imei": IMEI, "imsi": "00101**********",
                           "status": "BLACKLISTED", "reason": "blacklisted",
                           "originHost": "mme1.example.net", "interface": "s13"}
    assert m["msg"] == f"IMEI {IMEI} listed: BLACKLISTED (blacklisted)"
    # Values escaped (§6.3.3), header fields printable ASCII, NILVALUE when empty.
    odd = event(EventType.NEW_IMSI, status="GREYLISTED", origin_host='m"e]\\', imsi=None,
                previous_imsi="001019999999999")
    m = parse_syslog(SyslogFormatter(hostname=" ", mask_imsi=False).format(odd).decode())
    assert m["params"]["originHost"] == 'm"e]\\' and "imsi" not in m["params"]
    assert m["params"]["previousImsi"] == "001019999999999"
    assert m["hostname"] == "-" and int(m["pri"]) == 16 * 8 + 5  # local0, notice


def test_octet_counting() -> None:
    assert octet_counted(b"<13>1 - - - - - -") == b"17 <13>1 - - - - - -"
    assert octet_counted("é".encode()) == b"2 \xc3\xa9"  # octets, not characters


def _decisions(tmp_path: Any) -> tuple[Classifier, ListStore]:
    store = ListStore(tmp_path / "l.sqlite")
    store.add(make_entry("black", "imei", "35209900000026"))
    store.add(make_entry("grey", "imei", "35209900000034"))
    lists = OperatorLists(store)
    lists.reload()
    return Classifier(Policy(), lists=lists), store


async def test_detector(tmp_path: Any) -> None:
    classifier, store = _decisions(tmp_path)
    try:
        detector = EventDetector(EventType, memory=2)

        async def kinds(imei: str, imsi: str | None = None) -> list[str]:
            d = await classifier.classify(imei, imsi)
            return [e.type.value for e in detector.detect(d, "mme", "s13", 0.0)]

        assert await kinds("35209900000026") == ["listed"]  # black
        assert await kinds("35209900000034") == ["listed"]  # grey
        assert await kinds(IMEI, "001010000000001") == []  # white, first IMSI
        assert await kinds(IMEI, "001010000000001") == []  # same IMSI again
        assert await kinds(IMEI, "001010000000002") == ["new_imsi"]  # another
        [ev] = detector.detect(await classifier.classify(IMEI, "001010000000003"), None, "s13", 0)
        assert ev.previous_imsi == "001010000000002" and ev.imsi == "001010000000003"
        # memory 2: two other IMEIs push the first out; its next IMSI is a first sighting.
        await kinds("35209900000042", "001010000000001")
        await kinds("35209900000059", "001010000000001")
        assert await kinds(IMEI, "001010000000009") == []
        only_listed = EventDetector([EventType.LISTED])
        d = await classifier.classify(IMEI, "001010000000005")
        assert only_listed.detect(d, None, "s13", 0.0) == []
    finally:
        store.close()


class SlowSink:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.stats = SinkStats()
        self.fail = fail
        self.release = asyncio.Event()
        self.got: list[DecisionEvent] = []

    async def deliver(self, event: DecisionEvent) -> None:
        await self.release.wait()
        self.got.append(event)
        if self.fail:
            raise DeliveryFailed("refused")

    async def close(self) -> None:
        pass


async def test_bus_never_blocks_and_counts_drops(tmp_path: Any) -> None:
    classifier, store = _decisions(tmp_path)
    try:
        slow, failing = SlowSink("slow"), SlowSink("failing", fail=True)
        bus = EventBus(EventDetector([EventType.LISTED]), [slow, failing], queue_size=10)
        bus.start()
        decision = await classifier.classify("35209900000026")
        for _ in range(100):  # synchronous: the check path never awaits the bus
            bus.on_decision(decision, "mme", "s13")
        assert bus.raised[EventType.LISTED] == 100
        # 10 queued (the first may already be taken by the sink's task), the rest dropped
        assert 89 <= slow.stats.dropped <= 90 and 89 <= failing.stats.dropped <= 90
        slow.release.set()
        failing.release.set()
        await bus.close(grace=5)
        assert slow.stats.delivered == 100 - slow.stats.dropped
        assert failing.stats.failed == 100 - failing.stats.dropped
        families = {m.name: m for m in EventsCollector(bus).collect()}
        dropped = {s.labels["sink"]: s.value for s in families["eir_events_dropped"].samples}
        assert dropped == {"slow": slow.stats.dropped, "failing": failing.stats.dropped}
    finally:
        store.close()


@pytest.fixture
async def udp_listener() -> AsyncIterator[tuple[asyncio_dgram.aio.DatagramServer, int]]:
    server = await asyncio_dgram.bind(("127.0.0.1", 0))
    yield server, server.sockname[1]
    server.close()


async def test_udp_syslog_one_message_per_datagram(
    udp_listener: tuple[asyncio_dgram.aio.DatagramServer, int],
) -> None:
    server, port = udp_listener
    sink = UdpSyslog("127.0.0.1", port, SyslogFormatter(hostname="eir"))
    try:
        for kind in (EventType.LISTED, EventType.CLONE_SUSPECTED):
            await sink.deliver(event(kind))
        for kind in ("listed", "clone_suspected"):
            data, _ = await asyncio.wait_for(server.recv(), 5)
            m = parse_syslog(data.decode())
            assert m["msgid"] == kind and m["params"]["type"] == kind
    finally:
        await sink.close()


class OctetCountedReceiver:
    """A TCP syslog receiver (RFC 6587 octet counting): frames received, connections taken;
    ``per_connection`` messages, then it closes the connection (None: until the sender does)."""

    def __init__(self, per_connection: int | None = None) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.connections = 0
        self.per_connection = per_connection

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        taken = 0
        with contextlib.suppress(asyncio.IncompleteReadError):
            while self.per_connection is None or taken < self.per_connection:
                length = int((await reader.readuntil(b" "))[:-1])
                await self.frames.put(await reader.readexactly(length))
                taken += 1
        writer.close()


async def test_tcp_syslog_octet_counted_and_reconnects() -> None:
    receiver = OctetCountedReceiver()
    frames = receiver.frames
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = StreamSyslog("127.0.0.1", port, SyslogFormatter(hostname="eir"))
    try:
        await sink.deliver(event())
        await sink.deliver(event(EventType.REGISTRY_REPORTED))
        assert parse_syslog((await asyncio.wait_for(frames.get(), 5)).decode())["msgid"] == "listed"
        second = (await asyncio.wait_for(frames.get(), 5)).decode()
        assert parse_syslog(second)["msgid"] == "registry_reported"
        # The receiver drops the connection: the next event goes over a new one.
        assert sink._writer is not None
        sink._writer.transport.abort()
        await asyncio.sleep(0.1)
        await sink.deliver(event(EventType.NEW_IMSI, previous_imsi="001010000000000"))
        third = parse_syslog((await asyncio.wait_for(frames.get(), 5)).decode())
        assert third["msgid"] == "new_imsi" and receiver.connections == 2
    finally:
        await sink.close()
        server.close()
        await server.wait_closed()
    with pytest.raises(DeliveryFailed):
        await StreamSyslog("127.0.0.1", port, SyslogFormatter(), timeout=2).deliver(event())


async def test_tcp_syslog_receiver_closing_loses_no_event() -> None:
    """A receiver that closes the connection (a restart, an idle timeout): the next event is
    written on a new connection, not into the closed one (where the write would succeed and
    the event vanish)."""
    receiver = OctetCountedReceiver(per_connection=1)
    frames = receiver.frames
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = StreamSyslog("127.0.0.1", port, SyslogFormatter(hostname="eir"))
    try:
        for kind in (EventType.LISTED, EventType.CLONE_SUSPECTED, EventType.REGISTRY_REPORTED):
            await sink.deliver(event(kind))
            got = parse_syslog((await asyncio.wait_for(frames.get(), 5)).decode())
            assert got["msgid"] == kind.value
            await asyncio.sleep(0.05)  # the receiver's FIN arrives
        assert receiver.connections == 3 and sink.stats.retries == 0
    finally:
        await sink.close()
        server.close()
        await server.wait_closed()


async def test_webhook_signed_retried_and_bounded() -> None:
    received: list[dict[str, Any]] = []
    answers = [503, 429, 200, 400, 200]
    slow = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers[TIMESTAMP_HEADER]
        expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
        received.append(json.loads(body))
        if request.path == "/slow":
            await slow.wait()
        status = answers.pop(0)
        return web.Response(status=status, headers={"Retry-After": "0"} if status == 429 else {})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/slow", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sink = Webhook(f"http://127.0.0.1:{port}/hook", SECRET, timeout=2, retries=3, backoff=0.01)
    try:
        await sink.deliver(event())  # 503, 429, then 200
        assert len(received) == 3 and sink.stats.retries == 2
        assert received[0]["imsi"] == "00101**********" and received[0]["type"] == "listed"
        with pytest.raises(DeliveryFailed, match="HTTP 400"):  # refused: no retry
            await sink.deliver(event())
        assert len(received) == 4
        answers[:] = [200] * 3
        timed = Webhook(f"http://127.0.0.1:{port}/slow", SECRET, timeout=0.3, retries=1,
                        backoff=0.01)
        with pytest.raises(DeliveryFailed):  # each attempt bounded by the timeout
            await timed.deliver(event())
        await timed.close()
        assert len(received) == 6
    finally:
        slow.set()
        await sink.close()
        await runner.cleanup()


def test_delivered_time_is_the_decision_time() -> None:
    e = event()
    assert datetime.fromisoformat(e.as_json(True)["time"]) == datetime.fromtimestamp(e.at, UTC)


async def test_gateway_raises_events_on_both_interfaces(
    udp_listener: tuple[asyncio_dgram.aio.DatagramServer, int],
    start_gateway: StartGateway,  # noqa: F811
) -> None:
    server, port = udp_listener
    gateway = await start_gateway(EIR_EVENTS_TYPES="listed",
                                  EIR_EVENTS_SYSLOG=f"udp://127.0.0.1:{port}")
    blacklisted = "35693803564380"  # the sample list
    mme = await connect_mme(gateway, origin_host="mme2.example.net")
    try:
        await mme.check(blacklisted, imsi="001010000000001")
    finally:
        await mme.close()
    async with h2c_client(gateway) as amf:
        response = await amf.get(EQUIPMENT_STATUS_PATH, params={
            "pei": f"imei-{blacklisted}{luhn_check_digit(blacklisted)}",
            "supi": "imsi-001010000000002"})
        assert response.json() == {"status": "BLACKLISTED"}
    s13 = parse_syslog((await asyncio.wait_for(server.recv(), 5))[0].decode())
    n5g = parse_syslog((await asyncio.wait_for(server.recv(), 5))[0].decode())
    assert s13["params"]["interface"] == "s13"
    assert s13["params"]["originHost"] == "mme2.example.net"
    assert n5g["params"]["interface"] == "n5g_eir" and "originHost" not in n5g["params"]
    assert n5g["params"]["imsi"] == "00101**********" and n5g["params"]["imei"] == blacklisted
