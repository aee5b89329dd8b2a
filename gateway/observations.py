"""IMEI-IMSI observation log and clone detection.

* :class:`ObservationLog`: first seen, last seen and count per (IMEI, IMSI), aggregated in memory
  and written to SQLite (var/observations.sqlite) in batches by a background thread that never
  holds the GIL for long and yields the CPU to the event loop. ``record`` is O(1), never blocks
  and never raises: past ``queue_size`` pairs waiting to be written it drops and counts the
  drop.
* :func:`mask_imsi`: the only form in which an IMSI may appear in a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

log = logging.getLogger("eir.shared")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS observations (
    imei TEXT NOT NULL,
    imsi TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (imei, imsi)
) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO observations (imei, imsi, first_seen, last_seen, count) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (imei, imsi) DO UPDATE SET
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen),
    count = count + excluded.count
"""


def mask_imsi(imsi: str | None) -> str:
    """Keep MCC + MNC (TS 23.003 §2.2), mask the MSIN: ``001010123456789`` -> ``00101**********``.

    The MNC is taken as 3 digits for MCCs 3xx (North America and Caribbean use 3-digit MNCs,
    ITU-T E.212) and 2 digits elsewhere; at worst one MNC digit is masked, never an MSIN digit
    shown.
    """
    if not imsi:
        return ""
    keep = 6 if imsi[0] == "3" else 5
    keep = min(keep, max(len(imsi) - 1, 0))
    return imsi[:keep] + "*" * (len(imsi) - keep)


@dataclass(slots=True)
class ObservationStats:
    recorded: int = 0
    dropped: int = 0
    written: int = 0  # observations persisted (before aggregation)
    batches: int = 0
    errors: int = 0
    writer_restarts: int = 0  # writer processes that died and were started again


# (IMEI, IMSI) -> (first seen, last seen, count). A tuple of numbers, replaced on each sighting:
# the garbage collector stops tracking it at its first young collection, where a list would be
# walked by every collection until written.
Aggregate = dict[tuple[str, str], tuple[float, float, int]]

# Most aggregates merged into one transaction when the writer fell behind: an upsert of random
# (IMEI, IMSI) keys dirties about one B-tree page per pair, shared by the pairs of a transaction
# that fall on it, so a backlog is written for less per pair.
MERGE_AGGREGATES = 16
# Seconds close() waits for the writer thread when not told: a store that stopped answering
# (a PostgreSQL connection hung without a reset) must not hold the process's exit forever.
CLOSE_TIMEOUT = 30.0


