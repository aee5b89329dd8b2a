"""RFC 9113 rules of the sans-IO session, frame by frame (raw frames in, frames out)."""

from __future__ import annotations

import json
import struct
import sys
from collections import Counter

import hpack
import pytest

from gateway.n5g_eir.frames import (
    ACK,
    END_HEADERS,
    END_STREAM,
    HEADER,
    HEADER_SIZE,
    PADDED,
    PREFACE,
    PRIORITY_FLAG,
    ErrorCode,
    FrameType,
    Setting,
    frame,
    settings_frame,
    window_update_frame,
)
from gateway.n5g_eir.hpack import encode_headers
from gateway.n5g_eir.http2 import EMPTY_FRAMES, Http2Session, RequestReceived
from gateway.n5g_eir.problem import Response
from gateway.n5g_eir.settings import N5gEirSettings

PATH = b"/n5g-eir-eic/v1/equipment-status?pei=imei-352099001761481"
GET = encode_headers([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"eir"),
                      (b":path", PATH)])
RESPONSE = Response(200, b"application/json", b'{"status":"WHITELISTED"}')


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        high, low, kind, flags, stream_id = HEADER.unpack_from(data, pos)
        length = (high << 8) | low
        out.append((kind, flags, stream_id, data[pos + HEADER_SIZE:pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    return out


def session(settings: N5gEirSettings | None = None,
            client_settings: dict[Setting, int] | None = None) -> Http2Session:
    s = Http2Session(settings or N5gEirSettings())
    s.initiate()
    # The client's preface, its SETTINGS and its ACK of ours (§3.4, §6.5.3).
    assert s.receive(PREFACE + settings_frame(client_settings or {})
                     + frame(FrameType.SETTINGS, ACK, 0)) == []
    sent = frames(s.data_to_send())
    assert sent[0][0] == FrameType.SETTINGS and sent[-1][:2] == (FrameType.SETTINGS, ACK)
    return s


def goaway_code(s: Http2Session) -> int:
    kind, _, _, payload = frames(s.data_to_send())[-1]
    assert kind == FrameType.GOAWAY and s.closed
    return struct.unpack(">II", payload[:8])[1]


def rst_code(s: Http2Session, stream_id: int) -> int:
    found = [f for f in frames(s.data_to_send()) if f[0] == FrameType.RST_STREAM]
    assert found and found[-1][2] == stream_id and not s.closed
    return struct.unpack(">I", found[-1][3])[0]


def test_no_preface_is_a_connection_error() -> None:
    s = Http2Session(N5gEirSettings())
    s.receive(b"\x16\x03\x01\x02\x00\x01")  # a TLS ClientHello on an h2c port
    assert goaway_code(s) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("pieces", [
    [b"GET /n5g-eir-eic/v1/equipment-status?pei=imei-352099001761481 HTTP/1.1\r\n\r\n"],
    [b"G", b"ET", b" / HTTP/1.1\r\nUpgrade: h2c\r\n"],  # an h2c upgrade (§3.1), in pieces
])
def test_an_http1_request_gets_an_http1_505(pieces: list[bytes]) -> None:
    """An HTTP/1.1 client on an h2c port read our SETTINGS and a GOAWAY as its response
    (curl: "Received HTTP/0.9 when not allowed"). Our preface now waits for the client's
    (§3.4), and an HTTP/1.x request line gets 505 in HTTP/1.1 (§3.4: GOAWAY may be omitted)."""
    s = Http2Session(N5gEirSettings())
    s.initiate()
    assert s.data_to_send() == b""
    for piece in pieces:
        assert s.receive(piece) == []
    head, _, body = s.data_to_send().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 505 HTTP Version Not Supported"
    assert b"content-type: application/problem+json" in lines and b"connection: close" in lines
    assert json.loads(body)["status"] == 505
    assert s.closed and s.answered == [(b"GET", 505)]
    assert s.receive(b"more") == [] and s.data_to_send() == b""


def test_our_preface_waits_for_the_clients() -> None:
    s = Http2Session(N5gEirSettings())
    s.initiate()
    assert s.data_to_send() == b""
    s.receive(PREFACE[:1])  # the client's preface begins: ours goes out
    assert frames(s.data_to_send())[0][0] == FrameType.SETTINGS
    # A client that never sends a byte: SETTINGS before the GOAWAY SETTINGS_TIMEOUT.
    s = Http2Session(N5gEirSettings())
    s.initiate()
    s.tick(0.0)
    s.tick(10.0)
    assert [f[0] for f in frames(s.data_to_send())] == [FrameType.SETTINGS, FrameType.GOAWAY]


def test_preface_may_arrive_byte_by_byte() -> None:
    s = Http2Session(N5gEirSettings())
    for i in range(len(PREFACE)):
        assert s.receive(PREFACE[i:i + 1]) == [] and not s.closed
    s.receive(settings_frame({}) + frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    assert not s.closed


def test_first_frame_must_be_settings() -> None:
    s = Http2Session(N5gEirSettings())
    s.receive(PREFACE + frame(FrameType.PING, 0, 0, b"12345678"))
    assert goaway_code(s) == ErrorCode.PROTOCOL_ERROR


def test_ping_is_answered_with_its_payload() -> None:
    s = session()
    s.receive(frame(FrameType.PING, 0, 0, b"abcdefgh"))
    assert frames(s.data_to_send()) == [(FrameType.PING, ACK, 0, b"abcdefgh")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(FrameType.PING, 0, 1, b"abcdefgh"), ErrorCode.PROTOCOL_ERROR),  # on a stream
        (frame(FrameType.PING, 0, 0, b"abc"), ErrorCode.FRAME_SIZE_ERROR),
        (frame(FrameType.SETTINGS, 0, 0, b"12345"), ErrorCode.FRAME_SIZE_ERROR),
        (frame(FrameType.SETTINGS, ACK, 0, b"123456"), ErrorCode.FRAME_SIZE_ERROR),
        (settings_frame({Setting.INITIAL_WINDOW_SIZE: 2**31}), ErrorCode.FLOW_CONTROL_ERROR),
        (settings_frame({Setting.MAX_FRAME_SIZE: 100}), ErrorCode.PROTOCOL_ERROR),
        (settings_frame({Setting.ENABLE_PUSH: 2}), ErrorCode.PROTOCOL_ERROR),
        (window_update_frame(0, 0), ErrorCode.PROTOCOL_ERROR),
        (window_update_frame(0, 2**31 - 1), ErrorCode.FLOW_CONTROL_ERROR),
        (frame(FrameType.HEADERS, END_HEADERS, 2, GET), ErrorCode.PROTOCOL_ERROR),  # even id
        (frame(FrameType.HEADERS, END_HEADERS, 0, GET), ErrorCode.PROTOCOL_ERROR),
        (frame(FrameType.DATA, 0, 7, b"x"), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (frame(FrameType.RST_STREAM, 0, 9, b"\0\0\0\0"), ErrorCode.PROTOCOL_ERROR),  # idle
        (frame(FrameType.PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\2" + GET),
         ErrorCode.PROTOCOL_ERROR),
        (frame(FrameType.CONTINUATION, END_HEADERS, 1, GET), ErrorCode.PROTOCOL_ERROR),
        (frame(FrameType.HEADERS, END_HEADERS, 1, b"\x80"), ErrorCode.COMPRESSION_ERROR),
        (frame(FrameType.HEADERS, END_HEADERS | PADDED, 1, b"\x09" + GET[:8]),
         ErrorCode.PROTOCOL_ERROR),  # padding longer than the frame
        (frame(FrameType.DATA, 0, 1, b"x" * 16_385), ErrorCode.FRAME_SIZE_ERROR),
        (frame(FrameType.GOAWAY, 0, 0, b"\0\0\0"), ErrorCode.FRAME_SIZE_ERROR),
    ],
)
def test_connection_errors(data: bytes, code: ErrorCode) -> None:
    s = session()
    s.receive(data)
    assert goaway_code(s) == code
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 11, GET)) == []


def test_header_block_interrupted_is_a_connection_error() -> None:
    s = session()
    s.receive(frame(FrameType.HEADERS, 0, 1, GET[:5]) + frame(FrameType.PING, 0, 0, b"x" * 8))
    assert goaway_code(s) == ErrorCode.PROTOCOL_ERROR


def test_continuation_and_padding_and_unknown_frames() -> None:
    s = session()
    data = (frame(0xFA, 0, 0, b"ignored")  # §5.5
            + frame(FrameType.HEADERS, PADDED | END_STREAM, 1, b"\x03" + GET[:7] + b"\0\0\0")
            + frame(FrameType.CONTINUATION, 0, 1, GET[7:20])
            + frame(FrameType.CONTINUATION, END_HEADERS, 1, GET[20:])
            + frame(FrameType.PRIORITY, 0, 3, b"\0\0\0\1\x10"))
    assert s.receive(data) == [RequestReceived(1, b"GET", PATH)]
    assert not s.closed


@pytest.mark.parametrize(
    "fields",
    [
        [(b":method", b"GET"), (b":scheme", b"http")],  # no :path
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"")],
        [(b":scheme", b"http"), (b":path", PATH)],  # no :method
        [(b":method", b""), (b":scheme", b"http"), (b":path", PATH)],  # an empty :method
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b":path", PATH)],
        [(b":method", b"GET"), (b"accept", b"*/*"), (b":scheme", b"http"), (b":path", PATH)],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b":status", b"200")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"Accept", b"x")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"connection", b"x")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"te", b"gzip")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"x", b"a\nb")],
        # §8.2.1: names without SP, controls, a colon past the first octet or octets above
        # 0x7E; values without SP or HTAB at either end.
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"x y", b"1")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"x:y", b"1")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"\xe9t\xe9", b"1")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"x\x7f", b"1")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"x\tz", b"1")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"accept", b" */*")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"accept", b"*/*\t")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH + b" ")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH),
         (b"content-length", b"1")],  # and no body
        # §8.3.1: a Host naming another entity than :authority (it was served).
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"eir"), (b":path", PATH),
         (b"host", b"other")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"eir:443"),
         (b":path", PATH), (b"host", b"eir:8443")],
    ],
)
def test_malformed_requests_are_stream_errors(fields: list[tuple[bytes, bytes]]) -> None:
    s = session()
    # A valid request first: its fields are remembered as checked, which must not let the
    # same fields through out of order or twice.
    warm = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH), (b"accept", b"*/*")]
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1,
                           encode_headers(warm))) == [RequestReceived(1, b"GET", PATH)]
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3,
                           encode_headers(fields))) == []
    assert rst_code(s, 3) == ErrorCode.PROTOCOL_ERROR
    # The connection carries on.
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 5, GET)) == [
        RequestReceived(5, b"GET", PATH)]


