"""The client side of one HTTP/2 connection (RFC 9113), sans-IO, as an NF service consumer (an
AMF asking the 5G-EIR) needs it: requests without a body out, responses in. No sockets, no
clock.

:meth:`Http2ClientSession.request` takes a complete header block (HPACK, RFC 7541, encoded by
the caller: :func:`request_block` gives a stateless one) and opens the next stream; past the
server's SETTINGS_MAX_CONCURRENT_STREAMS the request waits, in order, for a stream to close
(§5.1.2). :meth:`receive` turns the server's frames into :class:`ResponseReceived` (status,
content-type, body), :class:`StreamReset` and :class:`ConnectionTerminated` (GOAWAY, §6.8:
the streams above its last stream id were not processed and may be retried elsewhere).

Flow control (§5.2): our SETTINGS_INITIAL_WINDOW_SIZE and the connection window are opened to
the maximum at once and the connection window is given back as response bodies arrive, so a
server never waits on this client. PING is acknowledged (§6.7), SETTINGS acknowledged and
applied (§6.5.3), server push refused (SETTINGS_ENABLE_PUSH 0). A server breaking the protocol
gets GOAWAY with the error code (§5.4.1) and the connection is over (:attr:`closed`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gateway.n5g_eir.frames import (
    ACK,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    MAX_WINDOW,
    PREFACE,
    ErrorCode,
    FrameType,
    Http2Error,
    Setting,
    frame,
    goaway_frame,
    header_fragment,
    keep_unread,
    read_frames,
    settings_frame,
    settings_values,
    unpad,
    unread,
    window_update_frame,
)
from gateway.n5g_eir.hpack import HpackDecoder, HpackError, encode_headers, table_size_update

_UINT32 = struct.Struct(">I")
_MAX_STREAM_ID = 2**31 - 1
_MAX_HEADER_LIST = 65_536  # SETTINGS_MAX_HEADER_LIST_SIZE we announce for responses


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    stream_id: int
    status: int
    content_type: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The server reset the stream (§6.4), e.g. REFUSED_STREAM: not processed, retryable."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """GOAWAY received (§6.8), or sent by us for the server's protocol error: no new streams;
    the ones above ``last_stream_id`` were not processed (always so for a GOAWAY of ours)."""

    error_code: int
    last_stream_id: int
    reason: str
    by_peer: bool


Event = ResponseReceived | StreamReset | ConnectionTerminated


def request_block(method: bytes, scheme: bytes, authority: bytes, path: bytes,
                  *headers: tuple[bytes, bytes]) -> bytes:
    """The header block of a request (§8.3.1 pseudo-header fields first), stateless: static
    indexes and literals without indexing, so it can be built once and sent on any connection."""
    return encode_headers([(b":method", method), (b":scheme", scheme),
                           (b":authority", authority), (b":path", path), *headers])


_ProtocolError = Http2Error


class _Response:
    __slots__ = ("body", "content_type", "status")

    def __init__(self) -> None:
        self.status = 0  # 0: the final response's header block has not arrived
        self.content_type = b""
        self.body = bytearray()


class Http2ClientSession:
    def __init__(self) -> None:
        self._decoder = HpackDecoder()
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._streams: dict[int, _Response] = {}  # open or half-closed (local)
        self._waiting: list[tuple[int, bytes]] = []  # past the concurrency limit, in order
        self._waiting_head = 0
        self._next_stream_id = 1
        self._max_streams = 100  # §6.5.2 recommends at least 100 until the server says
        self._peer_max_frame = DEFAULT_MAX_FRAME_SIZE
        self._size_update = b""
        self._settings_received = False
        self._consumed = 0  # connection window used by DATA since we last gave it back
        self._continuation: tuple[int, bool, bytearray] | None = None
        self._terminated = False
        self.goaway: ConnectionTerminated | None = None

    @property
    def closed(self) -> bool:
        """No new stream can be opened: GOAWAY sent or received."""
        return self._terminated

    @property
    def settings_received(self) -> bool:
        """The server's connection preface (its SETTINGS) arrived: it speaks HTTP/2."""
        return self._settings_received

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def max_concurrent_streams(self) -> int:
        return self._max_streams

    def initiate(self) -> None:
        """The client connection preface (§3.4): the magic, our SETTINGS and an open window."""
        self._out.append(PREFACE)
        self._out.append(settings_frame({
            Setting.ENABLE_PUSH: 0,
            Setting.INITIAL_WINDOW_SIZE: MAX_WINDOW,
            Setting.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST,
        }))
        self._out.append(window_update_frame(0, MAX_WINDOW - DEFAULT_WINDOW))

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- requests -------------------------------------------------------------------------------
    def request(self, header_block: bytes) -> int:
        """Open the next stream with a request without body; its stream id. The HEADERS go out
        at once, or when a stream closes if the server's concurrency limit is reached."""
        if self._terminated:
            raise ConnectionError("the HTTP/2 connection is closing (GOAWAY)")
        stream_id = self._next_stream_id
        if stream_id > _MAX_STREAM_ID:  # §5.1.1: a new connection is needed
            raise ConnectionError("stream identifiers exhausted on this connection")
        self._next_stream_id += 2
        if len(self._streams) < self._max_streams and self._waiting_head == len(self._waiting):
            self._open(stream_id, header_block)
        else:
            self._waiting.append((stream_id, header_block))
        return stream_id

    def _open(self, stream_id: int, block: bytes) -> None:
        if self._size_update:
            block = self._size_update + block
            self._size_update = b""
        if len(block) > self._peer_max_frame:  # never for a GetEquipmentStatus request
            raise ValueError("header block larger than one frame")
        self._streams[stream_id] = _Response()
        self._out.append(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream_id, block))

    def _open_waiting(self) -> None:
        waiting = self._waiting
        while (self._waiting_head < len(waiting) and len(self._streams) < self._max_streams
               and not self._terminated):
            stream_id, block = waiting[self._waiting_head]
            self._waiting_head += 1
            self._open(stream_id, block)
        if self._waiting_head == len(waiting):
            waiting.clear()
            self._waiting_head = 0

    def close(self) -> None:
        """Leave (§6.8): GOAWAY NO_ERROR; responses still in flight keep coming."""
        if not self._terminated:
            self._terminated = True
            self._out.append(goaway_frame(0, ErrorCode.NO_ERROR))

    # -- input ----------------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the server; returns what they completed, in order."""
        buf = unread(self._buffer, data)
        events: list[Event] = []
        pos = 0
        try:
            for frame_type, flags, stream_id, payload, end in read_frames(buf, pos):
                pos = end
                self._frame(frame_type, flags, stream_id, payload, events)
        except _ProtocolError as exc:
            self._fail(exc.code, str(exc), events)
            self._buffer.clear()
            return events
        keep_unread(self._buffer, buf, pos)
        if self._consumed >= MAX_WINDOW // 2:
            self._out.append(window_update_frame(0, self._consumed))
            self._consumed = 0
        self._open_waiting()
        return events

    def _fail(self, code: ErrorCode, reason: str, events: list[Event]) -> None:
        self._out.append(goaway_frame(0, code, reason.encode()[:128]))
        self._terminated = True
        events.append(ConnectionTerminated(code, 0, reason, by_peer=False))

    def _frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes,
               events: list[Event]) -> None:
        if self._continuation is not None and (
            frame_type != FrameType.CONTINUATION or stream_id != self._continuation[0]
        ):
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "header block interrupted")  # §6.10
        if not self._settings_received and frame_type != FrameType.SETTINGS:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "server preface is not SETTINGS")
        if frame_type == FrameType.DATA:
            self._on_data(flags, stream_id, payload, events)
        elif frame_type == FrameType.HEADERS:
            self._on_headers(flags, stream_id, payload, events)
        elif frame_type == FrameType.CONTINUATION:
            self._on_continuation(flags, stream_id, payload, events)
        elif frame_type == FrameType.SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif frame_type == FrameType.PING:
            if stream_id or len(payload) != 8:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "malformed PING")
            if not flags & ACK:
                self._out.append(frame(FrameType.PING, ACK, 0, payload))
        elif frame_type == FrameType.RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "malformed RST_STREAM")
            if self._streams.pop(stream_id, None) is not None:
                events.append(StreamReset(stream_id, _UINT32.unpack(payload)[0]))
        elif frame_type == FrameType.GOAWAY:
            self._on_goaway(stream_id, payload, events)
        elif frame_type == FrameType.WINDOW_UPDATE:
            if len(payload) != 4:
                raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
            # We send no DATA: the windows the server grants are never used.
        elif frame_type == FrameType.PUSH_PROMISE:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
        # PRIORITY and unknown types (§5.5) are ignored.

    def _on_data(self, flags: int, stream_id: int, payload: bytes,
                 events: list[Event]) -> None:
        if not stream_id:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        self._consumed += len(payload)  # flow control counts the padding too (§6.9.1)
        response = self._streams.get(stream_id)
        if response is None:
            return  # a stream we gave up on (§5.1: frames may still arrive after RST_STREAM)
        if not response.status:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "DATA before the response headers")
        start, end = unpad(flags, payload)
        response.body += payload[start:end]
        if flags & END_STREAM:
            self._complete(stream_id, response, events)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes,
                    events: list[Event]) -> None:
        if not stream_id:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = header_fragment(flags, payload)
        end_stream = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._header_block(stream_id, end_stream, fragment, events)
        else:
            self._continuation = (stream_id, end_stream, bytearray(fragment))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes,
                         events: list[Event]) -> None:
        if self._continuation is None:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        block = self._continuation[2]
        block += payload
        if len(block) > _MAX_HEADER_LIST:
            raise _ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            _, end_stream, _ = self._continuation
            self._continuation = None
            self._header_block(stream_id, end_stream, bytes(block), events)

    def _header_block(self, stream_id: int, end_stream: bool, block: bytes,
                      events: list[Event]) -> None:
        try:  # decoded even for a stream we dropped: the HPACK context must follow (§4.3)
            headers, _ = self._decoder.decode(block, _MAX_HEADER_LIST)
        except HpackError as exc:
            raise _ProtocolError(ErrorCode.COMPRESSION_ERROR, str(exc)) from None
        response = self._streams.get(stream_id)
        if response is None:
            if stream_id % 2 == 0 or stream_id >= self._next_stream_id:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "HEADERS on an idle stream")
            return
        if response.status:  # trailers (§8.1)
            if not end_stream:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            self._complete(stream_id, response, events)
            return
        status = b""
        content_type = b""
        for name, value in headers:
            if name == b":status":
                status = value
            elif name == b"content-type":
                content_type = value
        if len(status) != 3 or not status.isdigit():
            self._reset_stream(stream_id, events)  # §8.1.1: malformed response
            return
        code = int(status)
        if code < 200:  # §8.1: informational responses precede the final one
            return
        response.status = code
        response.content_type = content_type
        if end_stream:
            self._complete(stream_id, response, events)

    def _reset_stream(self, stream_id: int, events: list[Event]) -> None:
        del self._streams[stream_id]
        self._out.append(frame(FrameType.RST_STREAM, 0, stream_id,
                               _UINT32.pack(ErrorCode.PROTOCOL_ERROR)))
        events.append(StreamReset(stream_id, ErrorCode.PROTOCOL_ERROR))

    def _complete(self, stream_id: int, response: _Response, events: list[Event]) -> None:
        del self._streams[stream_id]
        events.append(ResponseReceived(stream_id, response.status, response.content_type,
                                       bytes(response.body)))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        values = settings_values(payload)
        self._settings_received = True
        for setting, value in values:
            if setting == Setting.MAX_CONCURRENT_STREAMS:
                self._max_streams = value
            elif setting == Setting.MAX_FRAME_SIZE:
                self._peer_max_frame = value
            elif setting == Setting.HEADER_TABLE_SIZE and value < 4096:
                # Our blocks never use the dynamic table; RFC 7541 §4.2 still wants the
                # encoder to acknowledge a smaller limit at the start of its next block.
                self._size_update = table_size_update(0)
        self._out.append(frame(FrameType.SETTINGS, ACK, 0))

    def _on_goaway(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id or len(payload) < 8:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "malformed GOAWAY")
        last, code = struct.unpack_from(">II", payload)
        last &= 0x7FFFFFFF
        self._terminated = True
        debug = payload[8:].decode("utf-8", "replace")
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"{code:#x}"
        terminated = ConnectionTerminated(code, last, f"GOAWAY {name}" +
                                          (f" ({debug})" if debug else ""), by_peer=True)
        self.goaway = terminated
        events.append(terminated)
        # §6.8: streams above the last one were not processed and will not be answered.
        for stream in [s for s in self._streams if s > last]:
            del self._streams[stream]
            events.append(StreamReset(stream, ErrorCode.REFUSED_STREAM))
        for stream, _ in self._waiting[self._waiting_head:]:
            events.append(StreamReset(stream, ErrorCode.REFUSED_STREAM))
        self._waiting.clear()
        self._waiting_head = 0
