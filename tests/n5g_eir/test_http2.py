"""The sans-IO HTTP/2 session against h2's client side, in memory (no sockets, no clock)."""

from __future__ import annotations

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.n5g_eir.frames import END_HEADERS, ErrorCode, FrameType, frame, rst_stream_frame
from gateway.n5g_eir.hpack import encode_headers
from gateway.n5g_eir.http2 import Http2Session, RequestReceived
from gateway.n5g_eir.problem import Response
from gateway.n5g_eir.settings import N5gEirSettings

PATH = b"/n5g-eir-eic/v1/equipment-status?pei=imei-352099001761481"
BODY = b'{"status":"WHITELISTED"}'


def pair(settings: N5gEirSettings | None = None,
         client_settings: dict[int, int] | None = None) -> tuple[H2Connection, Http2Session]:
    # The client does not check its own headers, so that tests can send malformed ones.
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None,
                                          validate_outbound_headers=False))
    client.initiate_connection()
    if client_settings:
        client.update_settings(client_settings)
    server = Http2Session(settings or N5gEirSettings())
    server.initiate()
    assert server.receive(client.data_to_send()) == []
    client.receive_data(server.data_to_send())
    server.receive(client.data_to_send())  # SETTINGS ACK
    return client, server


def request_headers(path: bytes = PATH, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"eir"),
            (b":path", path)]


def exchange(client: H2Connection, server: Http2Session) -> list[object]:
    return list(client.receive_data(server.data_to_send()))


def test_get_and_its_response() -> None:
    client, server = pair()
    client.send_headers(1, request_headers(), end_stream=True)
    assert server.receive(client.data_to_send()) == [RequestReceived(1, b"GET", PATH)]
    assert server.respond(1, Response(200, b"application/json", BODY))
    events = exchange(client, server)
    response = next(e for e in events if isinstance(e, ResponseReceived))
    assert dict(response.headers) == {b":status": b"200", b"content-type": b"application/json",
                                      b"content-length": str(len(BODY)).encode()}
    data = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert data == BODY and any(isinstance(e, StreamEnded) for e in events)


def test_extra_headers_are_sent() -> None:
    client, server = pair()
    client.send_headers(1, request_headers(method=b"POST"), end_stream=True)
    server.receive(client.data_to_send())
    server.respond(1, Response(405, b"application/problem+json", b"{}", ((b"allow", b"GET"),)))
    response = next(e for e in exchange(client, server) if isinstance(e, ResponseReceived))
    assert (b"allow", b"GET") in response.headers


def test_a_request_with_a_body_is_complete_when_the_stream_ends() -> None:
    client, server = pair()
    client.send_headers(1, request_headers())
    for _ in range(3):
        client.send_data(1, b"x" * 16_000)
    assert server.receive(client.data_to_send()) == []
    # The discarded body's bytes go back to the client's windows (WINDOW_UPDATE), so a client
    # that sends one cannot stall the connection.
    updated = {e.stream_id for e in exchange(client, server) if isinstance(e, WindowUpdated)}
    assert updated == {0, 1}
    client.end_stream(1)
    assert server.receive(client.data_to_send()) == [RequestReceived(1, b"GET", PATH)]


def test_body_waits_for_the_peers_window() -> None:
    client, server = pair(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 10})
    client.send_headers(1, request_headers(), end_stream=True)
    server.receive(client.data_to_send())
    server.respond(1, Response(200, b"application/json", BODY))
    events = exchange(client, server)
    first = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert first == BODY[:10] and not any(isinstance(e, StreamEnded) for e in events)
    client.increment_flow_control_window(100, stream_id=1)
    client.increment_flow_control_window(100)
    server.receive(client.data_to_send())
    events = exchange(client, server)
    rest = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert first + rest == BODY and any(isinstance(e, StreamEnded) for e in events)


def test_response_to_a_reset_stream_is_dropped() -> None:
    client, server = pair()
    client.send_headers(1, request_headers(), end_stream=True)
    server.receive(client.data_to_send())
    client.reset_stream(1)
    server.receive(client.data_to_send())
    assert not server.respond(1, Response(200, b"application/json", BODY))
    assert not server.closed


def test_garbage_closes_with_goaway() -> None:
    server = Http2Session(N5gEirSettings())
    server.initiate()
    assert server.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []
    assert server.closed and server.error
    assert server.data_to_send()  # SETTINGS and GOAWAY


def test_a_stream_past_the_announced_limit_is_refused() -> None:
    client, server = pair(N5gEirSettings(max_concurrent_streams=2))
    for stream_id in (1, 3):
        client.send_headers(stream_id, request_headers())  # left open: no END_STREAM
    # h2's client keeps to our limit; the third stream is written by hand.
    third = frame(FrameType.HEADERS, END_HEADERS, 5, encode_headers(request_headers()))
    assert server.receive(client.data_to_send() + third) == []
    assert not server.closed
    # RFC 9113 §5.1.2: a stream error; REFUSED_STREAM tells the client it may retry.
    assert server.data_to_send() == rst_stream_frame(5, ErrorCode.REFUSED_STREAM)
    client.end_stream(1)
    assert server.receive(client.data_to_send()) == [RequestReceived(1, b"GET", PATH)]


def test_header_list_above_the_limit_gets_431() -> None:
    client, server = pair(N5gEirSettings(max_header_list_bytes=1024))
    client.send_headers(1, [*request_headers(), (b"x-big", b"a" * 4000)], end_stream=True)
    assert server.receive(client.data_to_send()) == []
    response = next(e for e in exchange(client, server) if isinstance(e, ResponseReceived))
    assert dict(response.headers)[b":status"] == b"431"
    client.send_headers(3, request_headers(), end_stream=True)  # the HPACK context held
    assert server.receive(client.data_to_send()) == [RequestReceived(3, b"GET", PATH)]


def test_malformed_request_is_a_stream_error() -> None:
    client, server = pair()
    # RFC 9113 §8.3.1: a request without :path is malformed.
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"),
                            (b":authority", b"eir")], end_stream=True)
    requests = server.receive(client.data_to_send())
    assert requests == [] or server.closed
    events = exchange(client, server)
    assert any(isinstance(e, (StreamReset, ConnectionTerminated)) for e in events)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2_000), max_size=12))
def test_requests_split_at_any_byte_are_read_as_whole(cuts: list[int]) -> None:
    """Reads ending anywhere (inside the preface, a frame header or a payload) give the same
    requests as one read: what a read leaves over waits for the next (frames.read_frames)."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    paths = [PATH + b"&n=%d" % n for n in range(8)]
    for n, path in enumerate(paths):
        client.send_headers(2 * n + 1, request_headers(path), end_stream=True)
    wire = client.data_to_send()
    server = Http2Session(N5gEirSettings())
    server.initiate()
    got: list[RequestReceived] = []
    start = 0
    for cut in [*sorted({c % len(wire) for c in cuts}), len(wire)]:
        got += server.receive(wire[start:cut])
        start = cut
    assert [r.path for r in got] == paths
    assert server.error is None


def test_a_frame_past_the_maximum_size_is_refused_from_its_header() -> None:
    _client, server = pair()
    oversized = frame(FrameType.HEADERS, END_HEADERS, 1, b"\0" * 16_385)
    assert server.receive(oversized[:9]) == []  # the header alone: FRAME_SIZE_ERROR already
    assert server.closed and server.error is not None and "FRAME_SIZE_ERROR" in server.error