@pytest.mark.parametrize("flags", [0, PADDED])
def test_a_stream_that_depends_on_itself_is_a_stream_error(flags: int) -> None:
    """RFC 9113 §5.3.1: a stream cannot depend on itself, in a PRIORITY frame or a HEADERS
    frame's priority fields: a stream error PROTOCOL_ERROR; the header block is still
    decoded (the HPACK context follows every block) and the connection carries on."""
    s = session()
    s.receive(frame(FrameType.PRIORITY, 0, 3, struct.pack(">IB", 3, 16)))
    assert rst_code(s, 3) == ErrorCode.PROTOCOL_ERROR
    indexing = bytes([0x40 | 58, 3]) + b"one"  # user-agent, added to the dynamic table
    pad = b"\x02" if flags else b""
    payload = pad + struct.pack(">IB", 0x80000000 | 5, 16) + GET + indexing + (
        b"\0\0" if flags else b"")
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG | flags,
                           5, payload)) == []
    assert rst_code(s, 5) == ErrorCode.PROTOCOL_ERROR
    # Depending on another stream is fine; and the table holds the user-agent of stream 5.
    block = struct.pack(">IB", 5, 16) + GET + bytes([0x80 | 62])
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 7,
                           block)) == [RequestReceived(7, b"GET", PATH)]
    assert not s.closed