def yield_cpu_to_event_loop() -> None:
    """Lowest CPU priority for the calling thread (Linux: niceness is per thread), so a core
    shared with the event loop runs the loop first; elsewhere, or when refused, nothing."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


# The last IMSI an IMEI was seen with, and when; None when never seen.
LastImsi = tuple[str, float] | None
LastImsiReply = Callable[[LastImsi, bool], None]  # (what was found, whether the lookup failed)


@dataclass(slots=True)
class _LastImsiLookup:
    imei: str
    before: float
    reply: LastImsiReply


# What the writer's queue carries: aggregates to write and lookups to answer, in order.
_Item = TypeVar("_Item", Aggregate, _LastImsiLookup)

_LAST_IMSI = (
    "SELECT imsi, last_seen FROM observations WHERE imei = ? AND last_seen < ? "
    "ORDER BY last_seen DESC LIMIT 1"
)


class ObservationLog:
    """Aggregated in memory on the event loop, written by a background thread.

    ``record`` (event loop thread) folds an observation into the pending aggregate, one dict
    entry per (IMEI, IMSI) pair: O(1), never blocks, never raises. At ``batch_size`` pending
    pairs, or every ``flush_interval`` seconds, the aggregate is handed to the writer as a whole
    (one reference swap) and a new one started. The writer thread turns it into SQLite upserts
    through ``executemany`` over a generator: SQLite releases the GIL inside every row's step
    and only one row's Python runs between two releases, so the writer never holds the GIL (and
    with it the event loop) for more than a few microseconds. It runs at the lowest CPU
    priority: on a core shared with the event loop, its SQLite work (tens of ms a batch,
    measured to delay the loop by as much when it had the same priority) waits for the loop to
    be idle. Aggregates that waited meanwhile are written in one transaction. Pairs waiting to
    be written (in the aggregate or handed over) are bounded by ``queue_size``; a new pair past
    it is dropped and counted, an already pending pair is still counted in.
    ``start()`` once, ``close()`` at shutdown.
    """

    def __init__(
        self,
        database: str | Path,
        queue_size: int = 100_000,
        batch_size: int = 1_000,
        flush_interval: float = 1.0,
    ) -> None:
        self.path = Path(database)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.stats = ObservationStats()
        self._pending: Aggregate = {}
        self._handed: queue.SimpleQueue[Aggregate | _LastImsiLookup] = queue.SimpleQueue()
        self._handed_pairs = 0  # written by the recording thread only
        self._written_pairs = 0  # written by the writer only
        self._stop = False
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: SqliteObservations | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)  # a batch refused: counted

    # -- the store: SQLite here; gateway.pg.observations overrides these hooks ---------------

    def _open(self) -> None:
        self._conn = SqliteObservations(self.path)

    @property
    def _is_open(self) -> bool:
        return self._conn is not None

    def _upsert(self, batches: list[Aggregate]) -> None:
        """Write aggregates in one transaction; raises one of :attr:`STORE_ERRORS`."""
        assert self._conn is not None
        self._conn.upsert(
            (imei, imsi, agg[0], agg[1], agg[2])
            for batch in batches for (imei, imsi), agg in batch.items()
        )

    def _last_seen_with(self, imei: str, before: float) -> LastImsi:
        """The IMSI the IMEI was last seen with before ``before``; raises STORE_ERRORS."""
        if self._conn is None:
            raise sqlite3.ProgrammingError("closed")
        return self._conn.last_seen_with(imei, before)

    def _close_store(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the store and start the writer. ``loop``: the loop that records (default: the
        running one), when this is called from another thread (opening may block)."""
        self._open()
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        # The aggregate belongs to the loop's thread: the writer asks it for a hand-over.
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="observation-log", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Pairs recorded and not written yet."""
        return len(self._pending) + self._handed_pairs - self._written_pairs

    def record(self, imei: str, imsi: str, now: float | None = None) -> bool:
        """Count one observation of the 14-digit IMEI body with an IMSI; False when dropped."""
        ts = time.time() if now is None else now
        pending = self._pending
        key = (imei, imsi)
        agg = pending.get(key)
        if agg is None:
            # self.waiting, inline: this runs for every check with an IMSI.
            if len(pending) + self._handed_pairs - self._written_pairs >= self.queue_size:
                self.stats.dropped += 1
                return False
            pending[key] = (ts, ts, 1)
            if len(pending) >= self.batch_size:
                self._hand_over()
        else:
            first, last, count = agg
            pending[key] = (
                ts if ts < first else first,
                ts if ts > last else last,
                count + 1,
            )
        self.stats.recorded += 1
        return True

    def _hand_over(self) -> None:
        """Give the pending aggregate to the writer (from the recording thread)."""
        batch = self._pending
        if batch:
            self._pending = {}
            self._handed_pairs += len(batch)
            self._handed.put(batch)

    def last_imsi(self, imei: str, before: float, reply: LastImsiReply) -> None:
        """Ask (from the recording thread, never blocking) which IMSI the IMEI body was last
        seen with before ``before``, among the observations handed to the writer so far;
        ``reply`` is called later on the event loop (at once when there is none). The writer
        answers in order with its writes, several lookups in a row together."""
        if not self._is_open or self._stop:
            reply(None, True)
            return
        self._handed.put(_LastImsiLookup(imei, before, reply))

    def _run(self) -> None:
        yield_cpu_to_event_loop()
        held: Aggregate | _LastImsiLookup | None = None  # taken while gathering the other kind
        while not self._stop:
            if held is not None:
                item: Aggregate | _LastImsiLookup = held
                held = None
            else:
                try:
                    item = self._handed.get(timeout=self.flush_interval)
                except queue.Empty:
                    loop = self._loop
                    if self._pending and loop is not None and not loop.is_closed():
                        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                            loop.call_soon_threadsafe(self._hand_over)
                    continue
            if isinstance(item, dict):
                batches, held = self._gather(item, MERGE_AGGREGATES)
                self._write(batches)
            else:
                lookups, held = self._gather(item, 1_000)
                self._answer(lookups)
        if held is not None:
            if isinstance(held, dict):
                self._write([held])
            else:
                self._answer([held])
        # Stopping: what close() handed over is written here, not by close()'s caller, so a
        # store that stopped answering holds close() no longer than its timeout.
        self._write_handed()

    def _gather(
        self, first: _Item, limit: int
    ) -> tuple[list[_Item], Aggregate | _LastImsiLookup | None]:
        """``first`` and the items of its kind (aggregates, lookups) queued after it, at most
        ``limit`` in all; and the first item of the other kind met, taken meanwhile."""
        run = [first]
        while len(run) < limit:
            try:
                more = self._handed.get_nowait()
            except queue.Empty:
                return run, None
            if isinstance(more, dict) is not isinstance(first, dict):
                return run, more
            run.append(cast(_Item, more))
        return run, None

    def _answer(self, lookups: list[_LastImsiLookup]) -> None:
        """Run lookups (writer thread: one indexed read each, SQLite releasing the GIL) and
        call their replies on the loop in one callback."""
        answers: list[tuple[LastImsiReply, LastImsi, bool]] = []
        with self._write_lock:
            for lookup in lookups:
                try:
                    found = self._last_seen_with(lookup.imei, lookup.before)
                except self.STORE_ERRORS:
                    answers.append((lookup.reply, None, True))
                else:
                    answers.append((lookup.reply, found, False))

        def deliver() -> None:
            for reply, found, failed in answers:
                reply(found, failed)

        loop = self._loop
        if loop is None:
            deliver()
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(deliver)

    def _write(self, batches: list[Aggregate]) -> int:
        """Upsert aggregates in one transaction; the number of observations they held (0 when
        refused)."""
        with self._write_lock:
            if not self._is_open:
                return 0
            observations = 0
            try:
                self._upsert(batches)
                observations = sum(agg[2] for batch in batches for agg in batch.values())
            except self.STORE_ERRORS:
                self.stats.errors += 1
            else:
                self.stats.written += observations
                self.stats.batches += 1
            self._written_pairs += sum(len(batch) for batch in batches)
            return observations

    def flush(self) -> int:
        """Write everything recorded so far; blocking, from the recording thread (or once
        nothing records any more). Returns how many observations were written."""
        self._hand_over()
        return self._write_handed()

    def _write_handed(self) -> int:
        """Write (and answer) what was handed over and not taken yet."""
        written = 0
        while True:
            try:
                batch = self._handed.get_nowait()
            except queue.Empty:
                return written
            if isinstance(batch, dict):
                written += self._write([batch])
            else:
                self._answer([batch])

    def close(self, timeout: float | None = None) -> None:
        """Stop the writer, write what is pending, close the database (``timeout``: how long
        the caller can wait for the writer thread, :data:`CLOSE_TIMEOUT` when None). A writer
        still busy then (a store that stopped answering) is left to end with the process, the
        store open under it: what it has not written is lost, and said so."""
        if self._thread is not None:
            self._hand_over()  # the writer thread writes it, within the timeout below
        self._stop = True
        if self._thread is not None:
            self._handed.put({})  # wakes the writer
            self._thread.join(CLOSE_TIMEOUT if timeout is None else timeout)
            if self._thread.is_alive():
                log.error("observation writer thread still busy at close: %d pairs may not be "
                          "written", self.waiting)
                return
            self._thread = None
        self.flush()
        with self._write_lock:
            self._close_store()

    def lookup(self, imei: str) -> list[tuple[str, float, float, int]]:
        """(imsi, first_seen, last_seen, count) rows stored for an IMEI body."""
        with self._write_lock:
            return [] if self._conn is None else self._conn.history(imei)


class SqliteObservations:
    """The observation log's SQLite file, through one connection: upserts in one transaction
    and the reads of the log (the writer thread's and the writer process's store)."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)  # what a refused call raises

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        if read_only:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of the process, only a power loss may take
        # the last transactions; no fsync per batch.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def upsert(self, rows: Iterable[tuple[str, str, float, float, int]]) -> None:
        """(IMEI, IMSI, first seen, last seen, count) rows folded in, one transaction; raises
        sqlite3.Error (and nothing is written)."""
        with self._conn:
            self._conn.executemany(_UPSERT, rows)

    def last_seen_with(self, imei: str, before: float) -> LastImsi:
        """The IMSI the IMEI was last seen with before ``before``, and when."""
        row = self._conn.execute(_LAST_IMSI, (imei, before)).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def history(self, imei: str) -> list[tuple[str, float, float, int]]:
        """(imsi, first_seen, last_seen, count) of an IMEI body, oldest first."""
        rows = self._conn.execute(
            "SELECT imsi, first_seen, last_seen, count FROM observations WHERE imei = ? "
            "ORDER BY first_seen",
            (imei,),
        ).fetchall()
        return [(str(a), float(b), float(c), int(d)) for a, b, c, d in rows]

    def close(self) -> None:
        self._conn.close()


def history(database: str | Path, imei: str) -> list[tuple[str, float, float, int]]:
    """(imsi, first_seen, last_seen, count) of an IMEI body in the log, oldest first, read
    through a read-only connection of its own (the log as last written; blocking)."""
    path = Path(database)
    if not path.exists():
        return []
    store = SqliteObservations(path, read_only=True)
    try:
        return store.history(imei)
    finally:
        store.close()
