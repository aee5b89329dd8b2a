"""The IMEI-IMSI observation log in PostgreSQL, written by the writer process
(:class:`PgObservations`, the store gateway.observation_writer opens for a DSN; spawned by
:class:`PgObservationProcessLog`) or by a thread of the gateway (:class:`PgObservationLog`,
``observations.writer = "thread"``); and the reads that the SQLite log's file serves (history
of an IMEI, the clone tracker's seed).

A batch is one statement, :data:`_UPSERT`: the rows go as five arrays (one parameter each, in
asyncpg's binary format) and PostgreSQL unnests them, where a row per ``executemany`` step
cost PostgreSQL a Bind/Execute round of its own (bench/pg_observations.py). ON CONFLICT cannot
touch a row twice in one statement, so rows of one key are merged first (:func:`merged`). An
IMSI's NUL (User-Name is any UTF-8) is stored as U+FFFD: PostgreSQL's text holds no NUL.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gateway.clone_tracker import CloneTracker
from gateway.observation_process import ObservationProcessLog
from gateway.observations import Aggregate, LastImsi, ObservationLog
from gateway.pg.database import Database, StateError

_UPSERT = """
INSERT INTO observations AS o (imei, imsi, first_seen, last_seen, count)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::bigint[])
ON CONFLICT (imei, imsi) DO UPDATE SET
    first_seen = LEAST(o.first_seen, excluded.first_seen),
    last_seen = GREATEST(o.last_seen, excluded.last_seen),
    count = o.count + excluded.count
"""
_HISTORY = ("SELECT imsi, first_seen, last_seen, count FROM observations WHERE imei = $1 "
            "ORDER BY first_seen")

_LAST_IMSI = ("SELECT imsi, last_seen FROM observations WHERE imei = $1 AND last_seen < $2 "
              "ORDER BY last_seen DESC LIMIT 1")

History = list[tuple[str, float, float, int]]
PairRow = tuple[str, str, float, float, int]  # IMEI, IMSI, first seen, last seen, count

# What a NUL in an IMSI is stored as (the Unicode replacement character).
NUL_STORED = "\ufffd"

# The writer process reads the DSN from here, not from its command line (which ps shows to
# every user; a process's environment only to its owner).
DSN_VARIABLE = "EIR_OBSERVATIONS_DSN"


def merged(rows: Iterable[PairRow]) -> tuple[list[str], list[str], list[float], list[float],
                                            list[int]]:
    """:data:`_UPSERT`'s five columns: one row per (IMEI, IMSI), rows of one key folded as the
    upsert folds a row into the table (earliest first seen, latest last seen, counts summed)."""
    folded: dict[tuple[str, str], tuple[float, float, int]] = {}
    for imei, imsi, first, last, count in rows:
        if "\x00" in imsi:  # User-Name may hold one; PostgreSQL's text cannot (NUL_STORED)
            imsi = imsi.replace("\x00", NUL_STORED)
        key = (imei, imsi)
        had = folded.get(key)
        if had is not None:
            first, last, count = min(first, had[0]), max(last, had[1]), count + had[2]
        folded[key] = (first, last, count)
    columns: tuple[list[str], list[str], list[float], list[float], list[int]] = (
        [], [], [], [], [])
    imeis, imsis, firsts, lasts, counts = columns
    for (imei, imsi), (first, last, count) in folded.items():
        imeis.append(imei)
        imsis.append(imsi)
        firsts.append(first)
        lasts.append(last)
        counts.append(count)
    return columns


def upsert(db: Database, rows: Iterable[PairRow]) -> None:
    """Fold rows into the table, one statement in one transaction; raises StateError."""
    columns = merged(rows)
    if columns[0]:
        db.run(lambda conn: conn.execute(_UPSERT, *columns))


class PgObservations:
    """The observation log's table as the writer process's store (gateway.observation_writer):
    the interface of :class:`gateway.observations.SqliteObservations`."""

    errors: tuple[type[Exception], ...] = (StateError,)

    def __init__(self, dsn: str) -> None:
        self._db = Database(dsn, max_connections=1)

    def upsert(self, rows: Iterable[PairRow]) -> None:
        upsert(self._db, rows)

    def last_seen_with(self, imei: str, before: float) -> LastImsi:
        row = self._db.run(lambda conn: conn.fetchrow(_LAST_IMSI, imei, before))
        return None if row is None else (str(row[0]), float(row[1]))

    def history(self, imei: str) -> History:
        return history(self._db, imei)

    def close(self) -> None:
        self._db.close()


class PgObservationProcessLog(ObservationProcessLog):
    """:class:`ObservationProcessLog` whose writer process writes to PostgreSQL (``dsn``)."""

    def __init__(self, dsn: str, queue_size: int = 100_000, batch_size: int = 1_000,
                 flush_interval: float = 1.0) -> None:
        super().__init__(Path("postgresql"), queue_size, batch_size, flush_interval)
        self.dsn = dsn

    def _writer_store(self) -> tuple[list[str], dict[str, str]]:
        return ["--postgresql"], {DSN_VARIABLE: self.dsn}

    def lookup(self, imei: str) -> History:
        """(imsi, first_seen, last_seen, count) rows written for an IMEI body (a connection of
        its own; blocking)."""
        db = Database(self.dsn, max_connections=1)
        try:
            return history(db, imei)
        finally:
            db.close()


def open_store(argv: list[str]) -> PgObservations:
    """The writer process's store for ``--postgresql`` (the DSN in :data:`DSN_VARIABLE`)."""
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        raise StateError(f"{DSN_VARIABLE} is not set")
    return PgObservations(dsn)