def test_body_and_trailers_then_request() -> None:
    s = session()
    received = s.receive(frame(FrameType.HEADERS, END_HEADERS, 1, GET)
                         + frame(FrameType.DATA, 0, 1, b"abc")
                         + frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1,
                                 encode_headers([(b"x-trailer", b"1")])))
    assert received == [RequestReceived(1, b"GET", PATH)]
    updates = [f for f in frames(s.data_to_send()) if f[0] == FrameType.WINDOW_UPDATE]
    assert [(f[2], struct.unpack(">I", f[3])[0]) for f in updates] == [(0, 3), (1, 3)]


def test_data_after_end_stream_and_on_closed_stream() -> None:
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    s.data_to_send()
    s.receive(frame(FrameType.DATA, 0, 1, b"x"))
    assert rst_code(s, 1) == ErrorCode.STREAM_CLOSED



def test_headers_on_a_half_closed_stream_is_stream_closed() -> None:
    """§5.1: a stream the client ended (half-closed remote), still waiting for its answer,
    takes no more HEADERS: a stream error STREAM_CLOSED (trailers without END_STREAM on an
    open one: PROTOCOL_ERROR)."""
    s = session()
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET)) == [
        RequestReceived(1, b"GET", PATH)]  # not answered yet
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1,
                    encode_headers([(b"x-trailer", b"1")])))
    assert rst_code(s, 1) == ErrorCode.STREAM_CLOSED
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS, 3, GET)) == []
    s.receive(frame(FrameType.HEADERS, END_HEADERS, 3, encode_headers([(b"x-trailer", b"1")])))
    assert rst_code(s, 3) == ErrorCode.PROTOCOL_ERROR


