"""The server side of one HTTP/2 connection (RFC 9113), sans-IO: bytes in, requests out,
responses in, bytes out. No sockets, no clock.

What a 5G-EIR needs of HTTP/2 and no more: requests (a GET, whose body if any is read and
dropped) become :class:`RequestReceived` once their stream ends; :meth:`Http2Session.respond`
queues a response, its body held back while the client's flow-control window is shut (§5.2) and
sent when WINDOW_UPDATE opens it. No server push (SETTINGS_ENABLE_PUSH 0), no priorities
(PRIORITY frames are read and ignored, as §5.3.2 allows).

Errors follow §5.4: a connection error queues GOAWAY with its code and closes (:attr:`closed`);
a stream error queues RST_STREAM and the connection carries on. Limits announced in our SETTINGS
are enforced: a stream past SETTINGS_MAX_CONCURRENT_STREAMS is refused with REFUSED_STREAM
(§5.1.2, the client may retry it), a header list past SETTINGS_MAX_HEADER_LIST_SIZE gets 431
(§10.5.1), a frame past SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR, DATA past our window a
FLOW_CONTROL_ERROR. Header blocks are decoded by :class:`HpackDecoder` (RFC 7541); our responses'
blocks are encoded once per distinct response.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from typing import NamedTuple

from gateway.n5g_eir.errors import StreamError as _StreamError
from gateway.n5g_eir.frames import (
    ACK,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    MAX_WINDOW,
    PADDED,
    PREFACE,
    PRIORITY_FLAG,
    RULES,
    ErrorCode,
    FrameType,
    Http2Error,
    Setting,
    frame,
    frame_start,
    goaway_frame,
    header_fragment,
    keep_unread,
    read_frames,
    rst_stream_frame,
    settings_frame,
    settings_values,
    unpad,
    unread,
    window_update_frame,
)
from gateway.n5g_eir.hpack import HpackDecoder, HpackError, encode_headers, table_size_update
from gateway.n5g_eir.problem import TITLES, Response, problem
from gateway.n5g_eir.settings import N5gEirSettings

_UINT32 = struct.Struct(">I")
# §8.2.2: connection-specific fields are malformed in HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
# §8.2.1: a field name has none of 0x00-0x20, 'A'-'Z', 0x7F-0xFF, nor a colon (but a
# pseudo-header's first); a value neither starts nor ends with SP or HTAB.
_INVALID_NAME = re.compile(rb"[\x00-\x20A-Z:\x7f-\xff]")
_OWS = b" \t"
# Fields whose values differ from request to request: checked each time, not remembered.
_UNREMEMBERED = frozenset((b":path", b"authorization", b"content-length"))
_CHECKED_FIELDS = 64  # fields remembered as checked, per connection
_MAX_STREAM_ID = 2**31 - 1
# PING payloads (§6.7: 8 opaque octets) of our own, told apart when their ACK comes back.
PING_DRAIN = b"eirdrain"  # graceful shutdown's round trip (§6.8)
PING_LIVENESS = b"eiralive"  # is the client still there?
DRAIN_ACK_WAIT = 1.0  # seconds: the final GOAWAY goes out after this even without the PING ACK
# §6.5.3: our SETTINGS not acknowledged within this (nor the preface sent, §3.4): SETTINGS_TIMEOUT.
# A client that connects and stays silent held the connection for the idle timeout (600 s).
SETTINGS_ACK_WAIT = 10.0
_ENCODED_CACHE_SIZE = 256


def _http1_response(response: Response) -> bytes:
    """``response`` in HTTP/1.1 (RFC 9112 §4, §6), closing the connection (§9.6)."""
    head = (f"HTTP/1.1 {response.status} {TITLES[response.status]}\r\n"
            f"content-type: {response.content_type.decode()}\r\n"
            f"content-length: {len(response.body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + response.body


# The answer to an HTTP/1.x request (TS 29.500 §5.2.2.2: HTTP/2 only).
HTTP1_REFUSAL = _http1_response(problem(
    505, "HTTP/2 only: h2c with prior knowledge, or TLS with ALPN h2 (RFC 9113 §3)"))
# The start of an HTTP/1.x request line (RFC 9112 §3: a method token, SP): a client that does
# not speak HTTP/2 on an h2c port. Until its SP has come, a client may still be sending one.
_HTTP1_REQUEST = re.compile(rb"([A-Z]{1,16}) ")
_HTTP1_METHOD = re.compile(rb"[A-Z]{1,16}")
# Consecutive frames that carry nothing: DATA without content or END_STREAM, CONTINUATION
# without content or END_HEADERS. They cost a read each and are not answered, so nothing slows
# their sender (CVE-2019-9518; empty CONTINUATION frames are the unbounded case of the
# CVE-2024-27316 class, as the header block's own bound stops any with content). Past this:
# connection error ENHANCE_YOUR_CALM.
EMPTY_FRAMES = 8


class RequestReceived(NamedTuple):
    """A request whose headers (and body, if any: discarded) have all arrived. (A NamedTuple:
    immutable, and built faster than a frozen dataclass, once per request.)"""

    stream_id: int
    method: bytes
    path: bytes
    authorization: bytes | None = None  # the Authorization field (OAuth2 bearer token)


_ConnectionError = Http2Error


class _EncodedResponse(NamedTuple):
    """A response's HEADERS block (HPACK without the dynamic table: the same for every stream)
    and the first five octets (length, type, flags: §4.1) of its frames' headers, which the
    stream identifier completes."""

    block: bytes
    headers_start: bytes
    data_start: bytes  # one DATA frame with the whole body and END_STREAM

    @staticmethod
    def head_block(response: Response) -> bytes:
        """The block of a response to HEAD (RFC 9110 §9.3.2: no content), without
        Content-Length: §8.6 allows one only with the length GET's response would have, and the
        same request with GET may be answered otherwise."""
        return encode_headers([(b":status", str(response.status).encode()),
                               (b"content-type", response.content_type), *response.headers])

    @classmethod
    def of(cls, response: Response) -> _EncodedResponse:
        body = response.body
        block = encode_headers([
            (b":status", str(response.status).encode()),
            (b"content-type", response.content_type),
            (b"content-length", str(len(body)).encode()),
            *response.headers,
        ])
        # A block this server builds is far below the 16,384-byte minimum frame size (§4.2).
        flags = END_HEADERS if body else END_HEADERS | END_STREAM
        return cls(block, frame_start(FrameType.HEADERS, flags, len(block)),
                   frame_start(FrameType.DATA, END_STREAM, len(body)))


class _Stream:
    """An open or half-closed (remote) stream (§5.1) that still owes its response."""

    __slots__ = ("answered", "authorization", "content_length", "method", "path", "received",
                 "recv_window", "remote_closed", "send_window")

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.remote_closed = False
        self.method = b""
        self.path = b""
        self.content_length: int | None = None
        self.authorization: bytes | None = None
        self.received = 0
        self.answered = False  # answered before its request ended (431): nothing to hand over


def _dependency(payload: bytes, start: int) -> int:
    """The Stream Dependency field at ``start`` of a PRIORITY frame or a HEADERS frame with
    the PRIORITY flag (§6.3, §6.2), without its E bit."""
    return _UINT32.unpack_from(payload, start)[0] & 0x7FFFFFFF


def _check_field(name: bytes, value: bytes) -> bool:
    """§8.2 validity of one request field and §8.3.1's pseudo-header names: True for a
    pseudo-header field, False for a regular one; raises _StreamError when malformed."""
    if (not name or b"\0" in value or b"\r" in value or b"\n" in value
            or (value and (value[0] in _OWS or value[-1] in _OWS))):
        raise _StreamError(ErrorCode.PROTOCOL_ERROR, "invalid field")  # §8.2.1
    if name[0] == 0x3A:  # ':'
        if name not in _REQUEST_PSEUDO:
            raise _StreamError(ErrorCode.PROTOCOL_ERROR, f"misplaced or unknown {name!r}")
        return True
    if _INVALID_NAME.search(name) is not None or name in _CONNECTION_SPECIFIC:
        raise _StreamError(ErrorCode.PROTOCOL_ERROR, f"field {name!r} not allowed")
    if name == b"te" and value != b"trailers":
        raise _StreamError(ErrorCode.PROTOCOL_ERROR, "te other than trailers")
    return False


def _method_of(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The :method of a header list not otherwise read (b"" when it has none)."""
    for name, value in headers:
        if name == b":method":
            return value
    return b""


