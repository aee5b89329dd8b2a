"""The TAC database in PostgreSQL: the file parsed as gateway.tac parses it, written with COPY
into a staging table and upserted (or replacing every TAC) in one transaction; loaded into the
same in-memory :class:`gateway.tac.TacDatabase`."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import asyncpg

from gateway.imei import is_decimal
from gateway.pg.database import Database
from gateway.tac import (
    ImportSummary,
    TacDatabase,
    TacImportError,
    TacInfo,
    file_stamp,
    parse_tac_file,
)


def import_tac_file(
    db: Database,
    path: str | Path,
    skip_bad: bool = False,
    replace: bool = False,
    progress: TextIO | None = None,
) -> ImportSummary:
    """As :func:`gateway.tac.import_tac_file`, into PostgreSQL."""
    records, summary = parse_tac_file(path, skip_bad, progress)
    if replace and not records:
        # An empty or all-bad file (e.g. a truncated download) must not wipe the table.
        raise TacImportError(
            f"{path}: no valid rows ({summary.lines} rows read, {len(summary.bad)} bad); "
            "refusing to replace the TAC database with nothing"
        )
    rows = [(t, m, n) for t, (m, n) in records.items()]
    stamp = file_stamp(path)

    async def write(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "CREATE TEMP TABLE tac_staging (tac INTEGER, manufacturer TEXT, model TEXT) "
            "ON COMMIT DROP"
        )
        await conn.copy_records_to_table("tac_staging", records=rows)
        if replace:
            await conn.execute("DELETE FROM tac")
        await conn.execute(
            "INSERT INTO tac SELECT tac, manufacturer, model FROM tac_staging ON CONFLICT (tac) "
            "DO UPDATE SET manufacturer = excluded.manufacturer, model = excluded.model"
        )
        await conn.execute(
            "INSERT INTO tac_sources VALUES ($1, $2) ON CONFLICT (path) DO UPDATE "
            "SET stamp = excluded.stamp", str(path), stamp,
        )

    db.run(write)
    return summary


def import_if_changed(db: Database, source: str | Path) -> bool:
    """Import ``source`` (strict) when its mtime or size changed since its last import."""
    stored = db.run(lambda conn: conn.fetchval(
        "SELECT stamp FROM tac_sources WHERE path = $1", str(source)))
    if stored == file_stamp(source):
        return False
    import_tac_file(db, source)
    return True


def load(db: Database) -> TacDatabase:
    rows = db.run(lambda conn: conn.fetch("SELECT tac, manufacturer, model FROM tac"))
    return TacDatabase.from_records({r[0]: (r[1], r[2]) for r in rows})


def lookup(db: Database, tac: str) -> TacInfo | None:
    """One TAC's record (8 digits), read alone: ``tac show`` needs no whole table."""
    if len(tac) != 8 or not is_decimal(tac):
        return None
    row = db.run(lambda conn: conn.fetchrow(
        "SELECT manufacturer, model FROM tac WHERE tac = $1", int(tac)))
    return None if row is None else TacInfo(tac, row[0], row[1])