def test_stream_window_overflow_is_a_stream_error() -> None:
    s = session(N5gEirSettings(initial_window_bytes=10))
    s.receive(frame(FrameType.HEADERS, END_HEADERS, 1, GET) + frame(FrameType.DATA, 0, 1,
                                                                     b"x" * 11))
    assert rst_code(s, 1) == ErrorCode.FLOW_CONTROL_ERROR


def test_response_waits_for_windows_and_honours_peer_settings() -> None:
    s = session(client_settings={Setting.INITIAL_WINDOW_SIZE: 5, Setting.HEADER_TABLE_SIZE: 0})
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    assert s.respond(1, RESPONSE)
    sent = frames(s.data_to_send())
    assert [f[0] for f in sent] == [FrameType.HEADERS, FrameType.DATA]
    assert sent[0][3][:1] == b"\x20"  # RFC 7541 §6.3 table size update to 0 first
    assert sent[1][3] == RESPONSE.body[:5] and not sent[1][1] & END_STREAM
    s.receive(settings_frame({Setting.INITIAL_WINDOW_SIZE: 100}))  # §6.9.2: +95 on stream 1
    sent = frames(s.data_to_send())
    data = [f for f in sent if f[0] == FrameType.DATA]
    assert data[0][3] == RESPONSE.body[5:] and data[0][1] & END_STREAM
    assert not s.respond(1, RESPONSE)  # the stream is closed now


def _waiting_streams(n: int) -> Http2Session:
    """A session with ``n`` responses queued behind stream windows of 0 (the client's
    SETTINGS_INITIAL_WINDOW_SIZE), its connection window open."""
    s = session(client_settings={Setting.INITIAL_WINDOW_SIZE: 0})
    for i in range(n):
        s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, GET))
        assert s.respond(2 * i + 1, RESPONSE)
    assert [f[0] for f in frames(s.data_to_send())] == [FrameType.HEADERS] * n
    return s


@pytest.mark.parametrize("ending", [
    frame(FrameType.DATA, END_STREAM, 1, b"body"),
    frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, encode_headers([(b"x-trailer", b"1")])),
], ids=["data", "trailers"])
def test_a_request_answered_431_before_it_ended_is_not_handed_over(ending: bytes) -> None:
    """A header list past the limit is answered 431 at once; if that answer waits for the
    client's window, the request's later END_STREAM (DATA or trailers) must not make it a
    request: it became one with an empty method and path, was handled (404), and a second
    HEADERS went out on the stream."""
    s = session(N5gEirSettings(max_header_list_bytes=1024),
                client_settings={Setting.INITIAL_WINDOW_SIZE: 0})
    big = encode_headers([(b":method", b"GET"), (b":scheme", b"http"), (b":path", PATH),
                          (b"x-big", b"a" * 2000)])
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS, 1, big)) == []
    [(kind, flags, _, _)] = frames(s.data_to_send())
    assert kind == FrameType.HEADERS and not flags & END_STREAM  # 431, its body waiting
    assert s.receive(ending) == []
    assert not [f for f in frames(s.data_to_send()) if f[0] == FrameType.HEADERS]
    s.receive(settings_frame({Setting.INITIAL_WINDOW_SIZE: 65_535}))
    sent = [f for f in frames(s.data_to_send()) if f[0] != FrameType.SETTINGS]
    assert [(f[0], f[1] & END_STREAM) for f in sent] == [(FrameType.DATA, END_STREAM)]
    assert b"431" in sent[0][3] and not s.closed


