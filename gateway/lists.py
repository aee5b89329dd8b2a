"""Operator black/grey/white lists: SQLite store, CSV import/export, compact in-memory snapshot.

Entry kinds: ``imei`` (one 14-digit body), ``range`` (first..last bodies, inclusive), ``tac``
(every IMEI of an 8-digit TAC) and ``pair`` (one IMEI, only together with one IMSI). Each entry
has a list colour (``black``/``grey``/``white``), a reason text and created/updated timestamps.

CSV format (import and export), UTF-8, comma-separated, one entry per row::

    list,kind,value,imsi,reason[,created,updated]
    black,imei,35209900176148,,stolen 2026-11-02
    white,pair,01234500000017,001010000000001,test device with test SIM
    grey,range,35332011000000-35332011009999,,batch under observation
    black,tac,86000001,,barred TAC

* list: black | grey | white; kind: imei | range | tac | pair.
* value: imei/pair -> 14 digits, or 15 with a valid Luhn check digit (stored as the 14-digit
  body); range -> ``FIRST-LAST`` with both ends in that form and FIRST <= LAST; tac -> 8 digits.
* imsi: 6-15 digits for ``pair`` (TS 23.003 §2.2), empty otherwise.
* The header row is optional (a first field ``list`` marks it). ``created``/``updated`` (ISO
  8601, written by export; a time without a zone is UTC) are optional: when given, import keeps
  them (export then import loses no history), when empty the import time is used. Importing an
  entry that exists updates its reason and ``updated`` (``created`` keeps the earlier time).
* The file must be UTF-8 (a BOM is accepted). The same entry (list, kind, value, IMSI) twice is
  an error naming both rows; one IMEI on two lists is two entries (a white exception to a black
  TAC, say). Any bad row fails the whole import (one transaction) naming the file and row number.

Each entry records where it came from: ``source`` is NULL for entries written by the CLI or
``lists import`` (manual), or the path of the ``lists.import_files`` file that brought it. An
import file is authoritative for its own entries: when it is imported again (at start, or on
:meth:`OperatorLists.reload`, i.e. SIGHUP, when its mtime or size changed) its entries that are
no longer in it are removed, in the transaction of its upserts. A manual entry is never removed
that way; writing an entry manually makes it manual.

The store keeps a version number in ``meta`` bumped in the same transaction as every change, so
a running gateway polls :meth:`ListStore.version` (one indexed read) and reloads when it moves.
The snapshot holds exact IMEIs as a sorted ``array('Q')`` per colour (8 bytes per entry, and a
bucket table so a look-up costs the same at any size: gateway/sorted_imeis.py), ranges as
sorted start/end arrays, TACs as sets, pairs in a dict. Reasons of exact IMEI entries stay in
SQLite (:meth:`ListStore.describe`); the hot path never touches SQLite.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import json
import logging
import sqlite3
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeAlias

from gateway import audit
from gateway.errors import EntryExists as EntryExists
from gateway.errors import ListError as ListError
from gateway.imei import Imei, is_decimal, parse_imei
from gateway.progress import Progress
from gateway.sorted_imeis import SortedImeis

log = logging.getLogger("eir.lists")


class ListColour(enum.Enum):
    WHITE = "white"
    BLACK = "black"
    GREY = "grey"


class EntryKind(enum.Enum):
    IMEI = "imei"
    RANGE = "range"
    TAC = "tac"
    PAIR = "pair"


@dataclass(frozen=True, slots=True)
class ListEntry:
    colour: ListColour
    kind: EntryKind
    first: int  # IMEI body / range start / TAC as an integer
    last: int  # == first except for ranges
    imsi: str = ""
    reason: str | None = None  # None: not loaded (exact IMEIs; see ListStore.describe)
    created: float | None = None
    updated: float | None = None
    source: str | None = None  # None: manual (CLI, API, lists import); else the import file

    @property
    def value(self) -> str:
        if self.kind is EntryKind.TAC:
            return f"{self.first:08d}"
        if self.kind is EntryKind.RANGE:
            return f"{self.first:014d}-{self.last:014d}"
        return f"{self.first:014d}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    colour TEXT NOT NULL,
    kind TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    imsi TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    source TEXT,
    PRIMARY KEY (kind, colour, first, last, imsi)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('version', '0');
"""

# Partial index: only file-sourced rows pay for it; it makes "entries of file F" a range read.
_SOURCE_INDEX = (
    "CREATE INDEX IF NOT EXISTS entries_source ON entries (source) WHERE source IS NOT NULL"
)

# source: a manual write (NULL) makes the entry manual; a file write takes over a file-sourced
# entry but never a manual one, so an import file can only ever remove what it brought.
# created: the earlier time wins, so a restore (export then import) brings the original back.
_UPSERT = """
INSERT INTO entries (colour, kind, first, last, imsi, reason, created, updated, source)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (kind, colour, first, last, imsi) DO UPDATE SET
    reason = excluded.reason, updated = excluded.updated,
    created = MIN(entries.created, excluded.created),
    source = CASE WHEN entries.source IS NULL THEN NULL ELSE excluded.source END
"""

_KEY_WHERE = "kind=? AND colour=? AND first=? AND last=? AND imsi=?"
_COLUMNS = "colour, kind, first, last, imsi, reason, created, updated, source"

