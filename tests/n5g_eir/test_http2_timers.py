"""Graceful shutdown in two GOAWAYs (RFC 9113 §6.8), the idle timeout and PING liveness (§6.7):
the sans-IO session with a fake clock, then the live gateway over loopback."""

from __future__ import annotations

import asyncio
import struct

from gateway.n5g_eir.frames import (
    ACK,
    END_HEADERS,
    END_STREAM,
    PREFACE,
    ErrorCode,
    FrameType,
    Setting,
    frame,
    settings_frame,
)
from gateway.n5g_eir.http2 import PING_DRAIN, PING_LIVENESS, SETTINGS_ACK_WAIT, Http2Session
from gateway.n5g_eir.http2_client import ConnectionTerminated, Http2ClientSession
from gateway.n5g_eir.settings import N5gEirSettings
from tests.e2e.conftest import StartGateway
from tests.n5g_eir.test_http2_rules import GET, RESPONSE, frames, session

MAX_STREAM = 2**31 - 1


def _goaway(payload: bytes) -> tuple[int, int]:
    last, code = struct.unpack(">II", payload[:8])
    return last, code


def test_graceful_shutdown_serves_what_the_client_sent_before_it_saw_the_first_goaway() -> None:
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    s.begin_shutdown(100.0)
    out = frames(s.data_to_send())
    assert [(f[0], f[2]) for f in out] == [(FrameType.GOAWAY, 0), (FrameType.PING, 0)]
    assert _goaway(out[0][3]) == (MAX_STREAM, 0) and out[1][3] == PING_DRAIN
    # Stream 3 crossed our GOAWAY on the wire: still a request.
    requests = s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3, GET))
    assert [r.stream_id for r in requests] == [3]
    s.receive(frame(FrameType.PING, ACK, 0, PING_DRAIN))
    (kind, _, _, payload), = frames(s.data_to_send())
    assert kind == FrameType.GOAWAY and _goaway(payload) == (3, 0)
    # Past the final GOAWAY a new stream is ignored (no answer, no error), even its DATA.
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS, 5, GET)
                     + frame(FrameType.DATA, END_STREAM, 5, b"x")) == []
    assert not s.closed  # streams 1 and 3 are owed their answers
    assert s.respond(1, RESPONSE) and not s.closed
    assert s.respond(3, RESPONSE) and s.closed
    kinds = [f[0] for f in frames(s.data_to_send())]
    assert FrameType.RST_STREAM not in kinds and FrameType.GOAWAY not in kinds


def test_final_goaway_without_the_ping_ack_after_a_second() -> None:
    s = session()
    s.tick(10.0)
    s.begin_shutdown(10.0)
    s.data_to_send()
    s.tick(10.5)
    assert s.data_to_send() == b""
    s.tick(11.0)
    (kind, _, _, payload), = frames(s.data_to_send())
    assert kind == FrameType.GOAWAY and _goaway(payload) == (0, 0)
    assert s.closed


def test_idle_timeout_counts_from_the_last_request_and_not_while_a_stream_is_open() -> None:
    s = session(N5gEirSettings(idle_timeout_seconds=10, ping_interval_seconds=0))
    s.tick(0.0)
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    s.tick(5.0)
    s.tick(14.0)
    s.tick(30.0)  # stream 1 still unanswered: not idle
    assert s.data_to_send() == b"" and s.closing_reason is None
    s.respond(1, RESPONSE)
    s.data_to_send()
    s.tick(39.0)
    assert s.data_to_send() == b""
    s.tick(40.0)
    out = frames(s.data_to_send())
    assert out[0][0] == FrameType.GOAWAY and _goaway(out[0][3]) == (MAX_STREAM, 0)
    assert s.closing_reason == "idle for 10 s"


def test_a_request_the_client_never_finishes_does_not_hold_the_connection() -> None:
    # A stream whose request never ends (HEADERS without END_STREAM, no DATA after) counted
    # as activity: the connection was never idle, held for ever by a client that answers PINGs
    # (up to max_concurrent_streams such streams each). Only streams we owe a response keep
    # it; past the idle timeout the unfinished ones are refused (REFUSED_STREAM: nothing was
    # processed, a client may retry) and the connection shuts down gracefully.
    s = session(N5gEirSettings(idle_timeout_seconds=10, ping_interval_seconds=0))
    s.tick(0.0)
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS, 1, GET)) == []
    _idle_with_stream_1(s, ErrorCode.REFUSED_STREAM)


def _idle_with_stream_1(s: Http2Session, code: ErrorCode) -> None:
    """Stream 1 (opened before the tick at 5 s) left as it is: idle at 15 s, the stream reset
    with ``code`` and the graceful shutdown begun; closed once it ends."""
    s.tick(5.0)  # the request seen at this tick
    s.tick(14.0)
    assert s.data_to_send() == b""
    s.tick(15.0)
    out = frames(s.data_to_send())
    assert [(f[0], f[2]) for f in out] == [
        (FrameType.RST_STREAM, 1), (FrameType.GOAWAY, 0), (FrameType.PING, 0)]
    assert struct.unpack(">I", out[0][3])[0] == code
    assert s.closing_reason == "idle for 10 s"
    s.receive(frame(FrameType.PING, ACK, 0, PING_DRAIN))
    s.data_to_send()
    assert s.closed


