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
from gateway.resp_errors import Incomplete, ProtocolError, RespError

__all__ = ["Incomplete", "ProtocolError", "Reply", "RespError", "RespReader", "bulk", "command"]

Reply = Union[str, int, bytes, None, "RespError", list["Reply"]]

MAX_BULK = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len default
MAX_LINE = 64 * 1024  # a header or simple line longer than this is not RESP2 from Redis
# Integer replies in a row, each as _integer accepts it (digits with an optional minus).
_INTEGER_LINES = re.compile(rb"(?::-?[0-9]+\r\n)*")


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
    """Feed bytes as they arrive; :meth:`feed` returns the replies they completed, in order."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Reply]:
        buffer = self._buffer + data if self._buffer else data
        replies: list[Reply] = []
        position = 0
        end = len(buffer)
        while position < end:
            try:
                reply, position = self._parse(buffer, position)
            except Incomplete:
                break
            replies.append(reply)
        self._buffer = buffer[position:]
        return replies

    @property
    def buffered(self) -> int:
        """Bytes held of a reply not yet complete."""
        return len(self._buffer)

    def _line(self, buffer: bytes, position: int) -> tuple[bytes, int]:
        stop = buffer.find(b"\r\n", position)
        if stop < 0:
            if len(buffer) - position > MAX_LINE:
                raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
            raise Incomplete
        return buffer[position:stop], stop + 2

    def _parse(self, buffer: bytes, position: int) -> tuple[Reply, int]:
        line, position = self._line(buffer, position)
        if not line:
            raise ProtocolError("an empty line where a reply begins")
        kind, rest = line[0], line[1:]
        if kind == 0x3A:  # ':' integer
            return _integer(rest), position
        if kind == 0x2B:  # '+' simple string
            return rest.decode("utf-8", "replace"), position
        if kind == 0x2D:  # '-' error
            return RespError(rest.decode("utf-8", "replace")), position
        if kind == 0x24:  # '$' bulk string
            size = _integer(rest)
            if size == -1:
                return None, position
            if not 0 <= size <= MAX_BULK:
                raise ProtocolError(f"bulk string length {size}")
            stop = position + size
            if len(buffer) < stop + 2:
                raise Incomplete
            if buffer[stop:stop + 2] != b"\r\n":
                raise ProtocolError("a bulk string not followed by CRLF")
            return buffer[position:stop], stop + 2
        if kind == 0x2A:  # '*' array
            count = _integer(rest)
            if count == -1:
                return None, position
            if count < 0:
                raise ProtocolError(f"array length {count}")
            if count:
                # An array of integers (the clone script's reply, one a check) read in one go:
                # the integer lines that follow matched at once, split at once; ~7,000
                # instructions an element through the nested calls below, interpreted.
                matched = _INTEGER_LINES.match(buffer, position)  # matches, if only ""
                end = position if matched is None else matched.end()
                lines = buffer[position:end].split(b"\r\n", count)
                if len(lines) > count:
                    return [int(line[1:]) for line in lines[:count]], end - len(lines[count])
            items: list[Reply] = []
            for _ in range(count):
                item, position = self._parse(buffer, position)
                items.append(item)
            return items, position
        raise ProtocolError(f"unknown reply type {bytes([kind])!r}")


def _integer(text: bytes) -> int:
    # int() accepts what RESP does not ("+1", " 1", "1_0"): digits with an optional minus only.
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit() or not digits.isascii():
        raise ProtocolError(f"not an integer: {text[:40]!r}")
    return int(text)