# Bulk imports: rows are staged first (the primary key finds repeats), then upserted together.
_STAGING = """
CREATE TEMP TABLE staging (
    row INTEGER NOT NULL, colour TEXT, kind TEXT, first INTEGER, last INTEGER, imsi TEXT,
    reason TEXT, created REAL, updated REAL, PRIMARY KEY (kind, colour, first, last, imsi)
) WITHOUT ROWID
"""
_STAGE = (
    "INSERT INTO staging (row, colour, kind, first, last, imsi, reason, created, updated) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# "WHERE true": SQLite needs it to tell an upsert's ON CONFLICT from a join (lang_upsert.html).
_FROM_STAGING = _UPSERT.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "SELECT colour, kind, first, last, imsi, reason, created, updated, NULL FROM staging "
    "WHERE true",
)
MANUAL_ACTOR = "cli"  # audit actor of writes made through ListStore without a named actor
IMPORT_FILES_ACTOR = "config:lists.import_files"  # audit actor of the configured import files

Key = tuple[str, str, int, int, str]  # (kind, colour, first, last, imsi): the primary key

_first = itemgetter(0)

_BUMP = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'"


def _body(text: str, what: str) -> int:
    parsed = parse_imei(text)
    if not isinstance(parsed, Imei) or len(text) == 16:
        raise ListError(f"{what} {text!r} is not a 14- or 15-digit IMEI", "value")
    if not parsed.check_digit_ok:
        raise ListError(
            f"{what} {text!r} has a wrong check digit (expected {parsed.check_digit})", "value"
        )
    return parsed.as_int