def _entity(authority: bytes, pseudo: dict[bytes, bytes]) -> bytes:
    """host[:port] as it identifies an origin: lower case, the scheme's default port left out
    (RFC 9110 §4.2.1, §4.2.2; RFC 3986 §6.2.3)."""
    value = authority.lower()
    default = b":443" if pseudo.get(b":scheme") == b"https" else b":80"
    return value[:-len(default)] if value.endswith(default) else value


def _request_head(
    headers: list[tuple[bytes, bytes]], checked: dict[tuple[bytes, bytes], bool]
) -> tuple[bytes, bytes, int | None, bytes | None]:
    """§8.3.1 pseudo-header fields, §8.2 field validity; raises _StreamError when malformed.
    ``checked``: fields of this connection found valid before (:func:`_check_field`'s
    answer), whose checks need not be repeated: a client sends the same :method, :scheme,
    :authority and user-agent on every request."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    content_length = authorization = host = None
    for field in headers:
        name, value = field
        is_pseudo = checked.get(field)
        if is_pseudo is None:
            is_pseudo = _check_field(name, value)
            if name not in _UNREMEMBERED and len(checked) < _CHECKED_FIELDS:
                checked[field] = is_pseudo
        if is_pseudo:
            if regular or name in pseudo:
                raise _StreamError(ErrorCode.PROTOCOL_ERROR, f"misplaced or unknown {name!r}")
            pseudo[name] = value
            continue
        regular = True
        if name == b"content-length":
            if not value.isdigit() or (content_length is not None
                                       and int(value) != content_length):
                raise _StreamError(ErrorCode.PROTOCOL_ERROR, "invalid content-length")
            content_length = int(value)
        elif name == b"authorization":
            authorization = value
        elif name == b"host":
            host = value
    if host is not None and b":authority" in pseudo and _entity(host, pseudo) != _entity(
            pseudo[b":authority"], pseudo):
        # §8.3.1: a Host naming another entity than :authority is malformed (a SHOULD).
        raise _StreamError(ErrorCode.PROTOCOL_ERROR, "host differs from :authority")
    method = pseudo.get(b":method")
    if not method:  # RFC 9110 §9.1: a method is a token, never empty
        raise _StreamError(ErrorCode.PROTOCOL_ERROR, "no :method")
    if method == b"CONNECT":  # §8.5: no :scheme, no :path
        if b":scheme" in pseudo or b":path" in pseudo or b":authority" not in pseudo:
            raise _StreamError(ErrorCode.PROTOCOL_ERROR, "malformed CONNECT")
        return method, b"", content_length, authorization
    path = pseudo.get(b":path")
    if not path or b":scheme" not in pseudo:
        raise _StreamError(ErrorCode.PROTOCOL_ERROR, "no :scheme or empty :path")
    return method, path, content_length, authorization


class Http2Session:
    def __init__(self, settings: N5gEirSettings, path_prefixes: tuple[bytes, ...] = ()) -> None:
        """``path_prefixes``: how most request paths begin (HpackDecoder's known prefixes)."""
        self._idle_timeout = settings.idle_timeout_seconds
        self._ping_interval = settings.ping_interval_seconds
        self._ping_timeout = settings.ping_timeout_seconds
        self._max_streams = settings.max_concurrent_streams
        self._max_header_list = settings.max_header_list_bytes
        self._recv_initial = settings.initial_window_bytes
        # A header block (HEADERS + CONTINUATION) may not grow past this, compressed.
        self._max_block = max(settings.max_header_list_bytes, DEFAULT_MAX_FRAME_SIZE)
        self._decoder = HpackDecoder(known_prefixes=path_prefixes)
        self._checked_fields: dict[tuple[bytes, bytes], bool] = {}
        self._buffer = bytearray()
        self._out: list[bytes] = []
        # Our preface is held until the client's begins (§3.4 lets it wait): a client sending
        # an HTTP/1.1 request can then be answered in HTTP/1.1 (505), not after a SETTINGS
        # frame it would read as a broken response. Released by a read that starts the client
        # preface, and by any failure or shutdown.
        self._held = True
        # Responses the session gave by itself (431, 505), (method, status), for the adapter's
        # request metrics: it empties the list.
        self.answered: list[tuple[bytes, int]] = []
        self._preface = False
        self._settings_seen = False
        self._settings_acked = False  # the client acknowledged our SETTINGS (§6.5.3)
        self._opened: float | None = None  # the first tick's time
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        # §5.1 "closed", by how the stream got there (the last 256 of each; a stream closed
        # longer ago counts as ended by both sides): reset by us, the frames the client sent
        # before it saw our RST_STREAM are ignored; reset by the client, any frame but PRIORITY
        # is a stream error STREAM_CLOSED; ended by both sides, DATA or HEADERS is a connection
        # error STREAM_CLOSED.
        self._reset: deque[int] = deque(maxlen=256)
        self._reset_by_peer: deque[int] = deque(maxlen=256)
        # Identifiers the client passed over when it opened a stream, as (last opened, next
        # opened), the last 256 gaps: a HEADERS on one of them opens a stream below one already
        # opened (§5.1.1: PROTOCOL_ERROR), not one that was closed (§5.1). Gaps, not the
        # streams opened: clients number streams one after the other, and nothing is kept.
        self._skipped: deque[tuple[int, int]] = deque(maxlen=256)
        self._send_window = DEFAULT_WINDOW  # connection-level, for our DATA
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME_SIZE
        self._size_update = b""  # §4.2 RFC 7541: owed at the start of our next header block
        self._continuation: tuple[int, bool, bytearray] | None = None
        self._empty_frames = 0  # consecutive frames that carried nothing (EMPTY_FRAMES)
        self._self_dependent = 0  # a HEADERS whose priority names its own stream (§5.3.1)
        # A stream was reset (by either side) while reading: requests of this read whose
        # streams are gone are not handed over (see receive).
        self._dropped = False
        self._blocked: dict[int, bytes] = {}
        self._encoded: dict[Response, _EncodedResponse] = {}
        self._goaway_received = False
        self._goaway_sent = False  # for a connection error: nothing more is read or sent
        self._draining_since: float | None = None  # graceful shutdown, first GOAWAY sent
        self._final_goaway = False  # GOAWAY naming the last stream: only those are answered
        # Timers (tick): what happened since the last tick, and when it last did.
        self._heard = False  # any bytes from the client
        self._new_stream = False  # a request opened a stream
        self._last_heard: float | None = None
        self._last_active: float | None = None
        self._ping_sent: float | None = None  # a liveness PING waiting for its ACK, since
        self.dead = False  # the client did not acknowledge our PING in time: drop it
        self.error: str | None = None  # why the connection failed, for the log
        self.closing_reason: str | None = None  # why we started to close it (idle), for the log

    @property
    def closed(self) -> bool:
        """Nothing more to do on this connection: a connection error's GOAWAY sent, or a GOAWAY
        received or our final one sent, and every stream answered."""
        return self._goaway_sent or (
            (self._goaway_received or self._final_goaway) and not self._streams)

    def initiate(self) -> None:
        """The server connection preface: our SETTINGS (§3.4)."""
        values = {
            Setting.ENABLE_PUSH: 0,
            Setting.MAX_CONCURRENT_STREAMS: self._max_streams,
            Setting.MAX_HEADER_LIST_SIZE: self._max_header_list,
        }
        if self._recv_initial != DEFAULT_WINDOW:
            values[Setting.INITIAL_WINDOW_SIZE] = self._recv_initial
        self._out.append(settings_frame(values))

    def data_to_send(self) -> bytes:
        if self._held:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- input --------------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[RequestReceived]:
        """Feed bytes from the peer; returns the requests they completed, oldest first."""
        if self._goaway_sent:
            return []
        self._heard = True
        buf = unread(self._buffer, data)
        out: list[RequestReceived] = []
        pos = 0
        try:
            if not self._preface:
                if not PREFACE.startswith(bytes(buf[:len(PREFACE)])):
                    return self._not_http2(buf)
                self._held = False
                if len(buf) < len(PREFACE):
                    keep_unread(self._buffer, buf, 0)
                    return out
                self._preface = True
                pos = len(PREFACE)
            for frame_type, flags, stream_id, payload, end in read_frames(buf, pos):
                pos = end
                self._frame(frame_type, flags, stream_id, payload, out)
                if self._goaway_sent:
                    return out
        except _ConnectionError as exc:
            self._fail(exc.code, str(exc))
            return out
        keep_unread(self._buffer, buf, pos)
        if self._dropped:
            # A request whose stream was reset in the same read (CVE-2023-44487, rapid reset:
            # HEADERS and RST_STREAM together) can never be answered: it is not handed over,
            # so not checked. The stream it left frees its place among
            # SETTINGS_MAX_CONCURRENT_STREAMS, which alone bounded the checks of one read.
            self._dropped = False
            streams = self._streams
            out = [request for request in out if request.stream_id in streams]
        return out

    def _not_http2(self, buf: bytes | bytearray) -> list[RequestReceived]:
        """What came is not the client preface: an HTTP/1.x request gets an HTTP/1.1 505
        (RFC 9110 §15.6.6; §3.4 lets GOAWAY be omitted, the peer not using HTTP/2), anything
        else a connection error PROTOCOL_ERROR."""
        request = _HTTP1_REQUEST.match(buf)
        if request is None and _HTTP1_METHOD.fullmatch(buf) is not None:
            keep_unread(self._buffer, buf, 0)  # perhaps a request line: wait for its SP
            return []
        if request is None:
            self._fail(ErrorCode.PROTOCOL_ERROR, "no HTTP/2 preface")
            return []
        method = request.group(1)
        self._out = [HTTP1_REFUSAL]
        self._held = False
        self._goaway_sent = True  # nothing more is read or sent
        self._buffer.clear()
        self.error = f"an HTTP/1 {method.decode()} request on an HTTP/2 port: 505"
        self.answered.append((method, 505))
        return []

    def _fail(self, code: ErrorCode, reason: str) -> None:
        self._held = False
        self._out.append(goaway_frame(self._last_stream_id, code, reason.encode()[:128]))
        self._goaway_sent = True
        self.error = f"HTTP/2 {code.name}: {reason}"
        self._buffer.clear()

    def _frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes,
               out: list[RequestReceived]) -> None:
        if not self._settings_seen and frame_type != FrameType.SETTINGS:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "preface not followed by SETTINGS")
        if self._continuation is not None and (
            frame_type != FrameType.CONTINUATION or stream_id != self._continuation[0]
        ):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "header block interrupted")  # §6.10
        dispatch = _DISPATCH.get(frame_type)
        if dispatch is None:
            return  # §5.5: unknown frame types are ignored
        kind, rule, handler = dispatch
        if rule.on_connection is True and stream_id != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"{kind.name} on a stream")
        if rule.on_connection is False and stream_id == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"{kind.name} on stream 0")
        try:
            if rule.length is not None and len(payload) != rule.length:
                if rule.length_is_stream_error:
                    raise _StreamError(ErrorCode.FRAME_SIZE_ERROR, f"{kind.name} length")
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, f"{kind.name} length")
            handler(self, flags, stream_id, payload, out)
        except _StreamError as exc:
            self._reset_stream(stream_id, exc.code)

    def _reset_stream(self, stream_id: int, code: ErrorCode) -> None:
        self._out.append(rst_stream_frame(stream_id, code))
        self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        self._dropped = True
        self._streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        self._reset.append(stream_id)

    def _closed_stream(self, stream_id: int, kind: str) -> None:
        """A DATA or HEADERS frame on a closed stream (§5.1): ignored when we reset the stream
        (the client may have sent it before it saw our RST_STREAM); a stream error
        STREAM_CLOSED after the client's own RST_STREAM; a connection error STREAM_CLOSED after
        both sides ended the stream (§5.1 "after receiving a frame with the END_STREAM flag",
        which meets §6.1's stream error: an endpoint may treat one as a connection error)."""
        if stream_id in self._reset:
            return
        if stream_id in self._reset_by_peer:
            raise _StreamError(ErrorCode.STREAM_CLOSED, f"{kind} after RST_STREAM")
        raise _ConnectionError(ErrorCode.STREAM_CLOSED, f"{kind} on a closed stream")

    # §6.1
    def _on_data(self, flags: int, stream_id: int, payload: bytes,
                 out: list[RequestReceived]) -> None:
        length = len(payload)  # flow control counts the padding too (§6.9.1)
        if length:
            # The body is dropped at once, so its bytes go straight back to the connection
            # window: a client that sends one can never stall the others.
            self._out.append(window_update_frame(0, length))
            self._empty_frames = 0
        elif not flags & END_STREAM:
            self._empty_frame()
        start, end = unpad(flags, payload)
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                if self._final_goaway:
                    return  # a stream our final GOAWAY ignored (§6.8)
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            self._closed_stream(stream_id, "DATA")
            return  # ignored: its bytes still count for the connection's window, given back
        if stream.remote_closed:
            raise _StreamError(ErrorCode.STREAM_CLOSED, "DATA after END_STREAM")
        stream.recv_window -= length
        if stream.recv_window < 0:
            raise _StreamError(ErrorCode.FLOW_CONTROL_ERROR, "DATA past the stream window")
        stream.received += end - start
        if flags & END_STREAM:
            self._end_of_request(stream_id, stream, out)
        elif length:
            stream.recv_window += length
            self._out.append(window_update_frame(stream_id, length))

    # §6.2
    def _on_headers(self, flags: int, stream_id: int, payload: bytes,
                    out: list[RequestReceived]) -> None:
        if stream_id % 2 == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "even stream id from a client")
        fragment = header_fragment(flags, payload)
        if flags & PRIORITY_FLAG and _dependency(payload, 1 if flags & PADDED else 0) == stream_id:
            self._self_dependent = stream_id  # refused once its block is decoded (§4.3)
        if flags & END_HEADERS:
            self._header_block(stream_id, bool(flags & END_STREAM), fragment, out)
        else:
            self._continuation = (stream_id, bool(flags & END_STREAM), bytearray(fragment))

    # §6.10
    def _on_continuation(self, flags: int, stream_id: int, payload: bytes,
                         out: list[RequestReceived]) -> None:
        if self._continuation is None:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        if payload:
            self._empty_frames = 0
        elif not flags & END_HEADERS:
            self._empty_frame()
        block = self._continuation[2]
        block += payload
        if len(block) > self._max_block:
            raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            _, end_stream, _ = self._continuation
            self._continuation = None
            self._header_block(stream_id, end_stream, bytes(block), out)

    def _empty_frame(self) -> None:
        self._empty_frames += 1
        if self._empty_frames > EMPTY_FRAMES:
            raise _ConnectionError(ErrorCode.ENHANCE_YOUR_CALM,
                                   f"more than {EMPTY_FRAMES} frames in a row without content")

    def _header_block(self, stream_id: int, end_stream: bool, block: bytes,
                      out: list[RequestReceived]) -> None:
        # Decoded before anything else: the HPACK context must follow every block (§4.3).
        try:
            headers, list_size = self._decoder.decode(block, self._max_header_list)
        except HpackError as exc:
            raise _ConnectionError(ErrorCode.COMPRESSION_ERROR, str(exc)) from None
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers (§8.1)
            if stream.remote_closed:  # §5.1 half-closed (remote): STREAM_CLOSED
                raise _StreamError(ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise _StreamError(ErrorCode.PROTOCOL_ERROR, "HEADERS after the request headers")
            for name, value in headers:
                # §8.2's field rules hold for trailers too (they were not checked: an
                # upper-case or connection-specific field was served); no pseudo-header (§8.1).
                if _check_field(name, value):
                    raise _StreamError(ErrorCode.PROTOCOL_ERROR,
                                       "a trailer field malformed (§8.2) or a pseudo-header")
            self._end_of_request(stream_id, stream, out)
            return
        if stream_id <= self._last_stream_id:
            if any(low < stream_id < high for low, high in self._skipped):
                # §5.1.1: a new stream's identifier must exceed those of all streams the
                # client opened: an unexpected identifier is a connection error PROTOCOL_ERROR.
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR,
                                       "stream id below one already opened")
            self._closed_stream(stream_id, "HEADERS")
            return
        if self._final_goaway:
            return  # §6.8: a stream above the last one our GOAWAY named is ignored
        if stream_id - self._last_stream_id > 2:
            self._skipped.append((self._last_stream_id, stream_id))
        self._last_stream_id = stream_id
        self._new_stream = True
        if self._self_dependent == stream_id:
            self._self_dependent = 0
            raise _StreamError(ErrorCode.PROTOCOL_ERROR, "a stream cannot depend on itself")
        if len(self._streams) >= self._max_streams:
            raise _StreamError(ErrorCode.REFUSED_STREAM, "concurrent stream limit")
        stream = _Stream(self._peer_initial_window, self._recv_initial)
        if list_size > self._max_header_list:
            # §10.5.1: the block was decoded in full; the request is answered 431 unread.
            self._streams[stream_id] = stream
            stream.remote_closed = end_stream
            stream.answered = True
            self.respond(stream_id, problem(
                431, f"the header list exceeds {self._max_header_list} bytes"))
            self.answered.append((_method_of(headers), 431))
            self._reset.append(stream_id)  # a body still to come is dropped quietly
            return
        stream.method, stream.path, stream.content_length, stream.authorization = (
            _request_head(headers, self._checked_fields)
        )
        self._streams[stream_id] = stream
        if end_stream:
            self._end_of_request(stream_id, stream, out)

    def _end_of_request(self, stream_id: int, stream: _Stream,
                        out: list[RequestReceived]) -> None:
        stream.remote_closed = True
        if stream.answered:
            return  # its body or trailers ended after its 431 (still waiting for the window)
        if stream.content_length is not None and stream.content_length != stream.received:
            raise _StreamError(ErrorCode.PROTOCOL_ERROR, "content-length mismatch")  # §8.1.1
        out.append(RequestReceived(stream_id, stream.method, stream.path, stream.authorization))

    # §6.3
    def _on_priority(self, flags: int, stream_id: int, payload: bytes,
                     out: list[RequestReceived]) -> None:
        # §5.3.2: priority signals may be ignored, but §5.3.1 still holds: a stream cannot
        # depend on itself (a stream error PROTOCOL_ERROR).
        if _dependency(payload, 0) == stream_id:
            raise _StreamError(ErrorCode.PROTOCOL_ERROR, "a stream cannot depend on itself")

    # §6.4
    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes,
                       out: list[RequestReceived]) -> None:
        if stream_id > self._last_stream_id and not self._final_goaway:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if stream_id in self._streams:
            self._streams.pop(stream_id)
            self._blocked.pop(stream_id, None)
            self._reset_by_peer.append(stream_id)
            self._dropped = True
        # On a closed stream it is ignored (§5.1: it may have crossed our END_STREAM; and never
        # a RST_STREAM in answer to one, §5.4.2).

    # §6.5
    def _on_settings(self, flags: int, stream_id: int, payload: bytes,
                     out: list[RequestReceived]) -> None:
        if flags & ACK:
            if payload:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._settings_acked = True
            return
        values = settings_values(payload)
        self._settings_seen = True
        initial = self._peer_initial_window
        highest = -1  # the largest INITIAL_WINDOW_SIZE of this frame
        for setting, value in values:
            if setting == Setting.INITIAL_WINDOW_SIZE:
                self._peer_initial_window = value
                highest = max(highest, value)
            elif setting == Setting.MAX_FRAME_SIZE:
                self._peer_max_frame = value
            elif setting == Setting.HEADER_TABLE_SIZE and value < 4096:
                # Our encoder's table (always empty) must shrink within it: say so (RFC 7541
                # §4.2) at the start of our next header block.
                self._size_update = table_size_update(0)
        if highest >= 0 and self._streams:
            # §6.9.2: every stream window changes by the difference, value after value; the
            # largest value gives each window's peak. Applied once a frame: a frame of 2,730
            # values walked every stream 2,730 times (8 ms a 16 KB frame, compiled).
            if max(st.send_window for st in self._streams.values()) + highest - initial > (
                    MAX_WINDOW):
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
            delta = self._peer_initial_window - initial
            for stream in self._streams.values():
                stream.send_window += delta
        self._out.append(frame(FrameType.SETTINGS, ACK, 0))
        if self._peer_initial_window > initial:
            self._unblock()

    # §6.6, §8.4
    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes,
                         out: list[RequestReceived]) -> None:
        raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    # §6.7
    def _on_ping(self, flags: int, stream_id: int, payload: bytes,
                 out: list[RequestReceived]) -> None:
        if not flags & ACK:
            self._out.append(frame(FrameType.PING, ACK, 0, payload))
        elif payload == PING_DRAIN and self._draining_since is not None:
            self.shutdown()  # a round trip after our first GOAWAY: the client has seen it
        elif payload == PING_LIVENESS:
            self._ping_sent = None

    # §6.8
    def _on_goaway(self, flags: int, stream_id: int, payload: bytes,
                   out: list[RequestReceived]) -> None:
        if len(payload) < 8:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY length")
        self._goaway_received = True
        code = _UINT32.unpack_from(payload, 4)[0]
        if code != ErrorCode.NO_ERROR:
            self.error = f"peer sent GOAWAY {code:#x}"

    # §6.9
    def _on_window_update(self, flags: int, stream_id: int, payload: bytes,
                          out: list[RequestReceived]) -> None:
        increment = _UINT32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if not increment:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            was_open = self._send_window > 0
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
            # A body waits on the connection window only while it is shut: were it open, each
            # waiting stream waits on its own window, which this does not change (a flood of
            # WINDOW_UPDATE(0, 1) walked 128 waiting streams per frame: 0.6 s a 256 KB read).
            if not was_open:
                self._unblock()
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                if stream_id > self._last_stream_id and not self._final_goaway:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE, idle stream")
                # §5.1: after its own RST_STREAM (and before ours, which ends the matter)
                if stream_id in self._reset_by_peer and stream_id not in self._reset:
                    raise _StreamError(ErrorCode.STREAM_CLOSED, "WINDOW_UPDATE after RST_STREAM")
                return  # a stream just closed: it may have crossed our END_STREAM (§5.1)
            if not increment:
                raise _StreamError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                raise _StreamError(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
            body = self._blocked.pop(stream_id, None)  # only this stream's body can move
            if body is not None:
                self._send_body(stream_id, stream, body)

    # -- output -------------------------------------------------------------------------------
    def respond(self, stream_id: int, response: Response) -> bool:
        """Queue the response of a stream; False when the stream is gone (reset by the peer)."""
        stream = self._streams.get(stream_id)
        if stream is None or self._goaway_sent:
            return False
        if stream.method == b"HEAD":
            self._out.append(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream_id,
                                   self._size_update + _EncodedResponse.head_block(response)))
            self._size_update = b""
            self._done(stream_id)
            return True
        encoded = self._encoded.get(response)
        if encoded is None:
            encoded = _EncodedResponse.of(response)
            if len(self._encoded) < _ENCODED_CACHE_SIZE:
                self._encoded[response] = encoded
        body = response.body
        out = self._out
        if self._size_update:
            block = self._size_update + encoded.block
            self._size_update = b""
            out.append(frame(FrameType.HEADERS,
                             END_HEADERS if body else END_HEADERS | END_STREAM, stream_id, block))
        else:
            sid = _UINT32.pack(stream_id)
            size = len(body)
            if (body and size <= self._send_window and size <= stream.send_window
                    and size <= self._peer_max_frame):
                # The usual answer: the whole body in one DATA frame, within both windows
                # (§6.9.1); both frames from pieces built once, the stream id between them.
                out += (encoded.headers_start, sid, encoded.block, encoded.data_start, sid, body)
                self._send_window -= size
                del self._streams[stream_id]  # both sides ended it: closed (§5.1)
                return True
            out += (encoded.headers_start, sid, encoded.block)
        if body:
            self._send_body(stream_id, stream, body)
        else:
            self._done(stream_id)
        return True

    def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        while body:
            size = min(self._send_window, stream.send_window, self._peer_max_frame, len(body))
            if size <= 0:
                self._blocked[stream_id] = body
                return
            last = size == len(body)
            self._out.append(frame(FrameType.DATA, END_STREAM if last else 0, stream_id,
                                   body[:size]))
            self._send_window -= size
            stream.send_window -= size
            body = body[size:]
        self._done(stream_id)

    def _done(self, stream_id: int) -> None:
        # Both sides ended the stream: closed (§5.1).
        self._streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)

    def _unblock(self) -> None:
        """Bodies waiting for windows, in the order they began to wait, sent as far as the
        windows now allow; a stream whose own window is shut is passed over where it is."""
        for stream_id in list(self._blocked):
            if self._send_window <= 0:
                return
            stream = self._streams.get(stream_id)
            if stream is None:
                del self._blocked[stream_id]
            elif stream.send_window > 0:
                self._send_body(stream_id, stream, self._blocked.pop(stream_id))

    def begin_shutdown(self, now: float, reason: str | None = None) -> None:
        """Graceful shutdown (§6.8), first step: GOAWAY NO_ERROR with the highest stream id
        (open no new streams) and a PING. Its ACK (or DRAIN_ACK_WAIT seconds, at a tick) brings
        the final GOAWAY naming the last stream, so requests the client sent before it saw the
        first one are still served; the streams at or below it are answered, then
        :attr:`closed`."""
        if self._goaway_sent or self._draining_since is not None or self._final_goaway:
            return
        self._held = False
        self._draining_since = now
        self.closing_reason = reason
        self._out.append(goaway_frame(_MAX_STREAM_ID, ErrorCode.NO_ERROR))
        self._out.append(frame(FrameType.PING, 0, 0, PING_DRAIN))

    def shutdown(self) -> None:
        """The final GOAWAY NO_ERROR (§6.8) naming the last stream we processed: later streams
        are ignored, the ones in flight still answered."""
        if not self._goaway_sent and not self._final_goaway:
            self._held = False
            self._out.append(goaway_frame(self._last_stream_id, ErrorCode.NO_ERROR))
            self._final_goaway = True

    def _owed(self) -> bool:
        """A stream whose request ended and whose response we owe: the connection is not idle.
        A request that never ends, or a response waiting for a window the client never opens,
        is the client's idleness, not ours."""
        blocked = self._blocked
        for stream_id, stream in self._streams.items():
            if stream.remote_closed and stream_id not in blocked:
                return True
        return False

    def tick(self, now: float) -> None:
        """The connection's timers, called about once a second with a monotonic ``now``:

        * idle timeout: no response owed and no request for ``idle_timeout_seconds``: graceful
          shutdown, the requests the client never finished refused;
        * liveness (§6.7): nothing heard from the client for ``ping_interval_seconds``: PING;
          no ACK (nor anything else) within ``ping_timeout_seconds``: :attr:`dead`, to drop
          (a crashed AMF or a lost path leaves a half-open TCP connection otherwise);
        * the final GOAWAY of a graceful shutdown whose PING ACK has not come;
        * SETTINGS_TIMEOUT (§6.5.3) when our SETTINGS are still not acknowledged
          ``SETTINGS_ACK_WAIT`` seconds after the first tick (a client silent from the start).
        """
        if self._goaway_sent:
            return
        if self._opened is None:
            self._opened = now
        elif not self._settings_acked and now - self._opened >= SETTINGS_ACK_WAIT:
            self._fail(ErrorCode.SETTINGS_TIMEOUT,
                       f"no SETTINGS ACK within {SETTINGS_ACK_WAIT:g} s")
            return
        if self._heard or self._last_heard is None:
            self._last_heard = now
            self._heard = False
            self._ping_sent = None  # anything from the client shows it is alive
        if self._new_stream or self._last_active is None or self._owed():
            self._last_active = now
            self._new_stream = False
        if self._draining_since is not None:
            if not self._final_goaway and now - self._draining_since >= DRAIN_ACK_WAIT:
                self.shutdown()
        elif self._idle_timeout and now - self._last_active >= self._idle_timeout:
            # Requests the client never finished, idle as long: refused (nothing processed,
            # RFC 9113 §8.7: a client may retry them); responses it never opened a window for:
            # cancelled. Either would hold the connection for ever.
            for stream_id, stream in list(self._streams.items()):
                self._reset_stream(stream_id, ErrorCode.CANCEL if stream.remote_closed
                                   else ErrorCode.REFUSED_STREAM)
            self.begin_shutdown(now, f"idle for {self._idle_timeout:g} s")
        if not self._ping_interval:
            return
        if self._ping_sent is None:
            if now - self._last_heard >= self._ping_interval:
                self._out.append(frame(FrameType.PING, 0, 0, PING_LIVENESS))
                self._ping_sent = now
        elif now - self._ping_sent >= self._ping_timeout:
            self.dead = True
            self.error = f"no PING ACK within {self._ping_timeout:g} s"


_HANDLERS = {
    FrameType.DATA: Http2Session._on_data,
    FrameType.HEADERS: Http2Session._on_headers,
    FrameType.PRIORITY: Http2Session._on_priority,
    FrameType.RST_STREAM: Http2Session._on_rst_stream,
    FrameType.SETTINGS: Http2Session._on_settings,
    FrameType.PUSH_PROMISE: Http2Session._on_push_promise,
    FrameType.PING: Http2Session._on_ping,
    FrameType.GOAWAY: Http2Session._on_goaway,
    FrameType.WINDOW_UPDATE: Http2Session._on_window_update,
    FrameType.CONTINUATION: Http2Session._on_continuation,
}
# By the frame's type octet: its type, §6's rule and the handler, in one look-up per frame.
_DISPATCH = {int(kind): (kind, RULES[kind], handler) for kind, handler in _HANDLERS.items()}
