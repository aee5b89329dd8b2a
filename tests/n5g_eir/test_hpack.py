"""HPACK (RFC 7541): our decoder against the ``hpack`` library's encoder, our encoder against
its decoder, the RFC's Appendix C examples, and malformed blocks."""

from __future__ import annotations

import gc
import tracemalloc

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.n5g_eir.hpack import (
    HpackDecoder,
    HpackError,
    encode_headers,
    huffman_decode,
    known_prefix,
    table_size_update,
)
from gateway.n5g_eir.request import PATH_PREFIXES

HUFFMAN = hpack.huffman.HuffmanEncoder(hpack.huffman_constants.REQUEST_CODES,
                                       hpack.huffman_constants.REQUEST_CODES_LENGTH)

names = st.one_of(st.sampled_from([b":path", b":method", b"user-agent", b"accept", b"x-a"]),
                  st.binary(min_size=1, max_size=20).map(lambda b: b.lower()))
values = st.binary(max_size=60)
header_lists = st.lists(st.tuples(names, values), max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(header_lists, min_size=1, max_size=6), st.booleans(),
       st.sampled_from([0, 64, 256, 4096]))
def test_decoder_follows_an_independent_encoder(blocks: list[list[tuple[bytes, bytes]]],
                                                huffman: bool, table_size: int) -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size  # emits a size update in the first block
    decoder = HpackDecoder()
    for headers in blocks:
        decoded, size = decoder.decode(encoder.encode(headers, huffman=huffman), 1 << 20)
        assert decoded == headers
        assert size == sum(len(n) + len(v) + 32 for n, v in headers)


@given(header_lists)
def test_encoder_output_decodes_with_an_independent_decoder(
    headers: list[tuple[bytes, bytes]]
) -> None:
    assert hpack.Decoder().decode(encode_headers(headers), raw=True) == headers


def test_rfc7541_c4_requests_with_huffman() -> None:
    decoder = HpackDecoder()
    first = bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")
    assert decoder.decode(first, 4096)[0] == [
        (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
        (b":authority", b"www.example.com")]
    second = bytes.fromhex("828684be5886a8eb10649cbf")
    assert decoder.decode(second, 4096)[0] == [
        (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
        (b":authority", b"www.example.com"), (b"cache-control", b"no-cache")]
    assert decoder.size == 110  # C.4.2: two entries


@given(st.binary(max_size=80))
def test_huffman_round_trip(data: bytes) -> None:
    assert huffman_decode(HUFFMAN.encode(data)) == data


@given(st.binary(max_size=24), st.binary(max_size=40), st.binary(max_size=40))
def test_huffman_after_a_known_prefix_as_from_the_start(prefix: bytes, rest: bytes,
                                                         other: bytes) -> None:
    """Resuming after a known prefix's code decodes what decoding from the start does, for
    strings that begin with the prefix and strings that do not."""
    known = (known_prefix(prefix), *map(known_prefix, PATH_PREFIXES))
    for text in (prefix + rest, other, PATH_PREFIXES[0] + rest, PATH_PREFIXES[1] + other):
        assert huffman_decode(HUFFMAN.encode(text), known) == text


@pytest.mark.parametrize("tail", [
    b"\xff\xff\xff\xff",  # EOS (30 ones) after the prefix
    b"\x00",  # padding of zeros
    b"\xff",  # 8 bits of padding
])
def test_huffman_errors_after_a_known_prefix(tail: bytes) -> None:
    prefix = known_prefix(PATH_PREFIXES[0])
    encoded = HUFFMAN.encode(PATH_PREFIXES[0] + b"-3")
    with pytest.raises(HpackError):
        huffman_decode(prefix.code + tail, (prefix,))
    assert encoded.startswith(prefix.code)
    assert huffman_decode(encoded, (prefix,)) == PATH_PREFIXES[0] + b"-3"


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0 (§6.1)
        b"\xff\x00",  # index beyond the tables
        b"\x82\x20",  # size update after a field (§4.2)
        table_size_update(8192),  # above the announced SETTINGS_HEADER_TABLE_SIZE
        b"\x00\x85abc",  # string runs past the end
        b"\x00\x01a\x81\xff",  # Huffman value: 8 bits of padding (§5.2)
        b"\x00\x01a\x84\xff\xff\xff\xff",  # Huffman value: EOS in the string
        b"\x00\x01a\x81\x00",  # Huffman value: padding not of ones
        b"\x1f\xff\xff\xff\xff\xff\x01",  # integer too large
        b"\x7f",  # integer runs past the end
        # §5.1 "in value or octet length": zero continuation octets past the fifth (the hpack
        # library and nghttp2 refuse these too); they were read to the end of the block.
        b"\x3f" + b"\x80" * 5 + b"\x00",
        b"\x3f" + b"\x80" * 26 + b"\x00",
    ],
)
def test_malformed_blocks(block: bytes) -> None:
    with pytest.raises(HpackError):
        HpackDecoder().decode(block, 4096)


