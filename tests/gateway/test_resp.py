"""RESP2 codec (gateway/resp.py), sans-IO: golden wire vectors, any split of the bytes, and
hiredis (redis-py's C parser, an independent implementation) as the reference reader."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.resp import (
    MAX_DEPTH,
    MAX_LINE,
    ProtocolError,
    Reply,
    RespError,
    RespReader,
    bulk,
    command,
)

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
    b"*4294967296\r\n", b"$536870913\r\n",  # past hiredis's 2^32-1 elements, 512 MiB
    b"\r\n",  # an empty line
    b"+O\rK\r\n", b"-ERR a\nb\r\n",  # a CR or LF in a simple string or error
])
def test_what_is_not_resp2_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        RespReader().feed(data)


def test_an_unknown_type_is_refused_at_its_first_byte() -> None:
    reader = RespReader()
    assert reader.feed(SCRIPT_REPLY + b"+O") == [[1, 2, 11]]
    with pytest.raises(ProtocolError, match="unknown reply type"):
        reader.feed(b"K\r\n\xff")  # not held until a CRLF comes (hiredis refuses it at once)


def test_an_endless_line_is_refused_not_buffered_for_ever() -> None:
    reader = RespReader()
    with pytest.raises(ProtocolError, match="longer than"):
        reader.feed(b"+" + b"x" * (MAX_LINE + 1))


def test_a_long_line_is_refused_however_it_arrives() -> None:
    line = b"+" + b"x" * (MAX_LINE + 1) + b"\r\n"
    with pytest.raises(ProtocolError, match="longer than"):
        RespReader().feed(line)  # whole: it was read
    reader = RespReader()
    with pytest.raises(ProtocolError, match="longer than"):
        for start in range(0, len(line), 1000):
            reader.feed(line[start:start + 1000])
    assert RespReader().feed(b"+" + b"x" * (MAX_LINE - 1) + b"\r\n") == ["x" * (MAX_LINE - 1)]


@pytest.mark.parametrize("data", [
    b":" + b"9" * 5000 + b"\r\n",  # past int()'s 4,300 digits: ValueError escaped
    b"*1\r\n:" + b"9" * 5000 + b"\r\n",  # the same in an array of integers (its fast path)
    b"$" + b"9" * 5000 + b"\r\n",
    b"*" + b"9" * 5000 + b"\r\n",
    b":9223372036854775808\r\n", b":-9223372036854775809\r\n",  # past 64 bits
    b"*2\r\n:1\r\n:18446744073709551616\r\n",
    b":00000000000000000001\r\n",  # 20 digits
    b":08\r\n", b":-0\r\n", b"*01\r\n:1\r\n", b"$-01\r\n",  # not as Redis writes them
])
def test_an_integer_is_64_bits_or_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="64-bit"):
        RespReader().feed(data)


def test_integers_at_the_64_bit_bounds() -> None:
    assert RespReader().feed(
        b":9223372036854775807\r\n:-9223372036854775808\r\n"
        b"*2\r\n:-999999999999999999\r\n:1000000000000000000\r\n"
    ) == [2**63 - 1, -(2**63), [-999999999999999999, 10**18]]


def test_arrays_nested_past_the_limit_are_a_protocol_error() -> None:
    # 100,000 levels raised RecursionError out of feed(), whole or split.
    deep = b"*1\r\n" * 100_000 + b":1\r\n"
    with pytest.raises(ProtocolError, match="nested deeper"):
        RespReader().feed(deep)
    reader = RespReader()
    with pytest.raises(ProtocolError, match="nested deeper"):
        for start in range(0, len(deep), 3):
            reader.feed(deep[start:start + 3])
    reader = RespReader()
    [reply] = reader.feed(b"*1\r\n" * MAX_DEPTH + b"$1\r\nx\r\n")
    for _ in range(MAX_DEPTH):
        assert isinstance(reply, list) and len(reply) == 1
        reply = reply[0]
    assert reply == b"x" and not reader.incomplete


def test_a_long_reply_in_small_pieces_is_read_once() -> None:
    """A reply split into many reads is not read again from its start at each: what is held
    between reads is the one element cut short, never the items already read (it held and
    re-parsed the whole reply so far, quadratic in the pieces)."""
    items = [b"%d" % n * 3 for n in range(20_000)]
    wire = b"*%d\r\n" % len(items) + b"".join(bulk(item) for item in items)
    reader = RespReader()
    got: list[Reply] = []
    most = 0
    for start in range(0, len(wire), 7):
        got += reader.feed(wire[start:start + 7])
        most = max(most, reader.buffered)
        assert reader.incomplete == (start + 7 < len(wire))
    assert got == [items]
    assert most < 7 + max(len(bulk(item)) for item in items)
    # A long bulk string a byte at a time: held in its pieces, joined once it is whole.
    body = bytes(range(256)) * 256
    reader = RespReader()
    wire = bulk(body) + b":1\r\n"
    got = []
    for n in range(len(wire)):
        got += reader.feed(wire[n:n + 1])
    assert got == [body, 1] and reader.buffered == 0 and not reader.incomplete


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


def _read_all(reader: object, wire: bytes) -> list[object]:
    """Every reply in ``wire`` as ``plain`` gives it, or the exception's class name."""
    try:
        if isinstance(reader, RespReader):
            return [plain(r) for r in reader.feed(wire)]
        assert isinstance(reader, hiredis.Reader)
        reader.feed(wire)
        out = []
        while (item := reader.gets()) is not False:
            out.append(plain(item))
        return out
    except (ProtocolError, hiredis.ProtocolError):
        return ["protocol error"]


@given(st.lists(st.integers(0, 9), min_size=1, max_size=30), st.integers(0, 200),
       st.sampled_from(b":-+*$019\r\nx"))
def test_an_array_of_digits_with_a_byte_changed_reads_as_hiredis_does(
    counts: list[int], at: int, byte: int
) -> None:
    """The clone counts' array (one-digit integers, read by bytes operations over the whole
    array) with any one byte changed: the same replies as hiredis, or a protocol error for
    both."""
    wire = bytearray(encode(counts) + b":7\r\n")  # and a reply after it
    wire[at % len(wire)] = byte
    assert _read_all(RespReader(), bytes(wire)) == _read_all(hiredis.Reader(), bytes(wire))
