"""Stream framing: bytes from a transport, in any split, into whole Diameter messages.

RFC 6733 §2.1: data that cannot be framed (wrong version, a length that is not a multiple of 4 or
shorter than the header) leaves no way to find the next message; ``FramingError`` tells the caller
to answer if it can and close the connection.
"""

from __future__ import annotations

from diameter.codec import HEADER_LENGTH
from diameter.errors import FramingError

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
# What an unframeable message keeps of its AVPs, to copy Session-Id and Proxy-Info into the answer.
_FOLLOWING_KEPT = 4096


class Framer:
    __slots__ = ("_buffer", "max_message_size")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self.max_message_size = max_message_size

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return every message now complete, oldest first."""
        # Messages are sliced from one immutable bytes: one copy each (a bytearray's slice
        # then bytes() was two, plus the read appended to the buffer first); a read of whole
        # messages is not copied into the buffer at all, and one holding exactly one message
        # is returned as it is.
        buf = self._buffer
        if buf:
            if len(buf) >= HEADER_LENGTH:
                # A message is under way, its header checked already: while the read does not
                # complete it, it is only appended. Copying the buffer each time cost every
                # read in proportion to what was buffered before: a peer sending a large
                # message one byte per segment (slowloris) made each octet cost a copy of it.
                pending = (buf[1] << 16) | (buf[2] << 8) | buf[3]
                if len(buf) + len(data) < pending:
                    buf += data
                    return []
            buf += data
            source = bytes(buf)
            buf.clear()
        elif isinstance(data, bytes):
            source = data
        else:
            source = bytes(data)
        out: list[bytes] = []
        offset = 0
        size = len(source)
        limit = self.max_message_size
        while size - offset >= HEADER_LENGTH:
            # The header's first word: version 1 and a whole-word length within the limit is
            # every well-behaved message; anything else is checked (and named) by _length.
            length = (source[offset + 1] << 16) | (source[offset + 2] << 8) | source[offset + 3]
            if source[offset] != 1 or length & 3 or not HEADER_LENGTH <= length <= limit:
                try:
                    length = self._length(source, offset)
                except FramingError as exc:
                    exc.messages = tuple(out)
                    exc.following = source[offset + HEADER_LENGTH : offset + _FOLLOWING_KEPT]
                    raise  # the buffer stays empty: nothing after unframeable bytes is kept
            end = offset + length
            if end > size:
                break
            out.append(source if length == size else source[offset:end])
            offset = end
        if offset < size:
            buf += source[offset:] if offset else source
        return out

    def _length(self, buf: bytes | bytearray | memoryview, offset: int = 0) -> int:
        version = buf[offset]
        length = int.from_bytes(buf[offset + 1 : offset + 4], "big")
        if version != 1:
            raise FramingError(f"Diameter version {version}", 5011, self._header(buf, offset))
        if length < HEADER_LENGTH or length & 3:
            raise FramingError(f"message length {length}", 5015, self._header(buf, offset))
        if length > self.max_message_size:
            raise FramingError(
                f"message length {length} over the {self.max_message_size} byte limit",
                5015,
                self._header(buf, offset),
            )
        return length

    @staticmethod
    def _header(buf: bytes | bytearray | memoryview, offset: int) -> bytes | None:
        head = bytes(buf[offset : offset + HEADER_LENGTH])
        return head if len(head) == HEADER_LENGTH else None