def test_settings_values_apply_in_order() -> None:
    """§6.9.2, §6.5.3: a frame's INITIAL_WINDOW_SIZE values apply in order: the last stays,
    and the windows overflow if any value takes one past 2^31-1, even if a later one brings it
    back."""
    s = _waiting_streams(2)
    s.receive(frame(FrameType.SETTINGS, 0, 0, struct.pack(
        ">HIHI", Setting.INITIAL_WINDOW_SIZE, 3, Setting.INITIAL_WINDOW_SIZE, 0)))
    assert [f[0] for f in frames(s.data_to_send())] == [FrameType.SETTINGS]  # the ACK only
    s.receive(frame(FrameType.SETTINGS, 0, 0, struct.pack(
        ">HIHI", Setting.INITIAL_WINDOW_SIZE, 0, Setting.INITIAL_WINDOW_SIZE, 3)))
    data = [(f[2], f[3]) for f in frames(s.data_to_send()) if f[0] == FrameType.DATA]
    assert data == [(1, RESPONSE.body[:3]), (3, RESPONSE.body[:3])]
    peak = struct.pack(">HIHI", Setting.INITIAL_WINDOW_SIZE, 2**31 - 1,
                       Setting.INITIAL_WINDOW_SIZE, 0)
    s.receive(frame(FrameType.SETTINGS, 0, 0, peak))  # every window at most 0 + 2^31-1 - 3
    assert not s.closed
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 5, GET)  # no answer yet
              + window_update_frame(5, 1) + frame(FrameType.SETTINGS, 0, 0, peak))
    assert goaway_code(s) == ErrorCode.FLOW_CONTROL_ERROR  # stream 5: 1 + 2^31-1 at the peak


@pytest.mark.skipif(str(sys.modules[Http2Session.__module__].__file__).endswith(".so"),
                    reason="counts Python calls: the compiled session makes none the profiler "
                           "sees (the pure Python stage of make test runs it)")
def test_window_updates_do_not_walk_every_waiting_stream() -> None:
    """Work per WINDOW_UPDATE and per SETTINGS value is bounded, not a walk of every stream
    waiting for its window: 1,000 WINDOW_UPDATE(0, 1) made 128,000 body sends, and a SETTINGS
    frame of 2,000 values 256,000 window updates (a 256 KB read of WINDOW_UPDATE(0, 1) held the
    event loop 0.6 s, compiled)."""
    s = _waiting_streams(128)
    calls: Counter[str] = Counter()

    def profile(frame_: object, event: str, arg: object) -> None:
        if event == "call":
            calls[frame_.f_code.co_name] += 1  # type: ignore[attr-defined]

    flood = (window_update_frame(0, 1) * 1000
             + frame(FrameType.SETTINGS, 0, 0,
                     struct.pack(">HI", Setting.INITIAL_WINDOW_SIZE, 0) * 2000))
    sys.setprofile(profile)
    try:
        s.receive(flood)
    finally:
        sys.setprofile(None)
    assert calls["_send_body"] == 0, calls
    assert calls["_on_window_update"] == 1000 and calls["_on_settings"] == 1
    assert sum(calls.values()) < 20_000, calls.most_common(5)
    assert frames(s.data_to_send()) == [(FrameType.SETTINGS, ACK, 0, b"")]


