"""ListSnapshot.apply (sans-IO): a snapshot brought forward by changes matches exactly what a
full load of the resulting entries matches, whatever the changes."""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from gateway.lists import (
    MAX_OVERLAY,
    EntryKind,
    ListChange,
    ListColour,
    ListEntry,
    ListSnapshot,
    _Colour,
    _key,
    _Ranges,
)
from gateway.sorted_imeis import SortedImeis

BASE = 35209900000000  # IMEIs drawn from a small space so that changes collide
IMSIS = ("001010000000001", "001010000000002")


def _entry(colour: ListColour, kind: EntryKind, n: int, width: int, imsi: int) -> ListEntry:
    first = BASE + n
    if kind is EntryKind.TAC:
        return ListEntry(colour, kind, first // 1_000_000, first // 1_000_000, reason="t")
    if kind is EntryKind.RANGE:
        return ListEntry(colour, kind, first, first + width, reason="r")
    if kind is EntryKind.PAIR:
        return ListEntry(colour, kind, first, first, IMSIS[imsi], reason="p")
    return ListEntry(colour, kind, first, first)


entries = st.builds(
    _entry, st.sampled_from(ListColour), st.sampled_from(EntryKind),
    st.integers(0, 30), st.integers(0, 5), st.integers(0, 1),
)
operations = st.lists(st.tuples(entries, st.booleans()), max_size=40)


def full_load(version: int, stored: dict[tuple[object, ...], ListEntry]) -> ListSnapshot:
    """What a store's load() builds from these entries."""
    colours = {}
    for colour in ListColour:
        mine = [e for e in stored.values() if e.colour is colour]
        imeis = array("Q", sorted(e.first for e in mine if e.kind is EntryKind.IMEI))
        ranges = [e for e in mine if e.kind is EntryKind.RANGE]
        tacs = {e.first: e for e in mine if e.kind is EntryKind.TAC}
        pairs = {(e.first, e.imsi): e for e in mine if e.kind is EntryKind.PAIR}
        if imeis or ranges or tacs or pairs:
            colours[colour] = _Colour(SortedImeis.of(imeis), _Ranges(ranges), tacs, pairs)
    return ListSnapshot(version, colours)


def matches(snapshot: ListSnapshot) -> list[object]:
    out = []
    for n in range(-1, 40):
        for imsi in (None, *IMSIS):
            found = snapshot.match(BASE + n, imsi)
            out.append(sorted((m.colour.value, _key(m.entry)) for m in found))
    return out


@given(operations, operations)
def test_changes_applied_match_a_full_load(
    initial: list[tuple[ListEntry, bool]], later: list[tuple[ListEntry, bool]]
) -> None:
    stored: dict[tuple[object, ...], ListEntry] = {}
    for entry, removed in initial:
        if removed:
            stored.pop(_key(entry), None)
        else:
            stored[_key(entry)] = entry
    snapshot = full_load(7, stored)
    changes = []
    for version, (entry, removed) in enumerate(later, 8):
        changes.append(ListChange(version, entry, removed))
        if removed:
            stored.pop(_key(entry), None)
        else:
            stored[_key(entry)] = entry
    applied = snapshot.apply(changes)
    assert applied is not None
    expected = full_load(7 + len(later), stored)
    assert applied.version == expected.version
    assert matches(applied) == matches(expected)
    assert nonzero(applied.counts()) == nonzero(expected.counts())
    # The changes of one version (a batch write) apply the same way.
    batched = snapshot.apply([ListChange(8, e, r) for e, r in later])
    assert batched is not None and matches(batched) == matches(applied)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def test_a_hole_a_bulk_change_or_a_large_overlay_needs_a_full_load() -> None:
    e = ListEntry(ListColour.BLACK, EntryKind.IMEI, BASE, BASE)
    snapshot = ListSnapshot(3, {})
    assert snapshot.apply([ListChange(5, e)]) is None  # version 4 is missing: pruned
    assert snapshot.apply([ListChange(4, None)]) is None  # a bulk import
    assert snapshot.apply([]) is snapshot
    many = [ListChange(4, ListEntry(ListColour.BLACK, EntryKind.IMEI, BASE + i, BASE + i))
            for i in range(MAX_OVERLAY + 1)]
    assert snapshot.apply(many) is None
    assert snapshot.apply(many[:10]) is not None


def test_the_old_snapshot_is_left_as_it_was() -> None:
    e = ListEntry(ListColour.BLACK, EntryKind.IMEI, BASE, BASE)
    old = full_load(1, {_key(e): e})
    new = old.apply([ListChange(2, e, removed=True),
                     ListChange(3, ListEntry(ListColour.GREY, EntryKind.TAC, 35209900, 35209900))])
    assert new is not None and new.version == 3
    assert [m.colour for m in old.match(BASE)] == [ListColour.BLACK]
    assert [m.colour for m in new.match(BASE)] == [ListColour.GREY]