def make_entry(
    colour: str, kind: str, value: str, imsi: str = "", reason: str = ""
) -> ListEntry:
    """Validate one entry given as text (CLI and CSV share this)."""
    try:
        c = ListColour(colour.strip().lower())
    except ValueError:
        raise ListError(f"list {colour!r} is not black, grey or white", "list") from None
    try:
        k = EntryKind(kind.strip().lower())
    except ValueError:
        raise ListError(f"kind {kind!r} is not imei, range, tac or pair", "kind") from None
    value, imsi = value.strip(), imsi.strip()
    if k is EntryKind.TAC:
        if len(value) != 8 or not is_decimal(value):
            raise ListError(f"TAC {value!r} is not 8 decimal digits", "value")
        first = last = int(value)
    elif k is EntryKind.RANGE:
        ends = value.split("-")
        if len(ends) != 2:
            raise ListError(f"range {value!r} is not FIRST-LAST", "value")
        first, last = _body(ends[0].strip(), "range start"), _body(ends[1].strip(), "range end")
        if first > last:
            raise ListError(f"range {value!r} ends before it starts", "value")
    else:
        first = last = _body(value, "IMEI")
    if k is EntryKind.PAIR:
        if not (6 <= len(imsi) <= 15 and is_decimal(imsi)):
            raise ListError(f"IMSI {imsi!r} is not 6 to 15 decimal digits", "imsi")
    elif imsi:
        raise ListError(f"an IMSI is only allowed for kind pair, not {k.value}", "imsi")
    if "\x00" in reason:  # JSON's \u0000: PostgreSQL's text cannot hold it (SQLite's can)
        raise ListError("reason: a NUL character", "reason")
    if not reason.isascii():
        try:
            reason.encode()
        except UnicodeEncodeError as exc:  # JSON's \ud800 alone: no UTF-8 encodes it
            surrogate = f"\\u{ord(reason[exc.start]):04x}"
            raise ListError(f"reason: an unpaired surrogate ({surrogate}), not UTF-8 text",
                            "reason") from None
    return ListEntry(c, k, first, last, imsi, reason.strip())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _timestamp(text: str, what: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ListError(f"{what} {text!r} is not an ISO 8601 time", what) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # export writes UTC; a bare time is read the same way
    try:
        # In UTC it must still be a datetime (years 1-9999): answers, exports and the audit log
        # show it as one.
        return when.astimezone(UTC).timestamp()
    except OverflowError:
        raise ListError(f"{what} {text!r} is outside the years 1 to 9999 in UTC", what) from None


def _key(e: ListEntry) -> Key:
    return (e.kind.value, e.colour.value, e.first, e.last, e.imsi)


def _rows(
    entries: Iterable[ListEntry], ts: float, source: str | None
) -> Iterator[tuple[object, ...]]:
    for e in entries:
        created = ts if e.created is None else e.created
        updated = ts if e.updated is None else e.updated
        yield (e.colour.value, e.kind.value, e.first, e.last, e.imsi, e.reason or "",
               created, updated, source)


def _file_stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        raise ListError(f"{path}: cannot read: {exc.strerror}") from None
    return f"{st.st_mtime_ns}:{st.st_size}"


# --- the in-memory snapshot (hot path) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListMatch:
    """One entry an IMEI matched. ``reason`` is None for exact IMEIs until described."""

    entry: ListEntry

    @property
    def colour(self) -> ListColour:
        return self.entry.colour


class _Ranges:
    """Sorted ranges with a running maximum of ends, so overlapping ranges are found too."""

    __slots__ = ("entries", "maxend", "starts")

    def __init__(self, entries: list[ListEntry]) -> None:
        entries.sort(key=lambda e: (e.first, e.last))
        self.entries = entries
        self.starts = array("Q", (e.first for e in entries))
        self.maxend = array("Q")
        top = 0
        for e in entries:
            top = max(top, e.last)
            self.maxend.append(top)

    def find(self, value: int) -> Iterator[ListEntry]:
        i = bisect_right(self.starts, value) - 1
        while i >= 0 and self.maxend[i] >= value:
            e = self.entries[i]
            if e.last >= value:
                yield e
            i -= 1


# A colour's sorted exact IMEIs: in this process, or a file every worker maps
# (``lists.shared_snapshot``, gateway/snapshot_files.py); one look-up cost at any size.
Imeis: TypeAlias = SortedImeis


def _listed(imeis: Imeis, value: int) -> bool:
    return imeis.contains(value)


@dataclass(frozen=True, slots=True)
class _Colour:
    imeis: Imeis  # sorted
    ranges: _Ranges
    tacs: dict[int, ListEntry]
    pairs: dict[tuple[int, str], ListEntry]
    # Exact IMEIs changed since ``imeis`` was loaded (ListSnapshot.apply): inserting into a
    # sorted array of 100 million moves 800 MB, a set takes one entry in O(1).
    added: frozenset[int] = frozenset()  # listed, not in ``imeis``
    removed: frozenset[int] = frozenset()  # in ``imeis``, no longer listed

    @property
    def imei_count(self) -> int:
        return len(self.imeis) + len(self.added) - len(self.removed)


@dataclass(frozen=True, slots=True)
class ListChange:
    """One entry written (``removed`` False) or removed at store version ``version``; ``entry``
    None: a bulk write, which only a full load brings in."""

    version: int
    entry: ListEntry | None
    removed: bool = False


# Exact IMEIs a snapshot may hold outside its sorted arrays before a full load is cheaper.
MAX_OVERLAY = 100_000


class ListSnapshot:
    """Immutable view of all lists at one store version."""

    __slots__ = ("_colours", "version")

    def __init__(self, version: int, colours: dict[ListColour, _Colour]) -> None:
        self.version = version
        self._colours = colours

    @classmethod
    def empty(cls) -> ListSnapshot:
        return cls(0, {})

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for colour, c in self._colours.items():
            out[f"{colour.value}.imei"] = c.imei_count
            out[f"{colour.value}.range"] = len(c.ranges.entries)
            out[f"{colour.value}.tac"] = len(c.tacs)
            out[f"{colour.value}.pair"] = len(c.pairs)
        return out

    def match(self, imei: int, imsi: str | None = None) -> list[ListMatch]:
        """Every entry matching the IMEI body (and the IMSI for pairs); whites first."""
        out: list[ListMatch] = []
        tac = imei // 1_000_000
        for colour, c in self._colours.items():
            imeis = c.imeis
            if imeis and _listed(imeis, imei) and not (c.removed and imei in c.removed):
                out.append(ListMatch(ListEntry(colour, EntryKind.IMEI, imei, imei)))
            if c.added and imei in c.added:
                out.append(ListMatch(ListEntry(colour, EntryKind.IMEI, imei, imei)))
            if c.ranges.entries:
                out.extend(ListMatch(e) for e in c.ranges.find(imei))
            if c.tacs:
                e = c.tacs.get(tac)
                if e is not None:
                    out.append(ListMatch(e))
            if imsi and c.pairs:
                e = c.pairs.get((imei, imsi))
                if e is not None:
                    out.append(ListMatch(e))
        return out

    def apply(self, changes: Iterable[ListChange]) -> ListSnapshot | None:
        """This snapshot with ``changes`` (versions above this one, in order) applied, as a new
        snapshot; None when only a full load can bring them: a bulk write, a version missing
        (the change log was pruned past it) or more than :data:`MAX_OVERLAY` exact IMEIs
        changed since the last full load. Costs the changed colours' small tables (ranges,
        TACs, pairs) and overlays, never the sorted arrays."""
        version = self.version
        touched: dict[ListColour, _ColourEdit] = {}
        for change in changes:
            if change.version == version + 1:
                version += 1
            elif change.version != version:
                return None  # a hole: versions are gapless, so a change was pruned
            entry = change.entry
            if entry is None:
                return None
            edit = touched.get(entry.colour)
            if edit is None:
                edit = touched[entry.colour] = _ColourEdit(self._colours.get(entry.colour))
            edit.apply(entry, change.removed)
            if edit.overlay > MAX_OVERLAY:
                return None
        if version == self.version:
            return self
        colours = dict(self._colours)
        for colour, edit in touched.items():
            colours[colour] = edit.colour()
        # Whitelist first, as a full load orders them (match lists whites first).
        ordered = {c: colours[c] for c in ListColour if c in colours}
        return ListSnapshot(version, ordered)


class _ColourEdit:
    """A colour's tables being changed by :meth:`ListSnapshot.apply` (copies, never the
    snapshot's own)."""

    def __init__(self, base: _Colour | None) -> None:
        self.imeis: Imeis = base.imeis if base is not None else SortedImeis.empty()
        self.added = set(base.added) if base is not None else set()
        self.removed = set(base.removed) if base is not None else set()
        self.ranges = {_key(e): e for e in base.ranges.entries} if base is not None else {}
        self.tacs = dict(base.tacs) if base is not None else {}
        self.pairs = dict(base.pairs) if base is not None else {}

    @property
    def overlay(self) -> int:
        return len(self.added) + len(self.removed)

    def apply(self, entry: ListEntry, removed: bool) -> None:
        kind = entry.kind
        if kind is EntryKind.IMEI:
            value = entry.first
            stored = _listed(self.imeis, value)
            if removed:
                if stored:
                    self.removed.add(value)
                self.added.discard(value)
            else:
                self.removed.discard(value)
                if not stored:
                    self.added.add(value)
        elif kind is EntryKind.RANGE:
            if removed:
                self.ranges.pop(_key(entry), None)
            else:
                self.ranges[_key(entry)] = entry
        elif kind is EntryKind.TAC:
            if removed:
                self.tacs.pop(entry.first, None)
            else:
                self.tacs[entry.first] = entry
        elif removed:
            self.pairs.pop((entry.first, entry.imsi), None)
        else:
            self.pairs[(entry.first, entry.imsi)] = entry

    def colour(self) -> _Colour:
        return _Colour(self.imeis, _Ranges(list(self.ranges.values())), self.tacs, self.pairs,
                       frozenset(self.added), frozenset(self.removed))


# --- the SQLite store ------------------------------------------------------------------------


class ListStore:
    """The lists database (var/lists.sqlite). Writers bump the version in the same transaction."""

    def __init__(self, database: str | Path) -> None:
        self.path = Path(database)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._conn.executescript(audit.SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Databases made before ``source`` existed get the column; their rows stay NULL
        (manual), so no import file can remove an entry it cannot be proven to have brought."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")  # two processes opening at once: one alters
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(entries)")}
            if "source" not in columns:
                self._conn.execute("ALTER TABLE entries ADD COLUMN source TEXT")
            self._conn.execute(_SOURCE_INDEX)

    @property
    def location(self) -> str:
        return str(self.path.resolve())

    def close(self) -> None:
        self._conn.close()

    def version(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0])

    def changes(self, after: int) -> list[ListChange] | None:
        """What changed after version ``after``: None, this store keeps no change log (a
        running gateway loads it whole when the version moves)."""
        return None

    def watch(self, wake: Callable[[], None]) -> bool:
        """Call ``wake`` when another process changed the store: False, SQLite cannot tell;
        the gateway polls :meth:`version`."""
        return False

    def _write(self, entries: Iterable[ListEntry], now: float | None = None) -> int:
        ts = time.time() if now is None else now
        with self._lock, self._conn:
            cur = self._conn.executemany(_UPSERT, _rows(entries, ts, None))
            self._conn.execute(_BUMP)
            return cur.rowcount

    def add(self, entry: ListEntry, now: float | None = None) -> None:
        self._write((entry,), now)

    def add_many(self, entries: Iterable[ListEntry], now: float | None = None) -> int:
        """Bulk upsert in one transaction (a generator is consumed lazily)."""
        return self._write(entries, now)

    def bulk_add_imeis(
        self, colour: ListColour, bodies: Iterable[int], reason: str = "", now: float | None = None
    ) -> int:
        """Upsert many exact IMEIs (integer bodies) of one colour in one transaction; no
        per-entry objects, for lists of millions."""
        ts = time.time() if now is None else now
        c = colour.value
        rows = ((c, "imei", b, b, "", reason, ts, ts, None) for b in bodies)
        with self._lock, self._conn:
            cur = self._conn.executemany(_UPSERT, rows)
            self._conn.execute(_BUMP)
            return cur.rowcount

    def remove(self, entry: ListEntry) -> bool:
        with self._lock, self._conn:
            cur = self._conn.execute(
                f"DELETE FROM entries WHERE {_KEY_WHERE}", _key(entry)
            )
            if cur.rowcount:
                self._conn.execute(_BUMP)
            return cur.rowcount > 0

    def import_csv(self, path: str | Path) -> int:
        """Validate every row first, then write all in one transaction; returns the row count."""
        return self.import_entries(iter_csv(LineReader(path)), str(path), MANUAL_ACTOR)

    # -- provisioning: single entries with their audit record, pages, queries, bulk imports --

    def _select(self, entry: ListEntry) -> ListEntry | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE {_KEY_WHERE}", _key(entry)
        ).fetchone()
        return None if row is None else _row_entry(row)

    def get(self, entry: ListEntry) -> ListEntry | None:
        """The stored entry with the key of ``entry`` (list, kind, value, IMSI), or None."""
        with self._lock:
            return self._select(entry)

    def put(
        self, entry: ListEntry, actor: str, *, create_only: bool = False, now: float | None = None
    ) -> tuple[ListEntry | None, ListEntry]:
        """Create or update one entry (a manual entry from then on) and append its audit record,
        in one transaction. Returns (before, after); ``create_only`` raises :class:`EntryExists`
        instead of updating."""
        ts = time.time() if now is None else now
        with self._lock, self._conn:
            before = self._select(entry)
            if before is not None and create_only:
                raise EntryExists(f"{entry_target(entry)} exists")
            self._conn.execute(_UPSERT, next(_rows((entry,), ts, None)))
            self._conn.execute(_BUMP)
            after = self._select(entry)
            assert after is not None
            audit.append(self._conn, ts, actor, "update" if before else "create",
                         entry_target(entry), entry_json(before), entry_json(after))
        return before, after

    def delete(self, entry: ListEntry, actor: str, now: float | None = None) -> ListEntry | None:
        """Remove one entry with its audit record; returns what was removed (None: nothing)."""
        ts = time.time() if now is None else now
        with self._lock, self._conn:
            before = self._select(entry)
            if before is None:
                return None
            self._conn.execute(f"DELETE FROM entries WHERE {_KEY_WHERE}", _key(entry))
            self._conn.execute(_BUMP)
            audit.append(self._conn, ts, actor, "delete", entry_target(entry),
                         entry_json(before), None)
        return before

    def page(
        self,
        colour: ListColour | None = None,
        kind: EntryKind | None = None,
        after: Key | None = None,
        limit: int = 100,
    ) -> list[ListEntry]:
        """Entries in key order after ``after`` (keyset pagination: stable under writes)."""
        where, args = _filters(colour, kind)
        if after is not None:
            where.append("(kind, colour, first, last, imsi) > (?, ?, ?, ?, ?)")
            args.extend(after)
        sql = f"SELECT {_COLUMNS} FROM entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY kind, colour, first, last, imsi LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [_row_entry(r) for r in rows]

    def matching(self, body: int) -> list[ListEntry]:
        """Every stored entry an IMEI body matches: exact, pair (any IMSI), TAC and range.
        Point lookups on the primary key (kind, colour, first, ...) per colour; ranges are
        scanned from the lowest start up to the IMEI."""
        tac = body // 1_000_000
        sql: list[str] = []
        args: list[object] = []
        for colour in ListColour:
            c = colour.value
            sql.append(f"SELECT {_COLUMNS} FROM entries WHERE kind = 'imei' AND colour = ? "
                       "AND first = ?")
            sql.append(f"SELECT {_COLUMNS} FROM entries WHERE kind = 'pair' AND colour = ? "
                       "AND first = ?")
            sql.append(f"SELECT {_COLUMNS} FROM entries WHERE kind = 'tac' AND colour = ? "
                       "AND first = ?")
            sql.append(f"SELECT {_COLUMNS} FROM entries WHERE kind = 'range' AND colour = ? "
                       "AND first <= ? AND last >= ?")
            args.extend((c, body, c, body, c, tac, c, body, body))
        with self._lock:
            rows = self._conn.execute(" UNION ALL ".join(sql), args).fetchall()
        return [_row_entry(r) for r in rows]

    def import_entries(
        self,
        rows: Iterable[tuple[int, ListEntry]],
        label: str,
        actor: str,
        progress: Progress | None = None,
        position: Callable[[], int] | None = None,
        chunk: int = 10_000,
    ) -> int:
        """Import (row number, entry) pairs, all or nothing, as manual entries; returns the count.

        Streams: rows are staged in a temporary table (its primary key finds a repeated entry,
        named with both rows) on a connection of their own, then upserted into ``entries`` in
        the same transaction as the version bump and one audit record. Nothing is held in memory
        but a chunk, so a 10-million-row file imports in bounded memory; until the final
        statement other readers and writers of the database are not held up."""
        staging = Staging(rows, time.time(), chunk, progress, position)
        conn = sqlite3.connect(str(self.path), timeout=60.0)
        try:
            conn.execute(_STAGING)
            for pending in staging.chunks():
                cur = conn.executemany(_STAGE, pending)
                if cur.rowcount != len(pending):
                    for values in pending:
                        row, colour, kind, first, last, imsi = values[:6]
                        earlier = conn.execute(
                            f"SELECT row FROM staging WHERE {_KEY_WHERE}",
                            (kind, colour, first, last, imsi),
                        ).fetchone()[0]
                        if earlier != row:
                            entry = _row_entry(values[1:])
                            raise ListError(f"{label}: {_repeat(row, earlier, entry)}")
            if staging.count:
                conn.execute(_FROM_STAGING)
                conn.execute(_BUMP)
                audit.append(conn, staging.ts, actor, "import", f"import:{label}", None,
                             staging.summary(label))
            conn.commit()
        finally:
            conn.rollback()
            conn.close()
        if progress is not None:
            progress.finish()
        return staging.count

    def import_csv_once(self, path: str | Path) -> int | None:
        """Import ``path`` as an import file unless this exact file (mtime and size) was
        imported before; returns its entry count, or None when unchanged. An entry it drops
        that another import file also lists is removed too: pass every configured file to
        :meth:`import_files` instead."""
        return self.import_files([path]).get(Path(path).resolve())

    def import_files(self, paths: Iterable[str | Path]) -> dict[Path, int]:
        """Import every file of ``paths`` (the configured ``lists.import_files``) whose mtime or
        size changed since its last import, all in one transaction with one version bump.

        Each file is authoritative for the entries it brought: an entry it brought that is no
        longer in it is removed, unless another of ``paths`` still lists it (that file then
        owns it). Manual entries are never removed. Every changed file is validated before
        anything is written. Returns ``{resolved path: entries in the file}`` per import."""
        def stored(path: Path) -> str | None:
            with self._lock:
                row = self._conn.execute(
                    "SELECT value FROM meta WHERE key = ?", (f"import:{path}",)
                ).fetchone()
            return None if row is None else str(row[0])

        plan = ImportFiles(paths, stored)
        if not plan.changed:
            return {}
        parsed = plan.parsed
        ts = time.time()
        with self._lock, self._conn:
            conn = self._conn
            for path, stamp in plan.changed:
                source = str(path)
                conn.executemany(_UPSERT, _rows(parsed[path], ts, source))
                owned = conn.execute(
                    "SELECT kind, colour, first, last, imsi FROM entries WHERE source = ?",
                    (source,),
                ).fetchall()
                mine = plan.listed_in(path)
                removed = 0
                for key in owned:
                    if key in mine:
                        continue
                    owner = plan.owner(path, key)
                    if owner is None:
                        conn.execute(f"DELETE FROM entries WHERE {_KEY_WHERE}", key)
                        removed += 1
                    else:
                        conn.execute(
                            f"UPDATE entries SET source = ? WHERE {_KEY_WHERE}", (str(owner), *key)
                        )
                conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"import:{path}", stamp))
                # Audited like every other write, in the same transaction (gateway/audit.py).
                audit.append(conn, ts, IMPORT_FILES_ACTOR, "import", f"import:{path}", None,
                             {"file": source, "entries": len(parsed[path]), "removed": removed})
            conn.execute(_BUMP)
        return plan.counts()

    def entries(
        self,
        colour: ListColour | None = None,
        kind: EntryKind | None = None,
        limit: int | None = None,
    ) -> Iterator[ListEntry]:
        sql = "SELECT colour, kind, first, last, imsi, reason, created, updated FROM entries"
        where, args = _filters(colour, kind)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY kind, colour, first, last, imsi"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall() if limit is not None else None
        if rows is None:
            cur = self._conn.cursor()
            cur.execute(sql, args)
            while chunk := cur.fetchmany(10_000):
                yield from (_row_entry(r) for r in chunk)
        else:
            yield from (_row_entry(r) for r in rows)

    def export_csv(self, out: TextIO) -> int:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        n = 0
        for e in self.entries():
            writer.writerow(csv_row(e))
            n += 1
        return n

    def audit(self, **filters: Any) -> list[audit.AuditRecord]:
        """Audit log records; filters as :func:`gateway.audit.query`."""
        with self._lock:
            return audit.query(self._conn, **filters)

    def describe(self, match: ListMatch) -> ListEntry:
        """The stored entry behind a match, with its reason and timestamps."""
        e = match.entry
        with self._lock:
            row = self._conn.execute(
                "SELECT colour, kind, first, last, imsi, reason, created, updated FROM entries "
                f"WHERE {_KEY_WHERE}",
                _key(e),
            ).fetchone()
        return e if row is None else _row_entry(row)

    def load(self, chunk: int = 65_536) -> ListSnapshot:
        """Stream the store into a snapshot; exact IMEIs go straight into arrays, chunk by chunk."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")  # one read snapshot: version and rows agree
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()
                version = int(row[0])
                colours: dict[ListColour, _Colour] = {}
                for colour in ListColour:  # WHITE first: whitelist matches come first
                    imeis = array("Q")
                    cur = conn.execute(
                        "SELECT first FROM entries WHERE kind='imei' AND colour=? ORDER BY first",
                        (colour.value,),
                    )
                    while rows := cur.fetchmany(chunk):
                        imeis.extend(map(_first, rows))
                    others = [
                        _row_entry(r)
                        for r in conn.execute(
                            "SELECT colour, kind, first, last, imsi, reason, created, updated "
                            "FROM entries WHERE kind != 'imei' AND colour=?",
                            (colour.value,),
                        )
                    ]
                    ranges = [e for e in others if e.kind is EntryKind.RANGE]
                    tacs = {e.first: e for e in others if e.kind is EntryKind.TAC}
                    pairs = {(e.first, e.imsi): e for e in others if e.kind is EntryKind.PAIR}
                    if imeis or ranges or tacs or pairs:
                        colours[colour] = _Colour(SortedImeis.of(imeis), _Ranges(ranges), tacs,
                                                  pairs)
            finally:
                conn.execute("COMMIT")
        return ListSnapshot(version, colours)


class Staging:
    """The rows of an import as staging-table tuples (row, colour, kind, first, last, imsi,
    reason, created, updated), ``chunk`` at a time; counts them, hashes their entries for the
    audit record and advances the progress. A bad row (ListError) is raised after the chunk
    before it was handed out: a repeat of an earlier row is the earlier problem."""

    def __init__(
        self, rows: Iterable[tuple[int, ListEntry]], ts: float, chunk: int = 10_000,
        progress: Progress | None = None, position: Callable[[], int] | None = None,
    ) -> None:
        self.rows = rows
        self.ts = ts
        self.chunk = chunk
        self.progress = progress
        self.position = position
        self.count = 0
        self.digest = hashlib.sha256()

    def _advance(self) -> None:
        if self.progress is not None:
            n = self.count
            self.progress.advance(self.position() if self.position is not None else n, n)

    def chunks(self) -> Iterator[list[tuple[Any, ...]]]:
        ts = self.ts
        pending: list[tuple[Any, ...]] = []
        error: ListError | None = None
        try:
            for row_number, entry in self.rows:
                created = ts if entry.created is None else entry.created
                updated = ts if entry.updated is None else entry.updated
                pending.append((row_number, entry.colour.value, entry.kind.value, entry.first,
                                entry.last, entry.imsi, entry.reason or "", created, updated))
                self.digest.update(f"{_key(entry)}".encode())
                self.count += 1
                if len(pending) >= self.chunk:
                    yield pending
                    pending = []
                    self._advance()
                elif self.count % 1000 == 0:
                    self._advance()
        except ListError as exc:
            error = exc
        if pending:
            yield pending
        self._advance()
        if error is not None:
            raise error

    def summary(self, label: str) -> dict[str, object]:
        """The audit record's ``after`` of the import."""
        return {"file": label, "entries": self.count, "sha256": self.digest.hexdigest()}


