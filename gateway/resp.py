"""RESP2, the Redis serialization protocol, sans-IO: commands to bytes, bytes to replies.

What the shared clone count needs from a standalone Redis is one EVALSHA per event loop tick
and its reply, an array of integers. redis-py builds a command object per call and encodes
each argument through its own layers; here a command is one ``bytes`` the caller assembles
(:func:`command`, or :func:`bulk` pieces joined), and :class:`RespReader` turns whatever bytes
arrived into whole replies, however they were split across reads.

Replies (https://redis.io/docs/latest/develop/reference/protocol-spec/, RESP2): simple string
``+OK`` -> ``str``; error ``-ERR ...`` -> :class:`RespError` (a value, not raised: one failed
command of a pipeline leaves the others' replies); integer ``:1`` -> ``int``; bulk string
``$3 abc`` -> ``bytes`` (``$-1``: None); array ``*2 ...`` -> ``list`` (``*-1``: None).
"""

from __future__ import annotations

import re
from typing import Union

# Interpreted, not here: mypyc's exception classes do not clear their weak references when
# freed (it Py_CLEARs the weak-reference list slot): one weakly referenced crashes the GC.
from gateway.resp_errors import ProtocolError, RespError

__all__ = ["ProtocolError", "Reply", "RespError", "RespReader", "bulk", "command"]

Reply = Union[str, int, bytes, None, "RespError", list["Reply"]]

MAX_BULK = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len default
MAX_LINE = 64 * 1024  # a header or simple line longer than this is not RESP2 from Redis
MAX_ARRAY = 2**32 - 1  # elements of an array: hiredis's bound (Redis's own is lower)
# Arrays within arrays: Redis's deepest (XINFO STREAM FULL) are a few levels; a reply nested
# deeper is refused rather than built (whoever walks it, repr() in a log line, recurses).
MAX_DEPTH = 128
# Integer replies in a row, each as _integer accepts it and of at most 18 digits (always within
# RESP's 64 bits, so that the fast path below needs no range check; a longer one goes through
# _integer).
_INTEGER_LINES = re.compile(rb"(?::(?:-?[1-9][0-9]{0,17}|0)\r\n)*")
_INT64 = 1 << 63
# One-digit integer lines: each digit read as "0" to check a line's shape (":0\r\n"), and
# as its value.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_DIGIT_VALUES = bytes.maketrans(b"0123456789", bytes(range(10)))
_ZERO_LINE = b":0\r\n"
_TYPES = b"+-:$*"  # RESP2's first bytes: simple string, error, integer, bulk string, array


def bulk(value: bytes) -> bytes:
    """One bulk string argument: ``$LEN\\r\\nVALUE\\r\\n``."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(*args: bytes | str | int | float) -> bytes:
    """A command as an array of bulk strings (what Redis accepts from clients)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        else:
            value = repr(arg).encode()
        parts.append(bulk(value))
    return b"".join(parts)


