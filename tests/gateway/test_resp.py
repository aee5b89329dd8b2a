"""RESP2 codec (gateway/resp.py), sans-IO: golden wire vectors, any split of the bytes, and
hiredis (redis-py's C parser, an independent implementation) as the reference reader."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.resp import MAX_LINE, ProtocolError, Reply, RespError, RespReader, bulk, command

hiredis = pytest.importorskip("hiredis", reason="hiredis (the 'shared' extra) is the reference")

# A reply to the clone-count script, as redis-server 7 sends it.
SCRIPT_REPLY = b"*3\r\n:1\r\n:2\r\n:11\r\n"


def test_golden_replies() -> None:
    reader = RespReader()
    assert reader.feed(
        b"+OK\r\n:-5\r\n$3\r\nabc\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
        b"*2\r\n$2\r\nhi\r\n*1\r\n:7\r\n" + SCRIPT_REPLY
    ) == ["OK", -5, b"abc", b"", None, None, [], [b"hi", [7]], [1, 2, 11]]
    assert reader.buffered == 0


def test_an_error_reply_is_a_value_with_its_prefix() -> None:
    [error] = RespReader().feed(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
    assert isinstance(error, RespError)
    assert error.prefix == "NOSCRIPT"
    assert str(error) == "NOSCRIPT No matching script. Please use EVAL."


def test_a_reply_split_anywhere_waits_for_the_rest() -> None:
    data = b"$5\r\nhe\r\no\r\n" + SCRIPT_REPLY
    for cut in range(len(data) + 1):
        reader = RespReader()
        first = reader.feed(data[:cut])
        assert first + reader.feed(data[cut:]) == [b"he\r\no", [1, 2, 11]], cut
        assert reader.buffered == 0


@pytest.mark.parametrize("data", [
    b"?1\r\n",  # no such type
    b":1x\r\n", b":+1\r\n", b": 1\r\n", b":\r\n",  # not RESP integers (int() takes some)
    b"$3\r\nabcd\r\n",  # the bulk string is longer than it says
    b"$-2\r\n", b"*-3\r\n",  # negative lengths other than -1 (nil)
    b"\r\n",  # an empty line
])
def test_what_is_not_resp2_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        RespReader().feed(data)


def test_an_endless_line_is_refused_not_buffered_for_ever() -> None:
    reader = RespReader()
    with pytest.raises(ProtocolError, match="longer than"):
        reader.feed(b"+" + b"x" * (MAX_LINE + 1))


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert command("EVALSHA", b"ab", 2, 1.5) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$3\r\n1.5\r\n"
    )
    assert bulk(b"") == b"$0\r\n\r\n"
    assert command("SET", "k", "é") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n"


def encode(reply: Reply) -> bytes:
    """The wire form of ``reply`` (what a Redis server would send)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, RespError):
        return b"-%b\r\n" % str(reply).encode()
    if isinstance(reply, str):
        return b"+%b\r\n" % reply.encode()
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return bulk(reply)
    return b"*%d\r\n" % len(reply) + b"".join(encode(item) for item in reply)


simple = st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=20)
replies: st.SearchStrategy[Reply] = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=40)
    | simple
    | simple.map(lambda text: RespError("ERR " + text)),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


def plain(reply: object) -> object:
    """Replies in hiredis's terms: its errors are ReplyError, its simple strings bytes."""
    if isinstance(reply, RespError | hiredis.ReplyError):
        return ("error", str(reply))
    if isinstance(reply, str):
        return reply.encode()
    if isinstance(reply, list):
        return [plain(item) for item in reply]
    return reply


@given(st.lists(replies, min_size=1, max_size=5), st.data())
def test_reads_as_hiredis_does_however_the_bytes_are_split(
    sent: list[Reply], data: st.DataObject
) -> None:
    wire = b"".join(encode(reply) for reply in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    reference = hiredis.Reader()
    reference.feed(wire)
    expected = []
    while (item := reference.gets()) is not False:
        expected.append(item)
    reader = RespReader()
    got: list[Reply] = []
    for start, stop in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got.extend(reader.feed(wire[start:stop]))
    assert [plain(r) for r in got] == [plain(r) for r in expected]
    assert reader.buffered == 0