class ImportFiles:
    """The configured ``lists.import_files`` whose stamp (mtime and size) differs from the one
    ``stored`` gives, each parsed, so all are validated before anything is written; and which
    file lists a key."""

    def __init__(self, paths: Iterable[str | Path], stored: Callable[[Path], str | None]
                 ) -> None:
        self.files = [Path(p).resolve() for p in paths]
        self.changed: list[tuple[Path, str]] = []
        for path in self.files:
            stamp = _file_stamp(path)  # before reading: a write during the read shows next time
            if stored(path) != stamp:
                self.changed.append((path, stamp))
        self.parsed = {path: list(read_csv(path)) for path, _ in self.changed}
        self._keys: dict[Path, set[Key]] = {}

    def listed_in(self, path: Path) -> set[Key]:
        """The keys a file lists (parsed lazily: only when entries disappear)."""
        if path not in self._keys:
            entries = self.parsed[path] if path in self.parsed else list(read_csv(path))
            self._keys[path] = {_key(e) for e in entries}
        return self._keys[path]

    def owner(self, path: Path, key: Key) -> Path | None:
        """Another configured file still listing ``key`` (it takes the entry over), or None:
        the entry ``path`` no longer lists is removed."""
        return next((o for o in self.files if o != path and key in self.listed_in(o)), None)

    def counts(self) -> dict[Path, int]:
        return {path: len(self.parsed[path]) for path, _ in self.changed}


