"""The observation stream's v2 entries (gateway.stream_entries), sans-IO: sightings packed up to
PER_ENTRY an entry and read back whole, whatever an IMSI holds; anything else refused whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, load_config
from gateway.stream_entries import (
    MAX_ENTRY_BYTES,
    PER_ENTRY,
    EntryError,
    pack,
    packed_key,
    unpack,
)

IMEI = "35209900176148"

sightings = st.lists(
    st.tuples(
        st.from_regex(r"\A[0-9]{14,16}\Z"),
        st.text(max_size=30),  # User-Name: any UTF-8 text, spaces and digits included
        st.integers(min_value=0, max_value=4_102_444_800_000).map(lambda ms: ms / 1000),
    ),
    max_size=350,
)


@given(sightings)
def test_packing_loses_nothing(batch: list[tuple[str, str, float]]) -> None:
    entries = pack(batch)
    assert [s for entry in entries for s in unpack(entry)] == batch
    # Full entries but the last, by count or by size.
    assert all(len(unpack(e)) == PER_ENTRY or len(e) >= MAX_ENTRY_BYTES for e in entries[:-1])
    assert all(0 < len(unpack(e)) <= PER_ENTRY for e in entries)


@given(st.binary(max_size=60))
def test_any_bytes_are_sightings_or_refused_whole(value: bytes) -> None:
    try:
        got = unpack(value)
    except EntryError:
        return
    assert [s for entry in pack(got) for s in unpack(entry)] == got


def test_the_format_on_the_wire() -> None:
    entry = pack([(IMEI, "001010000000001", 1_733_378_000.125), (IMEI, "ünï cø", 5.0)])
    assert entry == [b"35209900176148 1733378000125 15 001010000000001 "
                     + b"35209900176148 5000 9 " + "ünï cø".encode() + b" "]


def test_an_entry_closes_at_per_entry_sightings_or_its_size() -> None:
    assert [len(unpack(e)) for e in pack([(IMEI, "1", 0.0)] * 250)] == [100, 100, 50]
    long_name = "x" * 40_000
    assert [len(unpack(e)) for e in pack([(IMEI, long_name, 0.0)] * 3)] == [2, 1]


@pytest.mark.parametrize("value, why", [
    (b"", "no sightings"),
    (b"35209900176148 1 15 00101000000000", "not 15 bytes"),  # one byte short
    (b"35209900176148 1 3 abcd ", "not 3 bytes"),
    (b"35209900176148 1 3 abc", "not 3 bytes"),  # the closing space missing
    (b"35209900176148 x 3 abc ", "where it begins"),
    (b"35209900176148 -1 3 abc ", "where it begins"),
    (b"35209900176148 1 +3 abc ", "where it begins"),
    (b"35209900176148 1 " + b"9" * 5_000 + b" abc ", "where it begins"),
    (b"35209900176148 1", "sighting 1"),
    (b"35209900176148 1 2 \xff\xfe ", "sighting 1"),  # not UTF-8
    (b"35209900176148 1 1 a 35209900176148 1 1 b", "sighting 2"),
    # A time past the year 9999, which no report could print (datetime's limit).
    (b"35209900176148 253402300800000 1 a ", "sighting 1: a time past the year 9999"),
    (b"35209900176148 99999999999999999999 1 a ", "sighting 1: a time past the year 9999"),
])
def test_an_entry_that_is_not_sightings_is_refused_whole(value: bytes, why: str) -> None:
    with pytest.raises(EntryError, match=why):
        unpack(value)


@given(st.text(min_size=1, max_size=20).filter(lambda p: "{" not in p and "}" not in p))
def test_the_v2_stream_shares_the_v1_streams_hash_slot(prefix: str) -> None:
    from redis.crc import key_slot

    key = f"{prefix}:observations"
    assert key_slot(packed_key(key).encode()) == key_slot(key.encode())


def test_the_v2_stream_is_named_after_the_v1() -> None:
    assert packed_key("eir:observations") == "{eir:observations}:v2"
    with pytest.raises(ValueError, match="braces"):
        packed_key("a{b}:observations")


@pytest.mark.parametrize("prefix", ["a{b}", "{", "x}"])
def test_a_key_prefix_with_braces_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"must not hold \{ or \}"):
        load_config(None, {"EIR_SHARED_KEY_PREFIX": prefix})
