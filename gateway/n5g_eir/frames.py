"""HTTP/2 frames as data (RFC 9113 §4, §6, §7, §11.2): types, flags, error codes, settings,
and the per-type rules a received frame is checked against before it is acted on."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import NamedTuple

from gateway.n5g_eir.errors import Http2Error as Http2Error

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # §3.4 client connection preface
HEADER = struct.Struct(">HBBBI")  # §4.1: 24-bit length (as 16 + 8), type, flags, R + stream id
HEADER_SIZE = 9
DEFAULT_MAX_FRAME_SIZE = 16_384  # §6.5.2 SETTINGS_MAX_FRAME_SIZE initial value
DEFAULT_WINDOW = 65_535  # §6.9.2 initial flow-control window
MAX_WINDOW = 2**31 - 1  # §6.9.1


class FrameType(enum.IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


# §6 flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20


class ErrorCode(enum.IntEnum):
    """§7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(enum.IntEnum):
    """§6.5.2."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


# One frame as read (§4.1): type, flags, stream id (the reserved bit cleared: §4.1, it MUST be
# ignored when received), payload, and where the next frame starts. A plain tuple: one is built
# per frame, and a NamedTuple's constructor is a Python function.
Frame = tuple[int, int, int, bytes, int]


def read_frames(buffer: bytes | bytearray, pos: int) -> Iterator[Frame]:
    """The frames from ``buffer[pos]`` on that have all arrived. Both ends of a connection
    announce the default SETTINGS_MAX_FRAME_SIZE and never raise it, so a longer frame is a
    FRAME_SIZE_ERROR (§4.2) as soon as its header is read. (A generator: resuming it costs
    less than a call per frame.)"""
    size = len(buffer)
    unpack = HEADER.unpack_from
    while size - pos >= HEADER_SIZE:
        high, low, frame_type, flags, stream_id = unpack(buffer, pos)
        length = (high << 8) | low
        if length > DEFAULT_MAX_FRAME_SIZE:
            raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes")
        start = pos + HEADER_SIZE
        pos = start + length
        if pos > size:
            return
        yield frame_type, flags, stream_id & 0x7FFFFFFF, bytes(buffer[start:pos]), pos


def unread(buffer: bytearray, data: bytes) -> bytes | bytearray:
    """What to read frames from: ``data`` itself when nothing was left over from the last read
    (the usual case: no copy), else ``buffer`` with ``data`` added."""
    if not buffer:
        return data
    buffer += data
    return buffer


def keep_unread(buffer: bytearray, read: bytes | bytearray, pos: int) -> None:
    """Frames were read from ``read`` (what :func:`unread` gave) up to ``pos``: the rest, a
    frame not all arrived yet, waits in ``buffer`` for the next read."""
    if read is buffer:
        del buffer[:pos]
    elif pos < len(read):
        buffer += read[pos:]


def unpad(flags: int, payload: bytes) -> tuple[int, int]:
    """(start, end) of the content of a DATA or HEADERS frame, without its padding (§6.1,
    §6.2)."""
    if not flags & PADDED:
        return 0, len(payload)
    if not payload or payload[0] >= len(payload):
        raise Http2Error(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
    return 1, len(payload) - payload[0]


def header_fragment(flags: int, payload: bytes) -> bytes:
    """The header block fragment of a HEADERS frame: padding and priority fields off (§6.2)."""
    start, end = unpad(flags, payload)
    if flags & PRIORITY_FLAG:
        start += 5
        if start > end:
            raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short")
    return payload[start:end]


_SETTING = struct.Struct(">HI")


def settings_values(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) of a SETTINGS frame, each value within §6.5.2's bounds."""
    if len(payload) % 6:
        raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length")
    values = [_SETTING.unpack_from(payload, offset) for offset in range(0, len(payload), 6)]
    for setting, value in values:
        if setting == Setting.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise Http2Error(ErrorCode.FLOW_CONTROL_ERROR, "initial window")
        if setting == Setting.MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME_SIZE <= value <= 16_777_215:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE")
        if setting == Setting.ENABLE_PUSH and value > 1:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH")
    return values


class Rule(NamedTuple):
    """What §6 says of a frame type as received by a server."""

    on_connection: bool | None  # True: stream 0 only; False: a stream only; None: either
    length: int | None  # fixed payload length (FRAME_SIZE_ERROR otherwise), or None
    length_is_stream_error: bool = False  # a wrong length is a stream error, not a connection one


RULES: dict[FrameType, Rule] = {
    FrameType.DATA: Rule(False, None),  # §6.1
    FrameType.HEADERS: Rule(False, None),  # §6.2
    FrameType.PRIORITY: Rule(False, 5, True),  # §6.3
    FrameType.RST_STREAM: Rule(False, 4),  # §6.4
    FrameType.SETTINGS: Rule(True, None),  # §6.5 (length a multiple of 6: checked on receipt)
    FrameType.PUSH_PROMISE: Rule(None, None),  # §6.6: a client never sends it (§8.4)
    FrameType.PING: Rule(True, 8),  # §6.7
    FrameType.GOAWAY: Rule(True, None),  # §6.8 (at least 8)
    FrameType.WINDOW_UPDATE: Rule(None, 4),  # §6.9
    FrameType.CONTINUATION: Rule(False, None),  # §6.10
}


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return HEADER.pack(n >> 8, n & 0xFF, frame_type, flags, stream_id) + payload


def frame_start(frame_type: int, flags: int, length: int) -> bytes:
    """The first five octets of a frame header (§4.1): length, type, flags; the stream
    identifier (four octets) and the payload follow."""
    return HEADER.pack(length >> 8, length & 0xFF, frame_type, flags, 0)[:5]


def settings_frame(values: dict[Setting, int]) -> bytes:
    payload = b"".join(struct.pack(">HI", setting, value) for setting, value in values.items())
    return frame(FrameType.SETTINGS, 0, 0, payload)


def goaway_frame(last_stream_id: int, error: ErrorCode, debug: bytes = b"") -> bytes:
    return frame(FrameType.GOAWAY, 0, 0, struct.pack(">II", last_stream_id, error) + debug)


def rst_stream_frame(stream_id: int, error: ErrorCode) -> bytes:
    return frame(FrameType.RST_STREAM, 0, stream_id, struct.pack(">I", error))


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))