def _filters(
    colour: ListColour | None, kind: EntryKind | None
) -> tuple[list[str], list[object]]:
    """WHERE terms and arguments selecting one list and/or kind."""
    where: list[str] = []
    args: list[object] = []
    if kind is not None:
        where.append("kind = ?")
        args.append(kind.value)
    if colour is not None:
        where.append("colour = ?")
        args.append(colour.value)
    return where, args


def _row_entry(row: tuple) -> ListEntry:
    """An entry from (colour, kind, first, last, imsi, reason, created, updated[, source])."""
    colour, kind, first, last, imsi, reason, created, updated = row[:8]
    return ListEntry(
        ListColour(colour), EntryKind(kind), first, last, imsi, reason, created, updated,
        row[8] if len(row) > 8 else None,
    )


CSV_HEADER = ("list", "kind", "value", "imsi", "reason", "created", "updated")


def csv_row(e: ListEntry) -> list[str]:
    """An entry as a row of the export (and import) CSV format."""
    return [e.colour.value, e.kind.value, e.value, e.imsi, e.reason or "",
            _iso(e.created or 0.0), _iso(e.updated or 0.0)]


def entry_id(entry: ListEntry) -> str:
    """An entry's name within its list: ``imei:V``, ``range:A-B``, ``tac:T``, ``pair:V:IMSI``."""
    name = f"{entry.kind.value}:{entry.value}"
    return f"{name}:{entry.imsi}" if entry.kind is EntryKind.PAIR else name


