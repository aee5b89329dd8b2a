"""A colour's sorted exact IMEIs with a bucket table, so that a look-up costs the same at 100
million entries as at one million.

A bisect over 100 million IMEIs (800 MB) takes 27 steps, nearly every one a cache and TLB miss:
3.5 us per look-up against 1.2 us at one million. The bucket table splits the IMEIs' span into
buckets of ``2**shift`` consecutive values, about :data:`BUCKET` IMEIs each on average, and keeps
where each bucket starts in the sorted values (``starts``, unsigned 32-bit: 4 bytes per bucket,
a sixteenth of the values' 8 bytes per IMEI at 8 per bucket). A look-up reads two neighbouring
starts and bisects the few values between them, which lie in one or two cache lines.

Buckets are of equal width over the IMEIs' span, not of equal count: IMEIs crowded in a few
TACs make some buckets bigger than :data:`BUCKET`; a look-up there bisects that bucket only,
never costing more than the plain bisect it replaces.

The same class serves a worker's own ``array('Q')`` and a file every worker maps
(gateway/snapshot_files.py), whose values and starts are ``memoryview`` casts of the mapping,
built once per list version by the worker that writes the file.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

BUCKET = 8  # IMEIs per bucket on average, where they spread evenly over their span
MAX_COUNT = 2**32 - 1  # bucket starts are unsigned 32-bit

Values: TypeAlias = "array[int] | memoryview"  # unsigned 64-bit, sorted, no duplicates


class SortedImeis:
    """Sorted distinct IMEI bodies, with ``contains``, ``len``, indexing and iteration. ``path``
    is the snapshot file they are mapped from (None: this process's own array); the mapping
    lives, and with it the file's shared lock, as long as ``values`` does."""

    __slots__ = ("base", "buckets", "path", "shift", "starts", "values")

    def __init__(
        self, values: Values, base: int, shift: int, starts: Values, path: Path | None = None
    ) -> None:
        self.values = values
        self.base = base  # the smallest value: bucket b holds base + [b << shift, b + 1 << shift)
        self.shift = shift
        self.starts = starts  # starts[b]: index of bucket b's first value; one more: len(values)
        self.buckets = len(starts) - 1 if len(values) else 0
        self.path = path

    @classmethod
    def of(cls, values: array[int], path: Path | None = None) -> SortedImeis:
        """``values`` (sorted, distinct) with their bucket table built here."""
        base, shift, starts = bucket_table(values)
        return cls(values, base, shift, starts, path)

    @classmethod
    def empty(cls) -> SortedImeis:
        return cls(array("Q"), 0, 0, array("I", [0]))

    def contains(self, value: int) -> bool:
        b = (value - self.base) >> self.shift
        if b < 0 or b >= self.buckets:
            return False
        starts = self.starts
        lo: int = starts[b]
        hi: int = starts[b + 1]
        if lo == hi:
            return False
        values = self.values
        i = bisect_left(values, value, lo, hi)
        return i < hi and values[i] == value

    def __len__(self) -> int:
        return len(self.values)

    def __bool__(self) -> bool:
        return len(self.values) > 0

    def __getitem__(self, i: int) -> int:
        value: int = self.values[i]
        return value

    def __iter__(self) -> Iterator[int]:
        return iter(self.values)


def bucket_table(values: Values) -> tuple[int, int, array[int]]:
    """(base, shift, starts) of sorted distinct ``values``: the narrowest power-of-two bucket
    width giving at most ``ceil(len / BUCKET)`` buckets over their span, and where each starts.
    Costs one short bisect per bucket (a window after the previous start; the whole rest only
    past a bucket bigger than the window)."""
    n = len(values)
    if n > MAX_COUNT:
        raise ValueError(f"{n:,} IMEIs of one colour: at most {MAX_COUNT:,}")
    if n == 0:
        return 0, 0, array("I", [0])
    base: int = values[0]
    span: int = values[n - 1] - base
    most = -(-n // BUCKET)
    shift = 0
    while (span >> shift) >= most:
        shift += 1
    buckets = (span >> shift) + 1
    starts = array("I", bytes(4 * (buckets + 1)))
    window = 4 * BUCKET
    lo = 0
    for b in range(1, buckets):
        key = base + (b << shift)
        hi = min(n, lo + window)
        i = bisect_left(values, key, lo, hi)
        if i == hi and hi < n:
            i = bisect_left(values, key, hi, n)
        starts[b] = lo = i
    starts[buckets] = n
    return base, shift, starts