def test_header_list_size_limit_keeps_the_table_in_step() -> None:
    encoder, decoder = hpack.Encoder(), HpackDecoder()
    big = [(b"x-big", b"a" * 300), (b"x-small", b"b")]
    headers, size = decoder.decode(encoder.encode(big), 100)
    assert size > 100 and headers == []
    again, _ = decoder.decode(encoder.encode(big), 4096)  # now indexed: the table followed
    assert again == big


def test_a_repeated_block_decodes_as_the_table_holds_it_now() -> None:
    """A block of indexes into the dynamic table means what the table holds when it arrives
    (RFC 7541 §2.3.3): remembered blocks are used only while the table is unchanged."""
    decoder = HpackDecoder()
    # Literal with incremental indexing of user-agent (static name 58): dynamic index 62.
    decoder.decode(bytes([0x40 | 58, 3]) + b"one", 16_384)
    repeat = bytes([0x80 | 2, 0x80 | 62]) + encode_headers([(b":path", b"/x")])
    first = decoder.decode(repeat, 16_384)
    assert first[0] == [(b":method", b"GET"), (b"user-agent", b"one"), (b":path", b"/x")]
    assert decoder.decode(repeat, 16_384)[0] is first[0]  # remembered, not decoded again
    decoder.decode(bytes([0x40 | 58, 3]) + b"two", 16_384)  # index 62 is now "two"
    again = decoder.decode(repeat, 16_384)[0]
    assert again is not first[0] and again[1] == (b"user-agent", b"two")
    # A block that changes the table is decoded every time, its entry added each time.
    adding = bytes([0x40 | 58, 5]) + b"three"
    decoder.decode(adding, 16_384)
    decoder.decode(adding, 16_384)
    assert list(decoder.entries)[:2] == [(b"user-agent", b"three")] * 2


def test_remembered_blocks_are_bounded_in_bytes() -> None:
    """Blocks remembered for a repeat hold a bounded number of octets: a client sending
    distinct blocks of ~16 KB (without indexing: the table never changes) made one connection's
    decoder hold 1,024 of them, ~18 MB."""
    decoder = HpackDecoder()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1024):
            block = encode_headers([(b":path", b"/"), (b"x-pad", b"%06d" % i * 2_700)])
            headers, _ = decoder.decode(block, 16_384)
            assert headers[1][1][:6] == b"%06d" % i
        del block, headers
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, held
    # Small blocks are still remembered: the same bytes give the same (shared) list.
    small = encode_headers([(b":path", b"/x")])
    assert decoder.decode(small, 16_384)[0] is decoder.decode(small, 16_384)[0]


def test_an_integer_padded_with_zero_octets_within_five_is_read() -> None:
    decoder = HpackDecoder()
    decoder.decode(b"\x3f" + b"\x80" * 4 + b"\x00", 4096)  # a size update to 31
    assert decoder.max_size == 31