def parse_entry_id(colour: str, text: str, reason: str = "") -> ListEntry:
    """The inverse of :func:`entry_id` (raises ListError)."""
    kind, sep, rest = text.partition(":")
    if not sep:
        raise ListError(f"entry {text!r} is not KIND:VALUE (imei:, range:, tac:, pair:IMEI:IMSI)")
    value, _, imsi = rest.partition(":") if kind == EntryKind.PAIR.value else (rest, "", "")
    return make_entry(colour, kind, value, imsi, reason)


def entry_target(entry: ListEntry) -> str:
    """How the audit log names an entry: ``LIST/ID``."""
    return f"{entry.colour.value}/{entry_id(entry)}"


def entry_json(entry: ListEntry | None) -> dict[str, object] | None:
    """An entry as the API, JSON lines export and the audit log show it."""
    if entry is None:
        return None
    return {
        "list": entry.colour.value,
        "kind": entry.kind.value,
        "value": entry.value,
        "imsi": entry.imsi or None,
        "reason": entry.reason or "",
        "created": None if entry.created is None else _iso(entry.created),
        "updated": None if entry.updated is None else _iso(entry.updated),
        "source": entry.source,
    }


class LineReader:
    """The decoded lines of a UTF-8 file, read as a stream (a 10-million-row file is never held
    whole); ``line`` and ``position`` (bytes read) follow the iteration, for errors and progress.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.line = 0
        self.position = 0
        try:
            self.size = Path(path).stat().st_size
        except OSError as exc:
            raise ListError(f"{path}: cannot read: {exc.strerror}") from None

    def __iter__(self) -> Iterator[str]:
        path = self.path
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise ListError(f"{path}: cannot read: {exc.strerror}") from None
        with handle:
            for raw in handle:
                self.line += 1
                self.position += len(raw)
                if self.line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 BOM (Excel writes one)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    # Typically an Excel "CSV" export in a legacy code page: say where.
                    raise ListError(
                        f"{path}: line {self.line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); "
                        "save the file as UTF-8 CSV"
                    ) from None
                if "\0" in text:  # UTF-16 ("Unicode text") or binary
                    raise ListError(f"{path}: line {self.line}: a NUL byte: not a UTF-8 text file")
                yield text


def iter_csv(lines: LineReader) -> Iterator[tuple[int, ListEntry]]:
    """(row number, entry) of a lists CSV; raises ListError naming the file and row on the first
    bad row. Repeated entries are not looked for here (see :func:`read_csv`)."""
    path = lines.path
    reader = csv.reader(iter(lines))
    row_number = 0
    while True:
        row_number += 1
        try:
            row = next(reader, None)
        except csv.Error as exc:  # an unterminated quote at the end, ...
            raise ListError(f"{path}: row {row_number}: {exc}") from None
        if row is None:
            return
        if not row or all(not f.strip() for f in row):
            continue
        if row_number == 1 and row[0].strip().lower() == "list":
            continue
        if len(row) not in (5, 7):
            raise ListError(
                f"{path}: row {row_number}: {len(row)} fields, expected "
                "list,kind,value,imsi,reason[,created,updated]"
            )
        try:
            entry = make_entry(row[0], row[1], row[2], row[3], row[4])
            if len(row) == 7:
                entry = dataclasses.replace(
                    entry,
                    created=_timestamp(row[5], "created"),
                    updated=_timestamp(row[6], "updated"),
                )
        except ListError as exc:
            raise ListError(f"{path}: row {row_number}: {exc}") from None
        yield row_number, entry


JSON_FIELDS = ("list", "kind", "value", "imsi", "reason", "created", "updated")


def entry_from_json(item: object) -> ListEntry:
    """One entry as the API and JSON lines carry it: ``{"list", "kind", "value"[, "imsi",
    "reason", "created", "updated"]}``; a problem names the field."""
    if not isinstance(item, dict):
        raise ListError("an entry is a JSON object", "body")
    unknown = sorted(set(item) - set(JSON_FIELDS))
    if unknown:
        raise ListError(f"{unknown[0]}: unknown field", unknown[0])
    for name, value in item.items():
        # null only for "imsi" (what the export writes for entries that are not pairs)
        if not isinstance(value, str) and not (name == "imsi" and value is None):
            raise ListError(f"{name}: must be a string", name)
    for name in ("list", "kind", "value"):
        if not item.get(name):
            raise ListError(f"{name}: required", name)
    for name in ("created", "updated"):
        if item.get(name) == "":
            raise ListError(f"{name}: empty (leave it out, or give an ISO 8601 time)", name)
    entry = make_entry(item["list"], item["kind"], item["value"], item.get("imsi") or "",
                       item.get("reason") or "")
    created = _timestamp(item.get("created") or "", "created")
    updated = _timestamp(item.get("updated") or "", "updated")
    if created is not None or updated is not None:
        entry = dataclasses.replace(entry, created=created, updated=updated)
    return entry


def iter_jsonl(lines: LineReader) -> Iterator[tuple[int, ListEntry]]:
    """(line number, entry) of a JSON lines file, one :func:`entry_from_json` object a line."""
    for text in lines:
        if not text.strip():
            continue
        try:
            entry = entry_from_json(json.loads(text))
        except ValueError as exc:  # ListError and json.JSONDecodeError
            raise ListError(f"{lines.path}: line {lines.line}: {exc}") from None
        except RecursionError:  # json.loads gives up on deep nesting with this
            raise ListError(f"{lines.path}: line {lines.line}: JSON nested too deeply") from None
        yield lines.line, entry


def read_csv(path: str | Path) -> Iterator[ListEntry]:
    """Parse a lists CSV; raises ListError naming the file and row on the first bad row or
    the first repeat of an earlier row's entry."""
    seen: dict[Key, int] = {}
    for row_number, entry in iter_csv(LineReader(path)):
        earlier = seen.setdefault(_key(entry), row_number)
        if earlier != row_number:
            raise ListError(f"{path}: {_repeat(row_number, earlier, entry)}")
        yield entry