def test_responses_share_the_connection_window() -> None:
    """Each whole-body DATA frame takes from the connection window (§6.9.1): past 65,535
    octets the next body waits, split, for the client's WINDOW_UPDATE on stream 0."""
    s = session()
    big = Response(200, b"application/json", b"x" * 10_000)
    for n in range(7):
        s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 2 * n + 1, GET))
        assert s.respond(2 * n + 1, big)
    data = [f for f in frames(s.data_to_send()) if f[0] == FrameType.DATA]
    assert sum(len(f[3]) for f in data) == 65_535
    assert [bool(f[1] & END_STREAM) for f in data] == [True] * 6 + [False]
    assert [f[2] for f in data] == [1, 3, 5, 7, 9, 11, 13]
    s.receive(window_update_frame(0, 10_000))
    rest = [f for f in frames(s.data_to_send()) if f[0] == FrameType.DATA]
    assert [(f[2], len(f[3]), bool(f[1] & END_STREAM)) for f in rest] == [(13, 4_465, True)]


def test_a_response_to_head_has_no_content() -> None:
    """RFC 9110 §9.3.2: the server MUST NOT send content in a response to HEAD (nghttp2 resets
    a stream whose HEAD response has DATA). Whatever the status, no DATA and no
    Content-Length (§8.6: only the length GET's response would have)."""
    s = session(client_settings={Setting.HEADER_TABLE_SIZE: 0})
    head = encode_headers([(b":method", b"HEAD"), (b":scheme", b"http"), (b":path", PATH)])
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, head)) == [
        RequestReceived(1, b"HEAD", PATH)]
    problem = Response(405, b"application/problem+json", b'{"status":405}',
                       ((b"allow", b"GET"),))
    assert s.respond(1, problem)
    [(kind, flags, stream_id, block)] = frames(s.data_to_send())
    assert (kind, stream_id) == (FrameType.HEADERS, 1) and flags & END_STREAM
    decoder = hpack.Decoder()
    assert decoder.decode(block, raw=True) == [
        (b":status", b"405"), (b"content-type", b"application/problem+json"), (b"allow", b"GET")]
    assert decoder.header_table.maxsize == 0  # the size update owed went with it
    # The stream is closed: the next GET is answered as usual, with its content.
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3, GET)) == [
        RequestReceived(3, b"GET", PATH)]
    assert s.respond(3, RESPONSE)
    assert [f[0] for f in frames(s.data_to_send())] == [FrameType.HEADERS, FrameType.DATA]


def test_reset_by_the_client_drops_the_response() -> None:
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET)
              + frame(FrameType.RST_STREAM, 0, 1, struct.pack(">I", ErrorCode.CANCEL)))
    assert not s.respond(1, RESPONSE)
    # §5.1 closed: a frame other than PRIORITY after the client's RST_STREAM is a stream error
    # STREAM_CLOSED (it was ignored); once we reset the stream, what follows is ignored, its
    # bytes given back to the connection window.
    s.receive(window_update_frame(1, 10) + frame(FrameType.DATA, 0, 1, b"late"))
    sent = frames(s.data_to_send())
    assert not s.closed and [(f[0], f[2]) for f in sent] == [
        (FrameType.RST_STREAM, 1), (FrameType.WINDOW_UPDATE, 0)]
    assert struct.unpack(">I", sent[0][3])[0] == ErrorCode.STREAM_CLOSED


@pytest.mark.parametrize("late", [
    frame(FrameType.DATA, 0, 1, b"x"),
    frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, encode_headers([(b"x-late", b"1")])),
], ids=["DATA", "HEADERS"])
def test_data_or_headers_on_a_stream_both_sides_ended_is_a_connection_error(
    late: bytes,
) -> None:
    """§5.1 closed: "An endpoint that receives any frames after receiving a frame with the
    END_STREAM flag set MUST treat that as a connection error of type STREAM_CLOSED" (DATA was
    a stream error); WINDOW_UPDATE, RST_STREAM and PRIORITY, which may cross our END_STREAM,
    are ignored."""
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    assert s.respond(1, RESPONSE)
    s.data_to_send()
    s.receive(window_update_frame(1, 10) + frame(FrameType.PRIORITY, 0, 1, b"\0\0\0\0\x10")
              + frame(FrameType.RST_STREAM, 0, 1, struct.pack(">I", ErrorCode.CANCEL)))
    assert not s.closed and s.data_to_send() == b""
    s.receive(late)
    assert goaway_code(s) == ErrorCode.STREAM_CLOSED


