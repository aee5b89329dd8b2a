"""The operator lists in PostgreSQL: :class:`gateway.lists.ListBackend`, as the SQLite
:class:`gateway.lists.ListStore` does it, plus the change sequence (gateway/pg/schema.py) that
lets a running gateway apply each change to its snapshot instead of loading every entry again.

Bulk writes use COPY: an import streams its rows into a temporary staging table in chunks
(parsed in the calling thread, copied on the pool's loop), finds a repeated entry there, and
upserts all of it in the transaction of the version bump and its audit record.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import asyncpg

from gateway import audit
from gateway.lists import (
    IMPORT_FILES_ACTOR,
    MAX_OVERLAY,
    EntryExists,
    EntryKind,
    Imeis,
    ImportFiles,
    Key,
    ListChange,
    ListColour,
    ListEntry,
    ListError,
    ListMatch,
    ListSnapshot,
    Staging,
    _Colour,
    _key,
    _Ranges,
    _repeat,
    _row_entry,
    entry_json,
    entry_target,
)
from gateway.pg.database import CONNECT_TIMEOUT, Database
from gateway.pg.schema import CHANGES_KEPT, CHANNEL
from gateway.progress import Progress
from gateway.snapshot_files import SnapshotFiles
from gateway.sorted_imeis import SortedImeis

_COLUMNS = "colour, kind, first, last, imsi, reason, created, updated, source"
_KEY_WHERE = "kind = $1 AND colour = $2 AND first = $3 AND last = $4 AND imsi = $5"
_UPSERT_SET = """
ON CONFLICT (kind, colour, first, last, imsi) DO UPDATE SET
    reason = excluded.reason, updated = excluded.updated,
    created = LEAST(entries.created, excluded.created),
    source = CASE WHEN entries.source IS NULL THEN NULL ELSE excluded.source END
"""
_UPSERT = f"INSERT INTO entries ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)" + _UPSERT_SET
_STAGING = """
CREATE TEMP TABLE staging (
    row INTEGER NOT NULL, colour TEXT, kind TEXT, first BIGINT, last BIGINT, imsi TEXT,
    reason TEXT, created DOUBLE PRECISION, updated DOUBLE PRECISION
) ON COMMIT DROP
"""
_STAGING_COLUMNS = ["row", "colour", "kind", "first", "last", "imsi", "reason", "created",
                    "updated"]
# The first row whose entry an earlier row already had (what SQLite's staging key finds).
_FIRST_REPEAT = """
SELECT row, earlier, colour, kind, first, last, imsi FROM (
    SELECT row, colour, kind, first, last, imsi,
           min(row) OVER (PARTITION BY kind, colour, first, last, imsi) AS earlier
    FROM staging) AS s