def _repeat(row: int, earlier: int, entry: ListEntry) -> str:
    # Two rows for one entry: which reason should win is the operator's call.
    imsi = " " + entry.imsi if entry.imsi else ""
    return (f"row {row} repeats row {earlier} ({entry.colour.value} {entry.kind.value} "
            f"{entry.value}{imsi})")


class ListBackend(Protocol):
    """What the lists service layer, the CLI and a running gateway ask of a store: the SQLite
    :class:`ListStore`, or :class:`gateway.pg.lists.PgListStore`."""

    @property
    def location(self) -> str: ...  # the database, as messages name it
    def close(self) -> None: ...
    def version(self) -> int: ...
    def changes(self, after: int) -> list[ListChange] | None: ...
    def watch(self, wake: Callable[[], None]) -> bool: ...
    def load(self) -> ListSnapshot: ...
    def describe(self, match: ListMatch) -> ListEntry: ...
    def get(self, entry: ListEntry) -> ListEntry | None: ...
    def put(
        self, entry: ListEntry, actor: str, *, create_only: bool = False,
        now: float | None = None,
    ) -> tuple[ListEntry | None, ListEntry]: ...
    def delete(
        self, entry: ListEntry, actor: str, now: float | None = None
    ) -> ListEntry | None: ...
    def page(
        self, colour: ListColour | None = None, kind: EntryKind | None = None,
        after: Key | None = None, limit: int = 100,
    ) -> list[ListEntry]: ...
    def matching(self, body: int) -> list[ListEntry]: ...
    def entries(
        self, colour: ListColour | None = None, kind: EntryKind | None = None,
        limit: int | None = None,
    ) -> Iterator[ListEntry]: ...
    def import_entries(
        self, rows: Iterable[tuple[int, ListEntry]], label: str, actor: str,
        progress: Progress | None = None, position: Callable[[], int] | None = None,
        chunk: int = 10_000,
    ) -> int: ...
    def import_files(self, paths: Iterable[str | Path]) -> dict[Path, int]: ...
    def audit(self, **filters: Any) -> list[audit.AuditRecord]: ...


