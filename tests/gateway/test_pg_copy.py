"""The binary COPY reader of the lists' full load (gateway/pg/lists.py ImeiReader), sans-IO:
the stream PostgreSQL's "Binary Format" describes, built here with struct, split anywhere."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("asyncpg", reason="asyncpg is not installed (the 'postgresql' extra)")

from gateway.pg.lists import ImeiReader

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)


def stream(values: list[int], extension: bytes = b"") -> bytes:
    header = HEADER[:15] + struct.pack("!i", len(extension)) + extension
    rows = b"".join(struct.pack("!hiq", 1, 8, v) for v in values)
    return header + rows + TRAILER


def read(data: bytes, cuts: list[int]) -> list[int]:
    reader = ImeiReader()
    for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True):
        reader.feed(data[start:stop])
    return list(reader.finish())


@given(
    st.lists(st.integers(0, 2**63 - 1), max_size=300),
    st.binary(max_size=8),
    st.data(),
)
def test_values_in_order_however_the_stream_is_split(
    values: list[int], extension: bytes, data: st.DataObject
) -> None:
    wire = stream(values, extension)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    assert read(wire, cuts) == values


def test_a_null_or_a_second_column_is_refused() -> None:
    good = stream([35209900176148, 35209900176149])
    null = good[:19] + struct.pack("!hi", 1, -1) + good[19 + 6 + 8:]
    two = good[:19] + struct.pack("!hiqiq", 2, 8, 1, 8, 2) + TRAILER
    for bad in (null, two):
        with pytest.raises(ValueError, match=r"not one non-null BIGINT|ended early"):
            read(bad, [])


def test_a_truncated_or_foreign_stream_is_refused() -> None:
    wire = stream([1, 2, 3])
    with pytest.raises(ValueError, match="ended early"):
        read(wire[:-1], [])
    with pytest.raises(ValueError, match="ended early"):
        read(wire[:10], [])
    with pytest.raises(ValueError, match="not a binary COPY"):
        read(b"1\n2\n3\n" + b"\x00" * 20, [])
