"""The exact IMEIs' bucket table (gateway/sorted_imeis.py) against plain references: a set for
membership, ``bisect`` for where each bucket starts; and a snapshot built on it matching what a
scan of its entries (exact, TAC and range) matches."""

from __future__ import annotations

from array import array
from bisect import bisect_left

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lists import EntryKind, ListColour, ListEntry, ListSnapshot, _Colour, _Ranges
from gateway.sorted_imeis import BUCKET, MAX_COUNT, SortedImeis, bucket_table

TAC = 35209900
# Values as lists hold them: crowded in a few TACs, spread over the whole 14-digit space, or
# next to each other; duplicates too (a reference set ignores them, so must the table).
values = st.lists(
    st.integers(0, 10**14 - 1)
    | st.builds(lambda t, s: (TAC + t) * 1_000_000 + s, st.integers(0, 3), st.integers(0, 999_999))
    | st.integers(TAC * 1_000_000, TAC * 1_000_000 + 200),
    max_size=600,
).map(sorted)


def near(vs: list[int]) -> list[int]:
    """Probes at and beside every value, and at the space's ends."""
    out = [0, 1, 10**14 - 1, 10**14, 2**64 - 1]
    for v in vs:
        out += [v - 1, v, v + 1]
    return [p for p in out if p >= 0]


@given(values, st.lists(st.integers(0, 10**14), max_size=50))
def test_contains_as_a_set(vs: list[int], probes: list[int]) -> None:
    imeis = SortedImeis.of(array("Q", vs))
    reference = set(vs)
    for probe in [*probes, *near(vs)]:
        assert imeis.contains(probe) == (probe in reference), probe
    assert len(imeis) == len(vs) and list(imeis) == vs and bool(imeis) == bool(vs)


@given(values)
def test_each_bucket_starts_at_its_first_value(vs: list[int]) -> None:
    base, shift, starts = bucket_table(array("Q", vs))
    if not vs:
        assert list(starts) == [0]
        return
    buckets = len(starts) - 1
    assert base == vs[0] and (vs[-1] - base) >> shift == buckets - 1
    assert buckets <= -(-len(vs) // BUCKET)  # a bounded fraction of the values
    assert shift == 0 or (vs[-1] - base) >> (shift - 1) >= -(-len(vs) // BUCKET)  # narrowest
    assert [starts[b] for b in range(buckets)] == [
        bisect_left(vs, base + (b << shift)) for b in range(buckets)]
    assert starts[buckets] == len(vs)


def test_evenly_spread_values_fill_buckets_evenly() -> None:
    # 100,000 IMEIs every 7th body, as bench/pg_lists.py lists them: no bucket over twice the
    # average, so a look-up bisects a cache line or two.
    vs = array("Q", range(TAC * 1_000_000, TAC * 1_000_000 + 700_000, 7))
    _, _, starts = bucket_table(vs)
    sizes = [starts[b + 1] - starts[b] for b in range(len(starts) - 1)]
    assert max(sizes) <= 2 * BUCKET
    assert len(starts) - 1 >= len(vs) // (2 * BUCKET)


def test_the_empty_table_and_too_many() -> None:
    empty = SortedImeis.empty()
    assert not empty and len(empty) == 0 and not empty.contains(0)
    assert not SortedImeis.of(array("Q")).contains(TAC * 1_000_000)

    class Huge:
        def __len__(self) -> int:
            return MAX_COUNT + 1

    with pytest.raises(ValueError, match="at most"):
        bucket_table(Huge())  # type: ignore[arg-type]


entries = st.lists(
    st.tuples(
        st.sampled_from(ListColour), st.sampled_from([EntryKind.IMEI, EntryKind.TAC,
                                                      EntryKind.RANGE]),
        st.integers(0, 3_000_000), st.integers(0, 40),
    ),
    max_size=60,
)


@given(entries, st.lists(st.integers(0, 3_000_100), max_size=40))
def test_a_snapshot_matches_what_a_scan_of_its_entries_matches(
    rows: list[tuple[ListColour, EntryKind, int, int]], probes: list[int]
) -> None:
    stored: dict[tuple[object, ...], ListEntry] = {}  # one entry per key, as a store keeps
    for colour, kind, n, width in rows:
        first = TAC * 1_000_000 + n
        if kind is EntryKind.TAC:
            first //= 1_000_000
        last = first + width if kind is EntryKind.RANGE else first
        stored[(colour, kind, first, last)] = ListEntry(colour, kind, first, last)
    listed = list(stored.values())
    colours = {}
    for colour in ListColour:
        mine = [e for e in listed if e.colour is colour]
        exact = array("Q", sorted({e.first for e in mine if e.kind is EntryKind.IMEI}))
        tacs = {e.first: e for e in mine if e.kind is EntryKind.TAC}
        ranges = [e for e in mine if e.kind is EntryKind.RANGE]
        if exact or tacs or ranges:
            colours[colour] = _Colour(SortedImeis.of(exact), _Ranges(ranges), tacs, {})
    snapshot = ListSnapshot(1, colours)
    for probe in [TAC * 1_000_000 + p for p in probes] + [e.first for e in listed]:
        expected = set()
        for e in listed:
            key = probe // 1_000_000 if e.kind is EntryKind.TAC else probe
            if e.first <= key <= e.last:
                expected.add((e.colour, e.kind, e.first, e.last))
        got = [(m.entry.colour, m.entry.kind, m.entry.first, m.entry.last)
               for m in snapshot.match(probe)]
        assert set(got) == expected and len(got) == len(set(got)), probe
