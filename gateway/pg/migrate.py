"""Copy an SQLite state (the lists, TAC and observation databases of ``state.directory``) into
an empty PostgreSQL database, in one transaction: entries with their history and source, the
import files' stamps, the audit log (sequence numbers kept), the lists version, TAC records and
sources, observations. Rows stream in chunks through COPY; nothing is held whole in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from gateway.pg.database import Database, Session, StateError

CHUNK = 50_000

# (SQLite database key, SQLite query, PostgreSQL table, its columns)
_TABLES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("lists", "SELECT colour, kind, first, last, imsi, reason, created, updated, source "
     "FROM entries", "entries",
     ("colour", "kind", "first", "last", "imsi", "reason", "created", "updated", "source")),
    ("lists", "SELECT substr(key, 8), value FROM meta WHERE key LIKE 'import:%'",
     "import_stamps", ("path", "stamp")),
    ("lists", "SELECT seq, at, actor, action, target, before, after FROM audit ORDER BY seq",
     "audit", ("seq", "at", "actor", "action", "target", "before", "after")),
    ("tac", "SELECT tac, manufacturer, model FROM tac", "tac", ("tac", "manufacturer", "model")),
    ("tac", "SELECT substr(key, 8), value FROM meta WHERE key LIKE 'source:%'", "tac_sources",
     ("path", "stamp")),
    ("observations", "SELECT imei, imsi, first_seen, last_seen, count FROM observations",
     "observations", ("imei", "imsi", "first_seen", "last_seen", "count")),
)


class MigrationError(Exception):
    """The target is not empty, a source cannot be read, or a row of it cannot be copied
    (named: file, table, rows); nothing was written."""


@dataclass(slots=True)
class MigrationReport:
    rows: dict[str, int] = field(default_factory=dict)  # PostgreSQL table -> rows copied
    lists_version: int = 0
    skipped: list[str] = field(default_factory=list)  # SQLite databases that do not exist


def migrate(
    db: Database, sources: dict[str, Path], progress: Callable[[str, int], None] | None = None
) -> MigrationReport:
    """Copy the SQLite databases ``sources`` (``lists``, ``tac``, ``observations`` -> file)
    into ``db``, whose tables must be empty."""
    report = MigrationReport()
    with db.session() as session:
        for table in ("entries", "audit", "tac", "observations"):
            count = session.call(_count(table))
            if count:
                raise MigrationError(
                    f"{db.name}: table {table} already holds {count} rows; migrate into an "
                    "empty database")
        for key, query, table, columns in _TABLES:
            path = sources.get(key)
            if path is None or not path.exists():
                if path is not None and str(path) not in report.skipped:
                    report.skipped.append(str(path))
                continue
            n = 0
            for chunk in _read(path, query, table):
                try:
                    session.call(_copy(table, columns, chunk))
                except (TypeError, ValueError, OverflowError, StateError) as exc:
                    # A value COPY cannot take (SQLite's column types are affinities: text
                    # in a REAL column; a NUL in text): which file, table and rows.
                    raise MigrationError(f"{path}: table {table}, rows {n + 1}-"
                                         f"{n + len(chunk)}: {exc}") from exc
                n += len(chunk)
                if progress is not None:
                    progress(table, n)
            report.rows[table] = n
        if "lists" in sources and sources["lists"].exists():
            report.lists_version = _lists_version(sources["lists"])
            _finish_lists(session, report.lists_version)
    return report


def _count(table: str) -> Callable[[asyncpg.Connection], Awaitable[int]]:
    async def count(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))

    return count


def _copy(
    table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> Callable[[asyncpg.Connection], Awaitable[object]]:
    async def copy(conn: asyncpg.Connection) -> object:
        return await conn.copy_records_to_table(table, records=rows, columns=list(columns))

    return copy


def _finish_lists(session: Session, version: int) -> None:
    """The lists version carried over (a gateway that served it still matches), announced
    as one reload; the audit sequence continued after the copied records."""

    async def finish(conn: asyncpg.Connection) -> None:
        await conn.execute("UPDATE list_meta SET version = $1", version)
        await conn.execute("INSERT INTO list_changes (version, seq, op) VALUES ($1, 0, 'reload')",
                           version)
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('audit', 'seq'), "
            "GREATEST((SELECT max(seq) FROM audit), 1), (SELECT max(seq) FROM audit) IS NOT NULL)"
        )

    session.call(finish)


def _lists_version(path: Path) -> int:
    conn = _open(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    except sqlite3.Error as exc:
        raise MigrationError(f"{path}: {exc}") from exc
    finally:
        conn.close()
    try:
        return int(row[0]) if row else 0
    except (TypeError, ValueError):  # a hand-edited file
        raise MigrationError(f"{path}: the lists version {row[0]!r} is not an integer") from None


def _open(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise MigrationError(f"{path}: {exc}") from exc


def _read(path: Path, query: str, table: str) -> Iterator[list[tuple[Any, ...]]]:
    conn = _open(path)
    try:
        try:
            cur = conn.execute(query)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return  # a database made before that table existed
            raise MigrationError(f"{path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise MigrationError(f"{path}: {exc}") from exc
        n = 0
        while True:
            try:
                chunk = cur.fetchmany(CHUNK)
            except sqlite3.Error as exc:  # text that is not UTF-8, a damaged page
                raise MigrationError(f"{path}: table {table}, rows {n + 1}-{n + CHUNK}: "
                                     f"{exc}") from exc
            if not chunk:
                return
            n += len(chunk)
            yield chunk
    finally:
        conn.close()
