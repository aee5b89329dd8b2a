"""The IMEI-IMSI observation log in PostgreSQL: :class:`gateway.observations.ObservationLog`'s
aggregation on the event loop and writer thread, with the batches upserted into the
``observations`` table (one transaction, one pipelined prepared statement per batch); and the
reads that the SQLite log's file serves (history of an IMEI, the clone tracker's seed)."""

from __future__ import annotations

from gateway.clone_tracker import CloneTracker
from gateway.observations import Aggregate, LastImsi, ObservationLog
from gateway.pg.database import Database, StateError

_UPSERT = """
INSERT INTO observations (imei, imsi, first_seen, last_seen, count) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (imei, imsi) DO UPDATE SET
    first_seen = LEAST(observations.first_seen, excluded.first_seen),
    last_seen = GREATEST(observations.last_seen, excluded.last_seen),
    count = observations.count + excluded.count
"""
_HISTORY = ("SELECT imsi, first_seen, last_seen, count FROM observations WHERE imei = $1 "
            "ORDER BY first_seen")

_LAST_IMSI = ("SELECT imsi, last_seen FROM observations WHERE imei = $1 AND last_seen < $2 "
              "ORDER BY last_seen DESC LIMIT 1")

History = list[tuple[str, float, float, int]]


class PgObservationLog(ObservationLog):
    """``ObservationLog`` writing to PostgreSQL (``dsn``) instead of an SQLite file."""

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
        rows = [(imei, imsi, agg[0], agg[1], agg[2])
                for batch in batches for (imei, imsi), agg in batch.items()]
        self._db.run(lambda conn: conn.executemany(_UPSERT, rows))

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