class RespReader:
    """Feed bytes as they arrive; :meth:`feed` returns the replies they completed, in order.

    The work is linear in the bytes, however they are split: an array's items are kept as they
    complete (the arrays begun on a stack of their own, not by recursion), and a read that ends
    inside a line or a bulk string holds that piece, unread, until the bytes it needs arrived.
    """

    def __init__(self) -> None:
        # The start of one element (a line, or a bulk string with its header) not yet whole,
        # in the pieces it came in, and what it waits for: this many bytes in all, or, when 0,
        # the CRLF that ends its line.
        self._held: list[bytes] = []
        self._held_size = 0
        self._wanted = 0
        # The arrays begun and not yet whole, innermost last, and how many items each lacks.
        self._arrays: list[list[Reply]] = []
        self._missing: list[int] = []

    def feed(self, data: bytes) -> list[Reply]:
        """The replies ``data`` completed; raises :class:`ProtocolError` on what is not RESP2
        (the reader is of no further use: the connection cannot be trusted)."""
        held = self._held
        if held:
            if not data:
                return []
            size = self._held_size + len(data)
            wanted = self._wanted
            if wanted:
                if size < wanted:
                    held.append(data)
                    self._held_size = size
                    return []
            elif b"\r\n" not in data and not (data[0] == 0x0A and held[-1][-1] == 0x0D):
                if size > MAX_LINE + 1:  # not even its CR ending it
                    raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
                held.append(data)
                self._held_size = size
                return []
            held.append(data)
            data = b"".join(held)
            self._held = []
            self._held_size = 0
        return self._read(data)

    @property
    def buffered(self) -> int:
        """Bytes held of an element not yet complete (an unfinished array's items are held as
        replies, not bytes: :attr:`incomplete` says whether there is one)."""
        return self._held_size

    @property
    def incomplete(self) -> bool:
        """A reply has begun and not ended."""
        return bool(self._held or self._arrays)

    def _hold(self, buffer: bytes, position: int, wanted: int) -> None:
        rest = buffer[position:]
        self._held = [rest]
        self._held_size = len(rest)
        self._wanted = wanted

    def _read(self, buffer: bytes) -> list[Reply]:
        replies: list[Reply] = []
        arrays = self._arrays
        missing = self._missing
        position = 0
        end = len(buffer)
        while position < end:
            stop = buffer.find(b"\r\n", position)
            if stop < 0:
                if end - position > MAX_LINE + 1:
                    raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
                if buffer[position] not in _TYPES:  # known at its first byte
                    raise ProtocolError(f"unknown reply type {buffer[position:position + 1]!r}")
                self._hold(buffer, position, 0)
                break
            if stop - position > MAX_LINE:
                raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
            if stop == position:
                raise ProtocolError("an empty line where a reply begins")
            kind = buffer[position]
            after = stop + 2
            item: Reply
            if kind == 0x3A:  # ':' integer
                item = _integer(buffer[position + 1:stop])
            elif kind == 0x24:  # '$' bulk string
                size = _integer(buffer[position + 1:stop])
                if size == -1:
                    item = None
                else:
                    if not 0 <= size <= MAX_BULK:
                        raise ProtocolError(f"bulk string length {size}")
                    data_end = after + size
                    if end < data_end + 2:
                        self._hold(buffer, position, data_end + 2 - position)
                        break
                    if buffer[data_end:data_end + 2] != b"\r\n":
                        raise ProtocolError("a bulk string not followed by CRLF")
                    item = buffer[after:data_end]
                    after = data_end + 2
            elif kind == 0x2A:  # '*' array
                count = _integer(buffer[position + 1:stop])
                if count == -1:
                    item = None
                elif count == 0:
                    item = []
                elif not 0 < count <= MAX_ARRAY:
                    raise ProtocolError(f"array length {count}")
                else:
                    if len(arrays) >= MAX_DEPTH:
                        raise ProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
                    # An array of one-digit integers (the clone script's counts, for a
                    # threshold up to 8) read by bytes operations over the whole array: its
                    # lines are ":D\r\n", 4 bytes each, checked at once, their digits read at
                    # once (~670 instructions an element by the lines' match below).
                    width = count << 2
                    digit_lines = buffer[after:after + width]
                    if (len(digit_lines) == width
                            and digit_lines.translate(_DIGITS_AS_ZERO) == _ZERO_LINE * count):
                        item = list(digit_lines[1::4].translate(_DIGIT_VALUES))
                        after += width
                    else:
                        # An array of integers read in one go: the integer lines that follow
                        # matched at once, split at once; ~7,000 instructions an element item
                        # by item, interpreted.
                        matched = _INTEGER_LINES.match(buffer, after)  # matches, if only ""
                        stop = after if matched is None else matched.end()
                        lines = buffer[after:stop].split(b"\r\n", count)
                        if len(lines) <= count:  # not all here, or not all integers
                            arrays.append([])
                            missing.append(count)
                            position = after
                            continue
                        item = [int(line[1:]) for line in lines[:count]]
                        after = stop - len(lines[count])
            elif kind == 0x2B or kind == 0x2D:  # '+' simple string, '-' error
                text = buffer[position + 1:stop]
                if b"\r" in text or b"\n" in text:  # "cannot contain a CR or LF"
                    raise ProtocolError(f"a CR or LF in a simple string or error: {text[:40]!r}")
                decoded = text.decode("utf-8", "replace")
                item = decoded if kind == 0x2B else RespError(decoded)
            else:
                raise ProtocolError(f"unknown reply type {bytes([kind])!r}")
            position = after
            while True:  # the item ends a reply, or goes into the innermost array begun
                if not arrays:
                    replies.append(item)
                    break
                innermost = arrays[-1]
                innermost.append(item)
                left = missing[-1] - 1
                if left:
                    missing[-1] = left
                    break
                arrays.pop()
                missing.pop()
                item = innermost
        return replies


def _integer(text: bytes) -> int:
    """A RESP integer: "a signed, base-10, 64-bit integer", as Redis writes one (no leading
    zero, no "-0": hiredis refuses them too). int() accepts what RESP does not ("+1", " 1",
    "1_0", "007") and raises ValueError past 4,300 digits: digits with an optional minus only,
    19 at most, checked first."""
    digits = text[1:] if text[:1] == b"-" else text
    if (not 0 < len(digits) <= 19 or not digits.isdigit() or not digits.isascii()
            or (digits[0] == 0x30 and len(text) > 1)):
        raise ProtocolError(f"not a 64-bit integer: {text[:40]!r}")
    value = int(text)
    # Only 19 digits can be out of range; compiled, the range's bounds are boxed integers.
    if len(digits) == 19 and not -_INT64 <= value < _INT64:
        raise ProtocolError(f"not a 64-bit integer: {text!r}")
    return value
