"""Stream framing (RFC 6733 §2.1, §3): any split of the byte stream yields the same messages."""

from __future__ import annotations

import itertools
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diameter.codec import Message
from diameter.errors import DiameterError, FramingError
from diameter.framing import DEFAULT_MAX_MESSAGE_SIZE, Framer
from tests.diameter import vectors as v

STREAM_MESSAGES = [v.CER, v.DWR, v.ECR, v.ECA_2001, v.ECA_5422, v.DPR, v.STRAY_BYTES, v.ECR]
STREAM = b"".join(STREAM_MESSAGES)


def feed_in_pieces(pieces: list[bytes], framer: Framer | None = None) -> list[bytes]:
    framer = framer or Framer()
    out: list[bytes] = []
    for piece in pieces:
        out.extend(framer.feed(piece))
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[i:j] for i, j in itertools.pairwise(points)]


def test_one_whole_message_per_read() -> None:
    framer = Framer()
    for message in STREAM_MESSAGES:
        assert framer.feed(message) == [message]
        assert framer.pending == 0


def test_one_byte_at_a_time() -> None:
    framer = Framer()
    out = []
    for i in range(len(STREAM)):
        got = framer.feed(STREAM[i : i + 1])
        out.extend(got)
        # a message comes out exactly when its last byte arrives
        assert framer.pending == (i + 1) - sum(len(m) for m in out)
    assert out == STREAM_MESSAGES


def test_many_messages_in_one_read() -> None:
    framer = Framer()
    assert framer.feed(STREAM) == STREAM_MESSAGES
    assert framer.pending == 0


def test_messages_and_a_partial_one() -> None:
    framer = Framer()
    assert framer.feed(v.DWR + v.ECR[:25]) == [v.DWR]
    assert framer.pending == 25
    assert framer.feed(v.ECR[25:] + v.DPR[:3]) == [v.ECR]
    assert framer.pending == 3
    assert framer.feed(v.DPR[3:]) == [v.DPR]


def test_partial_header_then_rest() -> None:
    framer = Framer()
    assert framer.feed(v.DWR[:19]) == []
    assert framer.feed(v.DWR[19:]) == [v.DWR]


def test_empty_reads() -> None:
    framer = Framer()
    assert framer.feed(b"") == []
    assert framer.feed(v.DWR[:10]) == []
    assert framer.feed(b"") == []
    assert framer.feed(v.DWR[10:]) == [v.DWR]


def test_accepts_bytearray_and_memoryview_and_returns_bytes() -> None:
    framer = Framer()
    (first,) = framer.feed(bytearray(v.DWR))
    (second,) = framer.feed(memoryview(v.DPR))
    assert (first, second) == (v.DWR, v.DPR)
    assert type(first) is bytes and type(second) is bytes


def test_returned_messages_do_not_alias_the_buffer() -> None:
    framer = Framer()
    buf = bytearray(v.DWR + v.DPR[:10])
    (dwr,) = framer.feed(buf)
    buf[:] = bytes(len(buf))
    assert dwr == v.DWR
    assert framer.feed(v.DPR[10:]) == [v.DPR]


def test_random_splits_seeded() -> None:
    rnd = random.Random(6733)
    for _ in range(300):
        cuts = [rnd.randrange(len(STREAM)) for _ in range(rnd.randrange(1, 40))]
        assert feed_in_pieces(split_at(STREAM, cuts)) == STREAM_MESSAGES


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=60))
def test_any_split_yields_the_same_messages(cuts: list[int]) -> None:
    assert feed_in_pieces(split_at(STREAM, cuts)) == STREAM_MESSAGES


# -- unframeable streams -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (v.BAD_VERSION, 5011),
        (v.LENGTH_NOT_MULTIPLE_OF_4, 5015),
        (v.LENGTH_BELOW_HEADER + bytes(4), 5015),
        (bytes.fromhex("01000000") + bytes(16), 5015),  # length 0
        (b"GET / HTTP/1.1\r\nHost: eir\r\n\r\n", 5011),  # 'G' is not version 1
    ],
)
def test_framing_error_carries_code_and_header(wire: bytes, code: int) -> None:
    with pytest.raises(FramingError) as info:
        Framer().feed(wire)
    assert info.value.result_code == code
    assert info.value.header == wire[:20]
    assert isinstance(info.value, DiameterError)


def test_framing_error_after_good_messages_and_split_header() -> None:
    framer = Framer()
    assert framer.feed(v.DWR + v.BAD_VERSION[:7]) == [v.DWR]
    with pytest.raises(FramingError) as info:
        framer.feed(v.BAD_VERSION[7:])
    assert info.value.result_code == 5011
    assert info.value.header == v.BAD_VERSION[:20]


def test_framing_error_reported_as_soon_as_the_header_is_complete() -> None:
    framer = Framer()
    framer.feed(v.LENGTH_NOT_MULTIPLE_OF_4[:19])
    with pytest.raises(FramingError) as info:
        framer.feed(v.LENGTH_NOT_MULTIPLE_OF_4[19:20])
    assert info.value.result_code == 5015


def test_message_over_the_size_limit() -> None:
    # DWR is 76 octets: refused from its header on, before the body arrives
    with pytest.raises(FramingError) as info:
        Framer(max_message_size=64).feed(v.DWR[:20])
    assert info.value.result_code == 5015
    assert info.value.header == v.DWR[:20]
    assert Framer(max_message_size=76).feed(v.DWR) == [v.DWR]
    assert DEFAULT_MAX_MESSAGE_SIZE >= 65536


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_arbitrary_bytes_only_raise_framing_errors(data: bytes, cuts: list[int]) -> None:
    framer = Framer()
    try:
        for piece in split_at(data, cuts) if data else [b""]:
            for message in framer.feed(piece):
                assert message[0] == 1 and len(message) % 4 == 0 and len(message) >= 20
    except FramingError as exc:
        assert exc.result_code in (5011, 5015)


def test_whole_messages_before_unframeable_bytes_are_kept() -> None:
    good = Message(280, 0, 0x80, 1, 1).add("Origin-Host", "a").add("Origin-Realm", "b").encode()
    framer = Framer()
    with pytest.raises(FramingError) as info:
        framer.feed(good + good + b"\x02" + bytes(19))
    assert info.value.messages == (good, good)
    assert info.value.result_code == 5011


def test_a_message_arriving_byte_by_byte_is_not_copied_at_each_byte() -> None:
    # Each read of a message under way cost a copy of all it had buffered (twice): a peer
    # sending a large message one octet per segment made every octet cost that much.

    message = (
        Message(280, 0, 0x80, 1, 1).add("Origin-Host", "a").add("Error-Message", "x" * 60_000).encode()
    )
    framer = Framer()
    assert framer.feed(message[:30_000]) == []
    assert framer.feed(message[30_000:30_001]) == []  # the buffer's own growth, done once
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(30_001, 30_200):
            assert framer.feed(message[i : i + 1]) == []
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert grown < 16_384  # a copy of the buffer is 30,000 octets
    assert framer.feed(message[30_200:]) == [message]