WHERE row <> earlier ORDER BY row LIMIT 1
"""
# The upsert of a staged import, as _UPSERT's rules (manual: source NULL; created: the earlier),
# in two statements: entries that exist are updated, the others inserted by an anti-join. An
# INSERT ... ON CONFLICT probes the index row by row (measured 3-5 times slower in bulk). The
# rows are inserted in the primary key's order: each lands beside the last in the index, on a
# page in memory, where rows in hash order touch a random page each (measured 3 times the CPU
# and wall time at 1,000,000 IMEIs, bench/pg_lists.py).
_MERGE_STAGING = (
    "ANALYZE staging",
    "UPDATE entries e SET reason = s.reason, updated = s.updated, "
    "created = LEAST(e.created, s.created), source = NULL FROM staging s "
    "WHERE (e.kind, e.colour, e.first, e.last, e.imsi) = (s.kind, s.colour, s.first, s.last, s.imsi)",
    f"INSERT INTO entries ({_COLUMNS}) SELECT colour, kind, first, last, imsi, reason, created, "
    "updated, NULL FROM staging s WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE "
    "(e.kind, e.colour, e.first, e.last, e.imsi) = (s.kind, s.colour, s.first, s.last, s.imsi)) "
    "ORDER BY kind, colour, first, last, imsi",
)
# bulk_add_imeis: exact IMEIs of one colour ($1), reason $2, at $3; repeats allowed.
_MERGE_IMEIS = (
    "ANALYZE bulk_imeis",
    "UPDATE entries e SET reason = $2, updated = $3, source = NULL "
    "FROM (SELECT DISTINCT first FROM bulk_imeis) b WHERE e.kind = 'imei' AND e.colour = $1 "
    "AND e.first = b.first AND e.last = b.first AND e.imsi = ''",
    f"INSERT INTO entries ({_COLUMNS}) SELECT $1, 'imei', first, first, '', $2, $3, $3, NULL "
    "FROM (SELECT DISTINCT first FROM bulk_imeis) b WHERE NOT EXISTS (SELECT 1 FROM entries e "
    "WHERE e.kind = 'imei' AND e.colour = $1 AND e.first = b.first AND e.last = b.first "
    "AND e.imsi = '') ORDER BY first",
)

log = logging.getLogger("eir.lists")

LISTEN_RETRY = 1.0  # seconds between attempts to LISTEN again
DELTA_LIMIT = 10_000  # a write of more entries is announced as a reload, not entry by entry

Change = tuple[str, ListEntry | None]  # ("upsert" | "delete", entry) or ("reload", None)


async def bump(conn: asyncpg.Connection, changes: Iterable[Change]) -> int:
    """Bump the version, record what it changed and send the wake-up hint; in the caller's
    transaction. More than :data:`DELTA_LIMIT` changes are recorded as one reload."""
    version = await conn.fetchval("UPDATE list_meta SET version = version + 1 RETURNING version")
    rows: list[tuple[object, ...]] = []
    for seq, (op, e) in enumerate(changes):
        if e is None or seq >= DELTA_LIMIT:
            rows = [(version, 0, "reload", None, None, None, None, None, None, None, None)]
            break
        rows.append((version, seq, op, e.colour.value, e.kind.value, e.first, e.last, e.imsi,
                     e.reason or "", e.created, e.updated))
    if not rows:  # every version has a row: a hole means pruned
        rows = [(version, 0, "reload", None, None, None, None, None, None, None, None)]
    await conn.copy_records_to_table(
        "list_changes", records=rows,
        columns=["version", "seq", "op", "colour", "kind", "first", "last", "imsi", "reason",
                 "created", "updated"],
    )
    await conn.execute("DELETE FROM list_changes WHERE version <= $1", version - CHANGES_KEPT)
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(version))
    return int(version)


async def _append_audit(
    conn: asyncpg.Connection, at: float, actor: str, action: str, target: str,
    before: Any, after: Any,
) -> None:
    await conn.execute(
        "INSERT INTO audit (at, actor, action, target, before, after) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        at, actor, action, target, audit.dump(before), audit.dump(after),
    )


def _args(e: ListEntry, ts: float, source: str | None) -> tuple[object, ...]:
    created = ts if e.created is None else e.created
    updated = ts if e.updated is None else e.updated
    return (e.colour.value, e.kind.value, e.first, e.last, e.imsi, e.reason or "", created,
            updated, source)


def _filters(
    colour: ListColour | None, kind: EntryKind | None, args: list[object]
) -> list[str]:
    where: list[str] = []
    if kind is not None:
        args.append(kind.value)
        where.append(f"kind = ${len(args)}")
    if colour is not None:
        args.append(colour.value)
        where.append(f"colour = ${len(args)}")
    return where


class ImeiReader:
    """The output of ``COPY (SELECT one BIGINT column) TO STDOUT (FORMAT binary)`` straight
    into an ``array('Q')``: no row objects, no parsing row by row, for lists of a hundred
    million. In that format (PostgreSQL "COPY", Binary Format) every row is 14 bytes: field
    count 1 (int16), length 8 (int32), the value (int64, big-endian); so a chunk's values are
    its bytes at offsets 6-13 of each row, gathered by eight strided slice copies, and its
    rows checked the same way (a NULL, another column count or a misaligned row is refused).
    With ``sink``, the values (native 64-bit, in order) go to it instead, chunk by chunk."""

    def __init__(self, sink: Callable[[bytes], object] | None = None) -> None:
        self.values = array("Q")
        self._sink = sink
        self._buffer = b""
        self._header = True  # the 11-byte signature, flags and header extension come first

    async def __call__(self, data: bytes) -> None:
        self.feed(data)

    def feed(self, data: bytes) -> None:
        data = self._buffer + data if self._buffer else data
        if self._header:
            if len(data) < 19:
                self._buffer = data
                return
            if data[:11] != _COPY_SIGNATURE:
                raise ValueError("not a binary COPY stream")
            extension = 19 + int.from_bytes(data[15:19], "big")
            if len(data) < extension:
                self._buffer = data
                return
            data = data[extension:]
            self._header = False
        rows = len(data) // _ROW
        self._buffer = data[rows * _ROW:]
        if rows:
            values = _values(data[:rows * _ROW], rows)
            if self._sink is None:
                self.values.frombytes(values)
            else:
                self._sink(values)

    def finish(self) -> array[int]:
        """The values, once the stream ended with its trailer (field count -1)."""
        if self._header or self._buffer != b"\xff\xff":
            raise ValueError("the binary COPY stream ended early")
        return self.values


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_ROW = 14  # int16 1, int32 8, int64 value
_ROW_HEAD = b"\x00\x01\x00\x00\x00\x08"
# Where each byte of a native unsigned 64-bit value comes from in a row (big-endian there).
_BYTE_SOURCES = [6 + (7 - j if sys.byteorder == "little" else j) for j in range(8)]


def _values(rows: bytes, n: int) -> bytes:
    for offset, expected in enumerate(_ROW_HEAD):
        if rows[offset::_ROW].count(expected) != n:
            raise ValueError("a row of the binary COPY stream is not one non-null BIGINT")
    out = bytearray(n * 8)
    for j, source in enumerate(_BYTE_SOURCES):
        out[j::8] = rows[source::_ROW]
    return bytes(out)


# Ranges, TACs and pairs, named rather than "kind <> 'imei'": the primary key (kind, colour,
# ...) then finds them, where the inequality read every row (36 s at 100 million IMEIs).
OTHERS_OF_COLOUR = (
    "SELECT colour, kind, first, last, imsi, reason, created, updated FROM entries WHERE kind IN ("
    + ", ".join(f"'{k.value}'" for k in EntryKind if k is not EntryKind.IMEI)
    + ") AND colour = $1"
)
_IMEIS_OF_COLOUR = ("SELECT first FROM entries WHERE kind = 'imei' AND colour = $1 "
                    "ORDER BY first")


async def _read_imeis(conn: asyncpg.Connection, colour: ListColour) -> SortedImeis:
    reader = ImeiReader()
    await conn.copy_from_query(_IMEIS_OF_COLOUR, colour.value, output=reader, format="binary")
    return SortedImeis.of(reader.finish())


async def _changes_after(conn: asyncpg.Connection, after: int) -> list[ListChange] | None:
    """The changes of the versions after ``after``, in order; None when only a full load can
    bring a snapshot up to date (a bulk write, more than :data:`MAX_OVERLAY`, or pruned)."""
    rows = await conn.fetch(
        "SELECT version, op, colour, kind, first, last, imsi, reason, created, updated "
        "FROM list_changes WHERE version > $1 ORDER BY version, seq LIMIT $2",
        after, MAX_OVERLAY + 1,
    )
    if not rows or len(rows) > MAX_OVERLAY:
        return None
    out: list[ListChange] = []
    for r in rows:
        if r["op"] == "reload":
            return None
        entry = _row_entry((r["colour"], r["kind"], r["first"], r["last"], r["imsi"],
                            r["reason"], r["created"], r["updated"]))
        out.append(ListChange(int(r["version"]), entry, r["op"] == "delete"))
    return out


async def _mapped_imeis(
    conn: asyncpg.Connection, files: SnapshotFiles, version: int, colour: ListColour,
    reuse: bool,
) -> tuple[Imeis, int]:
    """The colour's IMEIs from the host's snapshot file, and the version of that file: this
    version's, or with ``reuse`` the newest older one; where there is none, this version's,
    written first by whichever worker gets there first (the others wait for it, then map
    it)."""
    waited = 0.0
    while True:
        mapped = files.open(version, colour.value)
        if mapped is not None:
            return mapped, version
        if reuse:
            older = files.newest(colour.value, below=version)
            if older is not None:
                return older
        with files.building(version, colour.value) as mine:
            if mine and files.open(version, colour.value) is None:
                with files.writer(version, colour.value) as out:
                    reader = ImeiReader(out.write)
                    await conn.copy_from_query(_IMEIS_OF_COLOUR, colour.value, output=reader,
                                               format="binary")
                    reader.finish()
                continue
        if waited == 0.0 or waited // 60 != (waited + _BUILD_POLL) // 60:
            log.info("waiting for another worker to write %s", files.path(version, colour.value))
        await asyncio.sleep(_BUILD_POLL)
        waited += _BUILD_POLL


_BUILD_POLL = 0.05  # seconds between looks for a snapshot file another worker writes


class PgListStore:
    """The lists store of ``[state] backend = "postgresql"``; with ``snapshot_directory``,
    the full load's exact IMEIs are files there every worker of the host maps
    (``lists.shared_snapshot``, gateway/snapshot_files.py)."""

    def __init__(self, db: Database, snapshot_directory: Path | None = None) -> None:
        self.db = db
        self.snapshot_directory = snapshot_directory
        self._files: SnapshotFiles | None = None
        self.path = db.name  # what messages name, as ListStore.path
        self._watch: Future[None] | None = None
        self._listen_failed = False

    @property
    def location(self) -> str:
        return self.db.name

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self.db.close()

    def watch(self, wake: Callable[[], None]) -> bool:
        """LISTEN on a connection of its own: ``wake()`` (called on the pool's thread) at each
        NOTIFY, and after each (re)connection, since nothing sent meanwhile is replayed."""
        if self._watch is None:
            self._watch = self.db.submit(self._listen(wake))
        return True

    async def _listen(self, wake: Callable[[], None]) -> None:
        while True:
            closed = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.db.dsn, timeout=CONNECT_TIMEOUT)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                if not self._listen_failed:
                    log.warning("%s: LISTEN %s: %s; polling the version meanwhile",
                                self.db.name, CHANNEL, exc)
                self._listen_failed = True
                await asyncio.sleep(LISTEN_RETRY)
                continue
            try:
                conn.add_termination_listener(_setter(closed))
                await conn.add_listener(CHANNEL, lambda *_args: wake())
                if self._listen_failed:
                    log.info("%s: LISTEN %s again", self.db.name, CHANNEL)
                self._listen_failed = False
                wake()
                await closed.wait()
            finally:
                conn.terminate()
            await asyncio.sleep(LISTEN_RETRY)

    def version(self) -> int:
        return int(self.db.run(lambda c: c.fetchval("SELECT version FROM list_meta")))

    def changes(self, after: int) -> list[ListChange] | None:
        """The changes of the versions after ``after``, in order; None when only a full load
        can bring the snapshot up to date (too many, or pruned)."""
        return self.db.run(lambda c: _changes_after(c, after))

    def load(self) -> ListSnapshot:
        """Every entry, at one version (a repeatable-read transaction). With snapshot files, a
        colour whose file of this version is not written yet maps the newest older one, where
        the change log since brings it forward (a worker restarted after list changes then
        starts in a second, not in the minute a new 100-million file takes to write)."""

        async def read(conn: asyncpg.Connection, reuse: bool) -> ListSnapshot | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                version, instance = await conn.fetchrow("SELECT version, instance FROM list_meta")
                files = self._snapshot_files(instance)
                colours: dict[ListColour, _Colour] = {}
                since = version  # the oldest file version mapped
                for colour in ListColour:  # WHITE first: whitelist matches come first
                    imeis: Imeis
                    if files is None:
                        imeis = await _read_imeis(conn, colour)
                    else:
                        imeis, at = await _mapped_imeis(conn, files, version, colour, reuse)
                        since = min(since, at)
                    others = [_row_entry(tuple(r)) for r in
                              await conn.fetch(OTHERS_OF_COLOUR, colour.value)]
                    ranges = [e for e in others if e.kind is EntryKind.RANGE]
                    tacs = {e.first: e for e in others if e.kind is EntryKind.TAC}
                    pairs = {(e.first, e.imsi): e for e in others if e.kind is EntryKind.PAIR}
                    if imeis or ranges or tacs or pairs:
                        colours[colour] = _Colour(imeis, _Ranges(ranges), tacs, pairs)
                if since == version:
                    return ListSnapshot(version, colours)
                # Ranges, TACs and pairs are read at this version; the changes since the
                # oldest file are replayed on all of them: each key's last change wins, over
                # whichever file or table already holds it.
                changes = await _changes_after(conn, since)
                snapshot = None if changes is None else ListSnapshot(since, colours).apply(changes)
                if snapshot is None or snapshot.version != version:
                    return None  # a bulk write or a pruned log since: this version's files
                return snapshot

        async def with_connection() -> ListSnapshot:
            async with self.db.pool.acquire() as conn:
                snapshot = await read(conn, reuse=True)
                if snapshot is None:
                    snapshot = await read(conn, reuse=False)
                assert snapshot is not None  # without reuse, every colour is of this version
                return snapshot

        snapshot = self.db.call(with_connection())
        if self._files is not None:
            # Older versions' files that no worker maps any more (this process's previous
            # snapshot still maps its own until it is dropped: removed at a later load).
            self._files.remove_unmapped(below=snapshot.version)
        return snapshot

    def _snapshot_files(self, instance: str) -> SnapshotFiles | None:
        if self.snapshot_directory is None:
            return None
        if self._files is None or self._files.database != instance:
            self.snapshot_directory.mkdir(parents=True, exist_ok=True)
            self._files = SnapshotFiles(self.snapshot_directory, instance)
        return self._files

    # -- single entries --------------------------------------------------------------------

    @staticmethod
    async def _select(conn: asyncpg.Connection, entry: ListEntry) -> ListEntry | None:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM entries WHERE {_KEY_WHERE}", *_key(entry)
        )
        return None if row is None else _row_entry(tuple(row))

    def describe(self, match: ListMatch) -> ListEntry:
        found = self.get(match.entry)
        return match.entry if found is None else found

    def get(self, entry: ListEntry) -> ListEntry | None:
        return self.db.run(lambda c: self._select(c, entry))

    def put(
        self, entry: ListEntry, actor: str, *, create_only: bool = False,
        now: float | None = None,
    ) -> tuple[ListEntry | None, ListEntry]:
        ts = time.time() if now is None else now

        async def body(conn: asyncpg.Connection) -> tuple[ListEntry | None, ListEntry]:
            before = await self._select(conn, entry)
            if before is not None and create_only:
                raise EntryExists(f"{entry_target(entry)} exists")
            await conn.execute(_UPSERT, *_args(entry, ts, None))
            after = await self._select(conn, entry)
            assert after is not None
            await bump(conn, [("upsert", after)])
            await _append_audit(conn, ts, actor, "update" if before else "create",
                                entry_target(entry), entry_json(before), entry_json(after))
            return before, after

        return self.db.run(body)

    def delete(self, entry: ListEntry, actor: str, now: float | None = None) -> ListEntry | None:
        ts = time.time() if now is None else now

        async def body(conn: asyncpg.Connection) -> ListEntry | None:
            before = await self._select(conn, entry)
            if before is None:
                return None
            await conn.execute(f"DELETE FROM entries WHERE {_KEY_WHERE}", *_key(entry))
            await bump(conn, [("delete", before)])
            await _append_audit(conn, ts, actor, "delete", entry_target(entry),
                                entry_json(before), None)
            return before

        return self.db.run(body)

    # -- queries ---------------------------------------------------------------------------

    def page(
        self, colour: ListColour | None = None, kind: EntryKind | None = None,
        after: Key | None = None, limit: int = 100,
    ) -> list[ListEntry]:
        """Entries in key order after ``after`` (keyset pagination, as ListStore.page)."""
        args: list[object] = []
        where = _filters(colour, kind, args)
        if after is not None:
            args.extend(after)
            n = len(args)
            where.append(f"(kind, colour, first, last, imsi) > (${n - 4}, ${n - 3}, ${n - 2}, "
                         f"${n - 1}, ${n})")
        args.append(limit)
        sql = f"SELECT {_COLUMNS} FROM entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY kind, colour, first, last, imsi LIMIT ${len(args)}"
        rows = self.db.run(lambda c: c.fetch(sql, *args))
        return [_row_entry(tuple(r)) for r in rows]

    def entries(
        self, colour: ListColour | None = None, kind: EntryKind | None = None,
        limit: int | None = None,
    ) -> Iterator[ListEntry]:
        """Every entry in key order, read page by page (bounded memory)."""
        after: Key | None = None
        left = limit
        while left is None or left > 0:
            size = 10_000 if left is None else min(left, 10_000)
            page = self.page(colour, kind, after, size)
            yield from page
            if len(page) < size:
                return
            after = _key(page[-1])
            if left is not None:
                left -= len(page)

    def matching(self, body: int) -> list[ListEntry]:
        """Every stored entry an IMEI body matches: exact, pair (any IMSI), TAC and range."""
        sql = (
            f"SELECT {_COLUMNS} FROM entries WHERE kind IN ('imei', 'pair') AND first = $1 "
            f"UNION ALL SELECT {_COLUMNS} FROM entries WHERE kind = 'tac' AND first = $2 "
            f"UNION ALL SELECT {_COLUMNS} FROM entries WHERE kind = 'range' AND first <= $1 "
            "AND last >= $1"
        )
        rows = self.db.run(lambda c: c.fetch(sql, body, body // 1_000_000))
        return [_row_entry(tuple(r)) for r in rows]

    def audit(self, **filters: Any) -> list[audit.AuditRecord]:
        sql, args = audit.query_sql(lambda n: f"${n}", **filters)
        return audit.records(self.db.run(lambda c: c.fetch(sql, *args)))

    # -- bulk writes -----------------------------------------------------------------------

    def import_entries(
        self,
        rows: Iterable[tuple[int, ListEntry]],
        label: str,
        actor: str,
        progress: Progress | None = None,
        position: Callable[[], int] | None = None,
        chunk: int = 10_000,
    ) -> int:
        """Import (row number, entry) pairs, all or nothing, as manual entries (as
        ListStore.import_entries): COPY into a staging table chunk by chunk, a repeated
        entry named with both rows, one upsert, version bump and audit record."""
        staging = Staging(rows, time.time(), chunk, progress, position)
        with self.db.session() as session:
            session.call(lambda c: c.execute(_STAGING))

            def check_repeats() -> None:
                row = session.call(lambda c: c.fetchrow(_FIRST_REPEAT))
                if row is not None:
                    entry = _row_entry((row["colour"], row["kind"], row["first"], row["last"],
                                        row["imsi"], "", None, None))
                    raise ListError(f"{label}: {_repeat(row['row'], row['earlier'], entry)}")

            try:
                for pending in staging.chunks():
                    session.call(_copy_staging(pending))
            except ListError:
                check_repeats()  # a repeat of an earlier row is the earlier problem
                raise
            check_repeats()
            n = staging.count
            if n:

                async def write(conn: asyncpg.Connection) -> None:
                    for statement in _MERGE_STAGING:
                        await conn.execute(statement)
                    changes: list[Change] = [("reload", None)]
                    if n <= DELTA_LIMIT:
                        changes = [("upsert", _row_entry(tuple(r))) for r in await conn.fetch(
                            f"SELECT {_COLUMNS} FROM entries e WHERE EXISTS (SELECT 1 FROM "
                            "staging s WHERE (s.kind, s.colour, s.first, s.last, s.imsi) = "
                            "(e.kind, e.colour, e.first, e.last, e.imsi))")]
                    await bump(conn, changes)
                    await _append_audit(conn, staging.ts, actor, "import", f"import:{label}",
                                        None, staging.summary(label))

                session.call(write)
        if progress is not None:
            progress.finish()
        return n

    def bulk_add_imeis(
        self, colour: ListColour, bodies: Iterable[int], reason: str = "",
        now: float | None = None, chunk: int = 100_000,
    ) -> int:
        """Upsert many exact IMEIs of one colour with COPY, in one transaction (no per-entry
        objects: for lists of a hundred million)."""
        ts = time.time() if now is None else now
        c = colour.value
        n = 0
        with self.db.session() as session:
            session.call(lambda conn: conn.execute(
                "CREATE TEMP TABLE bulk_imeis (first BIGINT NOT NULL) ON COMMIT DROP"))
            batch: list[tuple[int]] = []

            def copy() -> None:
                records = list(batch)
                batch.clear()
                session.call(lambda conn: conn.copy_records_to_table("bulk_imeis",
                                                                     records=records))

            for body in bodies:
                batch.append((body,))
                n += 1
                if len(batch) >= chunk:
                    copy()
            copy()

            async def write(conn: asyncpg.Connection) -> None:
                await conn.execute(_MERGE_IMEIS[0])
                for statement in _MERGE_IMEIS[1:]:
                    await conn.execute(statement, c, reason, ts)
                await bump(conn, [("reload", None)])

            session.call(write)
        return n

    def import_files(self, paths: Iterable[str | Path]) -> dict[Path, int]:
        """The configured ``lists.import_files`` whose mtime or size changed, as
        ListStore.import_files: each authoritative for the entries it brought, one transaction
        and one version bump, audited."""
        stamps = dict(self.db.run(lambda c: c.fetch("SELECT path, stamp FROM import_stamps")))
        plan = ImportFiles(paths, lambda path: stamps.get(str(path)))
        if not plan.changed:
            return {}
        parsed = plan.parsed
        ts = time.time()

        async def write(conn: asyncpg.Connection) -> None:
            changes: list[Change] = []
            for path, stamp in plan.changed:
                source = str(path)
                await conn.executemany(_UPSERT, [_args(e, ts, source) for e in parsed[path]])
                changes.extend(("upsert", e) for e in parsed[path])
                owned = await conn.fetch(
                    "SELECT kind, colour, first, last, imsi FROM entries WHERE source = $1",
                    source,
                )
                mine = plan.listed_in(path)
                removed = 0
                for record in owned:
                    key: Key = (record[0], record[1], record[2], record[3], record[4])
                    if key in mine:
                        continue
                    owner = plan.owner(path, key)
                    if owner is None:
                        gone = await conn.fetchrow(
                            f"DELETE FROM entries WHERE {_KEY_WHERE} RETURNING {_COLUMNS}", *key
                        )
                        changes.append(("delete", _row_entry(tuple(gone))))
                        removed += 1
                    else:
                        await conn.execute(
                            f"UPDATE entries SET source = $6 WHERE {_KEY_WHERE}", *key, str(owner)
                        )
                await conn.execute(
                    "INSERT INTO import_stamps VALUES ($1, $2) ON CONFLICT (path) DO UPDATE "
                    "SET stamp = excluded.stamp", str(path), stamp,
                )
                await _append_audit(conn, ts, IMPORT_FILES_ACTOR, "import", f"import:{path}",
                                    None, {"file": source, "entries": len(parsed[path]),
                                           "removed": removed})
            # The entries as stored (created keeps the earlier time), for the snapshots.
            await bump(conn, [(op, e if op == "delete" else e and _stored(e, ts))
                              for op, e in changes])

        self.db.run(write)
        return plan.counts()


def _copy_staging(rows: list[tuple[Any, ...]]) -> Callable[[asyncpg.Connection], Any]:
    return lambda conn: conn.copy_records_to_table("staging", records=rows,
                                                   columns=_STAGING_COLUMNS)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()


def _stored(entry: ListEntry, ts: float) -> ListEntry:
    """An entry written at ``ts`` as a snapshot holds it (only the fields it uses matter)."""
    return ListEntry(entry.colour, entry.kind, entry.first, entry.last, entry.imsi,
                     entry.reason or "", entry.created if entry.created is not None else ts,
                     entry.updated if entry.updated is not None else ts)
