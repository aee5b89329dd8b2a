"""The observation stream's entries, sans-IO: sightings packed into entries and read back.

Two formats, on two keys of the same Redis Cluster hash slot (:func:`packed_key`), so that one
script reads both:

* **v1**, ``PREFIX:observations`` (releases up to session 9): one entry a sighting, fields
  ``imei``, ``imsi`` and ``ts`` (seconds as decimal text). Only read now: gateways of the
  release before still append there during a rolling upgrade, and their consumers read only
  this key.
* **v2**, ``{PREFIX:observations}:v2``: one entry for up to :data:`PER_ENTRY` sightings, one
  field, :data:`FIELD`, whose value is the sightings one after the other, each
  ``IMEI MS LENGTH IMSI `` (when it was seen in integer milliseconds; the IMSI, User-Name's
  UTF-8 text, may hold any byte, so it goes by its length in bytes and the space after it is
  checked). Redis's cost is per entry and per field (XADD, the listpack, XREADGROUP's reply),
  not per byte: 100 sightings an entry cost it 0.37 µs a sighting appended where one entry
  each cost 2.7 µs (session 9, the append script called directly).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FIELD = b"sightings"
PER_ENTRY = 100  # sightings an entry at most
MAX_ENTRY_BYTES = 64 * 1024  # an entry closes past this too (User-Names can be long)

# Where a sighting begins: IMEI, MS and LENGTH, decimal digits (bounded: int() refuses past
# 4,300), each followed by a space.
_HEAD = re.compile(rb"([0-9]{1,20}) ([0-9]{1,20}) ([0-9]{1,10}) ")

# A sighting as the gateway records it: IMEI, IMSI, when (seconds since the epoch).
Sighting = tuple[str, str, float]

# The year 10000 begins (seconds since the epoch): a time from then on is no sighting's, and no
# report could print it (datetime's limit).
YEAR_10000 = 253_402_300_800


class EntryError(ValueError):
    """A v2 entry that does not hold sightings (a writer that is not a gateway)."""


def packed_key(key: str) -> str:
    """The v2 stream of the v1 stream ``key``, in its hash slot: ``{KEY}:v2``, whose hash tag
    is ``key`` whole, which is how Redis Cluster hashes ``key`` itself (it has no braces:
    ``shared.key_prefix`` may not hold any)."""
    if "{" in key or "}" in key:
        raise ValueError(f"a stream key with braces, {key!r}: its v2 stream's hash slot "
                         "could differ")
    return f"{{{key}}}:v2"


def _sighting(imei: str, imsi: str, ts: float) -> str:
    length = len(imsi) if imsi.isascii() else len(imsi.encode())
    return f"{imei} {round(ts * 1000)} {length} {imsi} "  # the nearest millisecond


def pack(sightings: Iterable[Sighting]) -> list[bytes]:
    """The v2 entries' :data:`FIELD` values holding ``sightings``, in order."""
    return pack_counted(sightings)[0]


def pack_counted(sightings: Iterable[Sighting]) -> tuple[list[bytes], list[int]]:
    """:func:`pack`'s entries and how many of the sightings each holds (those of an entry
    Redis refuses are kept elsewhere, and only those)."""
    entries: list[bytes] = []
    counts: list[int] = []
    parts: list[str] = []
    size = 0
    for imei, imsi, ts in sightings:
        part = _sighting(imei, imsi, ts)
        parts.append(part)
        size += len(part)
        if len(parts) >= PER_ENTRY or size >= MAX_ENTRY_BYTES:
            entries.append("".join(parts).encode())
            counts.append(len(parts))
            parts, size = [], 0
    if parts:
        entries.append("".join(parts).encode())
        counts.append(len(parts))
    return entries, counts


def unpack(value: bytes) -> list[Sighting]:
    """The sightings of one v2 entry's :data:`FIELD` value (:class:`EntryError` if it is not
    one: nothing of it is taken)."""
    if not value:
        raise EntryError("no sightings")
    sightings: list[Sighting] = []
    append = sightings.append
    head = _HEAD.match
    position, end = 0, len(value)
    while position < end:
        found = head(value, position)
        if found is None:
            raise EntryError(f"sighting {len(sightings) + 1}: not IMEI MS LENGTH where it "
                             "begins")
        imei, ms, length = found.groups()
        start = found.end()
        stop = start + int(length)
        if value[stop:stop + 1] != b" ":
            raise EntryError(f"sighting {len(sightings) + 1}: its IMSI is not {int(length)} "
                             "bytes")
        try:
            imsi = value[start:stop].decode()
        except UnicodeDecodeError as exc:
            raise EntryError(f"sighting {len(sightings) + 1}: {exc}") from None
        when = int(ms) / 1000
        if when >= YEAR_10000:
            raise EntryError(f"sighting {len(sightings) + 1}: a time past the year 9999")
        append((imei.decode(), imsi, when))
        position = stop + 1
    return sightings