@pytest.mark.parametrize("late", [
    frame(FrameType.DATA, 0, 1, b"x"),
    frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, encode_headers([(b"x-late", b"1")])),
    window_update_frame(1, 1),
], ids=["DATA", "HEADERS", "WINDOW_UPDATE"])
def test_a_frame_after_the_clients_rst_stream_is_a_stream_error(late: bytes) -> None:
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS, 1, GET)
              + frame(FrameType.RST_STREAM, 0, 1, struct.pack(">I", ErrorCode.CANCEL)))
    s.data_to_send()
    s.receive(frame(FrameType.PRIORITY, 0, 1, b"\0\0\0\0\x10"))  # PRIORITY: allowed
    assert s.data_to_send() == b""
    s.receive(late)
    assert rst_code(s, 1) == ErrorCode.STREAM_CLOSED
    s.receive(late + frame(FrameType.RST_STREAM, 0, 1, struct.pack(">I", ErrorCode.CANCEL)))
    assert FrameType.RST_STREAM not in [f[0] for f in frames(s.data_to_send())]  # once only
    # The connection carries on, its HPACK context intact.
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3, GET)) == [
        RequestReceived(3, b"GET", PATH)]


def test_frames_after_our_rst_stream_are_ignored() -> None:
    """§5.1: frames the client sent before it saw our RST_STREAM are ignored (DATA counted
    towards the connection window, and given back)."""
    s = session(N5gEirSettings(max_concurrent_streams=1))
    s.receive(frame(FrameType.HEADERS, END_HEADERS, 1, GET)
              + frame(FrameType.HEADERS, END_HEADERS, 3, GET))
    assert rst_code(s, 3) == ErrorCode.REFUSED_STREAM
    s.receive(frame(FrameType.DATA, 0, 3, b"body") + window_update_frame(3, 5)
              + frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3,
                      encode_headers([(b"x-trailer", b"1")])))
    assert not s.closed and [(f[0], f[2]) for f in frames(s.data_to_send())] == [
        (FrameType.WINDOW_UPDATE, 0)]


def test_goaway_from_the_client_closes_once_answered() -> None:
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET)
              + frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
    assert not s.closed
    s.respond(1, RESPONSE)
    assert s.closed


def test_shutdown_sends_goaway_no_error_with_the_last_stream() -> None:
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 5, GET))
    s.data_to_send()
    s.shutdown()
    kind, _, _, payload = frames(s.data_to_send())[0]
    assert kind == FrameType.GOAWAY and struct.unpack(">II", payload) == (5, 0)


def test_requests_reset_in_the_same_read_are_not_handed_over() -> None:
    """CVE-2023-44487 (rapid reset): HEADERS and RST_STREAM together. Such a request can never
    be answered; handed over, each was checked, and as each reset stream freed its place at
    once, SETTINGS_MAX_CONCURRENT_STREAMS (2 here) did not bound how many one read held."""
    s = session(N5gEirSettings(max_concurrent_streams=2))
    cancel = struct.pack(">I", ErrorCode.CANCEL)
    flood = b"".join(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, sid, GET)
                     + frame(FrameType.RST_STREAM, 0, sid, cancel) for sid in range(1, 2001, 2))
    last = frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 2001, GET)
    assert s.receive(flood + last) == [RequestReceived(2001, b"GET", PATH)]
    assert s.data_to_send() == b"" and not s.closed
    # A request reset in a later read was handed over already: its response is dropped.
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 2003, GET))
    s.receive(frame(FrameType.RST_STREAM, 0, 2003, cancel))
    assert not s.respond(2003, RESPONSE) and s.respond(2001, RESPONSE)



def _empty_frames(kind: str, count: int) -> bytes:
    if kind == "CONTINUATION":  # after a HEADERS that leaves its block open
        return frame(FrameType.HEADERS, END_STREAM, 1, GET[:4]) + frame(
            FrameType.CONTINUATION, 0, 1) * count
    return frame(FrameType.HEADERS, END_HEADERS, 1, GET) + frame(FrameType.DATA, 0, 1) * count