def test_a_response_the_client_never_opens_a_window_for_does_not_hold_the_connection() -> None:
    # The same with flow control: a client that gives no window (§6.9) leaves the body waiting.
    s = session(N5gEirSettings(idle_timeout_seconds=10, ping_interval_seconds=0),
                {Setting.INITIAL_WINDOW_SIZE: 0})
    s.tick(0.0)
    [request] = s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    assert s.respond(request.stream_id, RESPONSE)
    assert [f[0] for f in frames(s.data_to_send())] == [FrameType.HEADERS]  # no DATA: no window
    _idle_with_stream_1(s, ErrorCode.CANCEL)


def test_liveness_ping_and_a_client_that_never_acknowledges_is_dead() -> None:
    s = session(N5gEirSettings(idle_timeout_seconds=0, ping_interval_seconds=30,
                               ping_timeout_seconds=10))
    s.tick(0.0)
    s.tick(29.0)
    assert s.data_to_send() == b""
    s.tick(30.0)
    (kind, flags, _, payload), = frames(s.data_to_send())
    assert (kind, flags, payload) == (FrameType.PING, 0, PING_LIVENESS)
    s.receive(frame(FrameType.PING, ACK, 0, PING_LIVENESS))
    s.tick(45.0)
    assert not s.dead and s.data_to_send() == b""  # the ACK came: heard at 45 s
    s.tick(75.0)
    assert frames(s.data_to_send())[0][3] == PING_LIVENESS
    s.tick(84.0)
    assert not s.dead
    s.tick(85.0)
    assert s.dead and s.error == "no PING ACK within 10 s"


def test_no_timers_when_switched_off() -> None:
    s = session(N5gEirSettings(idle_timeout_seconds=0, ping_interval_seconds=0))
    for now in (0.0, 1e6, 2e6):
        s.tick(now)
    assert s.data_to_send() == b"" and not s.dead and not s.closed


def test_settings_not_acknowledged_is_a_settings_timeout() -> None:
    """§6.5.3: our SETTINGS unacknowledged after SETTINGS_ACK_WAIT is a connection error
    SETTINGS_TIMEOUT, whatever the other timers: a client that connects and sends nothing (or
    only part of the preface) no longer holds the connection for the idle timeout (600 s)."""
    settings = N5gEirSettings(idle_timeout_seconds=0, ping_interval_seconds=0)
    for opening in (b"", PREFACE[:10], PREFACE + settings_frame({})):
        s = Http2Session(settings)
        s.initiate()
        s.receive(opening)
        s.data_to_send()
        s.tick(100.0)
        s.tick(100.0 + SETTINGS_ACK_WAIT - 0.5)
        assert s.data_to_send() == b"" and not s.closed
        s.tick(100.0 + SETTINGS_ACK_WAIT)
        (kind, _, _, payload), = frames(s.data_to_send())
        assert kind == FrameType.GOAWAY and _goaway(payload) == (0, ErrorCode.SETTINGS_TIMEOUT)
        assert s.closed and s.error == f"HTTP/2 SETTINGS_TIMEOUT: no SETTINGS ACK within " \
                                       f"{SETTINGS_ACK_WAIT:g} s"
    # Acknowledged late, but in time: the connection carries on.
    s = Http2Session(settings)
    s.initiate()
    s.tick(0.0)
    s.receive(PREFACE + settings_frame({}))
    s.tick(SETTINGS_ACK_WAIT - 1)
    s.receive(frame(FrameType.SETTINGS, ACK, 0))
    s.tick(SETTINGS_ACK_WAIT * 10)
    assert not s.closed


# --- the live gateway -------------------------------------------------------------------------

class _Client(asyncio.Protocol):
    """An HTTP/2 client on a raw connection; with ``ack=False`` it never answers PINGs."""

    def __init__(self, ack: bool = True) -> None:
        self.session = Http2ClientSession()
        self.ack = ack
        self.events: list[object] = []
        self.pings = 0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.session.initiate()
        transport.write(self.session.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.pings += sum(1 for f in frames(data) if f[0] == FrameType.PING and not f[1] & ACK)
        self.events += self.session.receive(data)
        out = self.session.data_to_send()
        if out and self.ack and self.transport is not None:
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _connect(gateway: object, ack: bool = True) -> _Client:
    port = next(p for s, _, p in gateway.n5g_eir_sockets if s == "http")  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: _Client(ack), "127.0.0.1", port)
    return client


async def test_gateway_closes_an_idle_connection(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(EIR_N5G_EIR_IDLE_TIMEOUT_SECONDS="1",
                                  EIR_N5G_EIR_PING_INTERVAL_SECONDS="0")
    client = await _connect(gateway)
    await asyncio.wait_for(client.lost, 15)
    goaways = [e for e in client.events if isinstance(e, ConnectionTerminated)]
    assert goaways and goaways[0].error_code == 0 and goaways[0].by_peer


async def test_gateway_drops_a_client_that_does_not_answer_ping(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(EIR_N5G_EIR_IDLE_TIMEOUT_SECONDS="0",
                                  EIR_N5G_EIR_PING_INTERVAL_SECONDS="1",
                                  EIR_N5G_EIR_PING_TIMEOUT_SECONDS="1")
    silent = await _connect(gateway, ack=False)
    alive = await _connect(gateway, ack=True)
    await asyncio.wait_for(silent.lost, 20)
    assert silent.pings >= 1
    # The one that acknowledges stays: pinged, answered, still open.
    for _ in range(100):
        if alive.pings >= 2:
            break
        await asyncio.sleep(0.1)
    assert alive.pings >= 2 and not alive.lost.done()
    assert alive.transport is not None
    alive.transport.close()