class PgObservationLog(ObservationLog):
    """``ObservationLog`` writing to PostgreSQL (``dsn``) from a thread of the gateway
    (``observations.writer = "thread"``)."""

    STORE_ERRORS = (StateError,)

    def __init__(self, dsn: str, queue_size: int = 100_000, batch_size: int = 1_000,
                 flush_interval: float = 1.0) -> None:
        super().__init__("postgresql", queue_size, batch_size, flush_interval)
        self.dsn = dsn
        self._db: Database | None = None

    def _open(self) -> None:
        self._db = Database(self.dsn, max_connections=2)

    @property
    def _is_open(self) -> bool:
        return self._db is not None

    def _upsert(self, batches: list[Aggregate]) -> None:
        assert self._db is not None
        upsert(self._db, ((imei, imsi, agg[0], agg[1], agg[2])
                          for batch in batches for (imei, imsi), agg in batch.items()))

    def _last_seen_with(self, imei: str, before: float) -> LastImsi:
        if self._db is None:
            raise StateError("the observation log is closed")
        row = self._db.run(lambda conn: conn.fetchrow(_LAST_IMSI, imei, before))
        return None if row is None else (str(row[0]), float(row[1]))

    def _close_store(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def lookup(self, imei: str) -> History:
        with self._write_lock:
            if self._db is None:
                return []
            return _rows(self._db.run(lambda conn: conn.fetch(_HISTORY, imei)))


def history(db: Database, imei: str) -> History:
    """(imsi, first_seen, last_seen, count) of an IMEI body, oldest first."""
    return _rows(db.run(lambda conn: conn.fetch(_HISTORY, imei)))


def seed(tracker: CloneTracker, db: Database, now: float) -> int:
    """:meth:`CloneTracker.seed` from PostgreSQL: the pairs last seen within the window,
    the newest ``max_imeis x (threshold + 1)``, replayed oldest first."""
    limit = tracker.max_imeis * (tracker.threshold + 1)
    rows = db.run(lambda conn: conn.fetch(
        "SELECT imei, imsi, last_seen FROM observations WHERE last_seen >= $1 "
        "ORDER BY last_seen DESC LIMIT $2", now - tracker.window, limit))
    for imei, imsi, seen in reversed(rows):
        tracker.observe(imei, imsi, seen)
    return len(rows)


def _rows(records: list) -> History:
    return [(str(a), float(b), float(c), int(d)) for a, b, c, d in records]
