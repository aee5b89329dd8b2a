"""Fuzz target of the RESP2 reader (gateway/resp.py), sans-IO: what a Redis server, or anything
answering on its address, sends the shared clone count and the observation stream.

One input is the byte stream read from the connection. :class:`RespReader` is fed it whole, a
byte at a time, and cut after every CR (inside each CRLF): the replies, and whether it ends
inside one, must not depend on how the bytes were split; nothing may be raised but
:class:`ProtocolError`. What it reads without a protocol error, hiredis (redis-py's C reader, an
independent implementation) must read alike, reply for reply.
"""

from __future__ import annotations

from typing import Any

from gateway.resp import ProtocolError, Reply, RespReader, bulk, command


def _plain(reply: object) -> object:
    """A reply in terms both readers share: strings as text (hiredis decodes bulk and simple
    strings alike), errors as ("error", text)."""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    if isinstance(reply, list):
        return [_plain(item) for item in reply]
    if isinstance(reply, Exception):
        return ("error", str(reply))
    return reply


def _read(data: bytes, pieces: list[bytes]) -> tuple[list[object], bool] | None:
    """The replies (:func:`_plain`: errors are compared by their text) and whether one is
    left incomplete, or None on a protocol error."""
    reader = RespReader()
    replies: list[Reply] = []
    try:
        for piece in pieces:
            replies += reader.feed(piece)
    except ProtocolError:
        return None
    assert reader.incomplete or reader.buffered == 0
    return [_plain(reply) for reply in replies], reader.incomplete


class RespHarness:
    def __init__(self) -> None:
        import hiredis

        self._hiredis: Any = hiredis

    def run(self, data: bytes) -> None:
        whole = _read(data, [data])
        byte_by_byte = _read(data, [data[n:n + 1] for n in range(len(data))])
        at_cr = _read(data, [piece + b"\r" for piece in data.split(b"\r")[:-1]]
                      + [data.split(b"\r")[-1]])
        if whole is None:
            assert byte_by_byte is None and at_cr is None, "refused only when whole"
            return
        assert byte_by_byte == whole and at_cr == whole, "depends on how the bytes were split"
        replies, _ = whole
        reference = self._hiredis.Reader(encoding="utf-8", errors="replace")
        reference.feed(data)
        theirs = []
        while (item := reference.gets()) is not False:
            theirs.append(item)
        # hiredis, too, has no more whole replies than ours (gets() False where ours stopped).
        assert replies == [_plain(r) for r in theirs], data[:80]


def resp_seeds() -> dict[str, bytes]:
    """Replies as redis-server 7 sends them to the gateway's commands."""
    return {
        "resp-script": b"*3\r\n:1\r\n:2\r\n:11\r\n",
        "resp-simple": b"+OK\r\n+PONG\r\n",
        "resp-error": b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
        "resp-bulk": bulk(b"f0e1d2c3b4a5968778695a4b3c2d1e0f00112233") + b"$-1\r\n$0\r\n\r\n",
        "resp-xreadgroup": (b"*1\r\n*2\r\n$12\r\neir:sighting\r\n*2\r\n*2\r\n$15\r\n"
                            b"1733400000000-0\r\n*2\r\n$1\r\nd\r\n$4\r\nabcd\r\n"
                            b"*2\r\n$15\r\n1733400000000-1\r\n*-1\r\n"),
        "resp-nested": b"*2\r\n*0\r\n*1\r\n*2\r\n:-9223372036854775808\r\n" + bulk(b"x"),
        "resp-bulks": command("EVALSHA", b"ab" * 20, 2, "k", 1.5),  # an array of bulk strings
        "resp-pipeline": b":1\r\n" * 8 + b"*-1\r\n-ERR x\r\n*2\r\n:1\r\n:2",  # cut short
    }