@pytest.mark.parametrize("kind", ["CONTINUATION", "DATA"])
def test_a_run_of_frames_without_content_is_enhance_your_calm(kind: str) -> None:
    """CVE-2019-9518, and the CVE-2024-27316 class: empty CONTINUATION frames never grow the
    header block, empty DATA frames without END_STREAM are never answered; a million of either
    were read one by one, the connection kept."""
    s = session()
    s.receive(_empty_frames(kind, EMPTY_FRAMES + 1))
    assert goaway_code(s) == ErrorCode.ENHANCE_YOUR_CALM
    # Up to the limit, runs parted by a frame with content: the request is served.
    s = session()
    if kind == "CONTINUATION":
        rest = (frame(FrameType.CONTINUATION, 0, 1, GET[4:5])
                + frame(FrameType.CONTINUATION, 0, 1) * EMPTY_FRAMES
                + frame(FrameType.CONTINUATION, END_HEADERS, 1, GET[5:]))
    else:
        rest = (frame(FrameType.DATA, 0, 1, b"x") + frame(FrameType.DATA, 0, 1) * EMPTY_FRAMES
                + frame(FrameType.DATA, END_STREAM, 1))
    assert s.receive(_empty_frames(kind, EMPTY_FRAMES) + rest) == [
        RequestReceived(1, b"GET", PATH)]
    assert not s.closed


def test_headers_opening_a_stream_below_the_last_one_is_protocol_error() -> None:
    """§5.1.1 (h2spec 5.1.1/2): a stream id lower than one the client opened, never used,
    is an unexpected identifier: PROTOCOL_ERROR (it was STREAM_CLOSED, §5.1's answer for a
    stream both sides ended, which stream 5 still gets)."""
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 5, GET))
    assert s.respond(5, RESPONSE)
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3, GET))
    assert goaway_code(s) == ErrorCode.PROTOCOL_ERROR
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 5, GET))
    assert s.respond(5, RESPONSE)
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 5, GET))
    assert goaway_code(s) == ErrorCode.STREAM_CLOSED
    # Streams skipped in the middle; past the 256 gaps remembered, an older one counts as
    # closed, as before.
    s = session()
    for stream_id in range(3, 4 * 300, 4):  # 1, 5, 9, ... skipped
        s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream_id, GET))
        assert s.respond(stream_id, RESPONSE)
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 4 * 290 + 1, GET))
    assert goaway_code(s) == ErrorCode.PROTOCOL_ERROR
    s = session()
    for stream_id in range(3, 4 * 300, 4):
        s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream_id, GET))
        assert s.respond(stream_id, RESPONSE)
    s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1, GET))
    assert goaway_code(s) == ErrorCode.STREAM_CLOSED


@pytest.mark.parametrize("field", [
    (b"X-Upper", b"1"), (b"connection", b"close"), (b"x-bad", b" padded"), (b"te", b"gzip"),
    (b":path", b"/"),
])
def test_malformed_trailers_are_a_stream_error(field: tuple[bytes, bytes]) -> None:
    """§8.2.1, §8.2.2 hold for every field section, trailers included (§8.1): only a
    pseudo-header in trailers was refused, the others served."""
    s = session()
    s.receive(frame(FrameType.HEADERS, END_HEADERS, 1, GET))
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1,
                           encode_headers([field]))) == []
    assert rst_code(s, 1) == ErrorCode.PROTOCOL_ERROR
    # A well-formed trailer section ends the request.
    s.receive(frame(FrameType.HEADERS, END_HEADERS, 3, GET))
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3,
                           encode_headers([(b"x-trailer", b"1")]))) == [
        RequestReceived(3, b"GET", PATH)]


@pytest.mark.parametrize(("authority", "host"), [
    (b"eir", b"eir"), (b"EIR.example", b"eir.example"), (b"eir", b"eir:80"),
    (b"eir:8080", b"eir:8080"),
])
def test_a_host_naming_the_same_entity_as_authority_is_served(authority: bytes,
                                                              host: bytes) -> None:
    s = session()
    fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
              (b":path", PATH), (b"host", host)]
    assert s.receive(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1,
                           encode_headers(fields))) == [RequestReceived(1, b"GET", PATH)]