class OperatorLists:
    """What the classifier holds: the current snapshot, swapped whole on reload.

    ``reload()`` is what SIGHUP calls: it first re-imports each of ``import_files`` whose mtime
    or size changed (a stat per file; unchanged files are not read), then loads the store.
    ``poll()`` reloads only when the store version moved and never looks at the files (one
    indexed read). Both block on SQLite: from asyncio run them with ``asyncio.to_thread``.
    """

    def __init__(
        self, store: ListBackend | None, import_files: Iterable[str | Path] = ()
    ) -> None:
        self.store = store
        self.import_files = tuple(import_files)
        self.import_error: str | None = None  # the last failed re-import, None once one works
        self.snapshot = ListSnapshot.empty()

    def reload(self) -> ListSnapshot:
        if self.store is not None:
            if self.import_files:
                try:
                    self.store.import_files(self.import_files)
                    self.import_error = None
                except ListError as exc:
                    # A bad edit must not stop the reload or lose entries: the file's previous
                    # entries stay (nothing was written) until it is fixed and SIGHUP comes again.
                    self.import_error = str(exc)
                    log.error("lists import file not re-imported, previous entries kept: %s", exc)
            self.snapshot = self.store.load()
        return self.snapshot

    def poll(self) -> bool:
        """Bring the snapshot to the store's version: the changes since this snapshot applied
        to it where the store keeps them (PostgreSQL), else a full load."""
        store = self.store
        if store is None:
            return False
        snapshot = self.snapshot
        version = store.version()
        if version == snapshot.version:
            return False
        changes = store.changes(snapshot.version)
        updated = snapshot.apply(changes) if changes is not None else None
        if updated is None:
            self.snapshot = store.load()  # the files are SIGHUP's business (reload)
        else:
            self.snapshot = updated
        return True

    def describe(self, match: ListMatch) -> ListEntry:
        if self.store is None or match.entry.reason is not None:
            return match.entry
        return self.store.describe(match)


def open_operator_lists(
    database: str | Path, import_files: Iterable[str | Path] = ()
) -> OperatorLists:
    """Open the store, import each CSV file whose size or mtime changed, load a snapshot.

    A bad import file raises :class:`ListError` here (start-up fails and names it); later
    reloads log it and keep the previous entries instead."""
    store = ListStore(database)
    try:
        store.import_files(import_files)
    except BaseException:
        store.close()
        raise
    lists = OperatorLists(store, import_files)
    lists.snapshot = store.load()
    return lists
