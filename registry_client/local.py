"""Embedded registry backed by SQLite: the default backend and what the reference server serves.

Stored: TAC declarations (tac, manufacturer, participating, serial ranges, updated) and reports
(imei, type, country, since, withdrawn). Every write that changes a record stamps it with the next
value of a monotonic change sequence; ``GET /v1/changes`` is "records whose stamp is above the
cursor, in stamp order", so a follower always converges on the latest state of every record.

Verdicts (registry-api.yaml ``Verdict.status``): ``manufactured`` when the IMEI is inside a
declared range; ``not_manufactured`` when the TAC owner participates and the IMEI is outside every
range; ``unknown`` when the TAC is not declared or its owner does not participate. Reports on the
IMEI (withdrawn ones too, flagged) are attached to every verdict.

Import file formats (``import_files``; all files of one call go in one transaction, so a bad
record leaves the database exactly as it was):

JSON — either an object ``{"tacs": [TacDeclaration...], "reports": [Report...]}`` or a list of
records each carrying ``"kind": "tac" | "report"`` (the ``/v1/changes`` item form)::

    {"tacs": [{"tac": "35209900", "manufacturer": "Acme", "participating": true,
               "ranges": [{"first": "000000", "last": "499999"}],
               "updated": "2026-01-15T00:00:00Z"}],
     "reports": [{"imei": "35209900176148", "type": "stolen", "country": "FR",
                  "since": "2026-02-01", "withdrawn": false}]}

CSV — UTF-8, a header row, one record per row, ``kind`` selecting the columns that apply::

    kind,tac,manufacturer,participating,ranges,updated,imei,type,country,since,withdrawn
    tac,35209900,Acme,true,000000-499999,2026-01-15T00:00:00Z,,,,,
    tac,35332011,Acme,true,100000-199999 500000-599999,,,,,,
    report,,,,,,35209900176148,stolen,FR,2026-02-01,false

``ranges`` holds ``FIRST-LAST`` pairs separated by spaces or ``;``. Report IMEIs may be given
in 14, 15 or 16 digit form; they are stored as the 14-digit body. Errors name the file and the
record (JSON: index within its list; CSV: line number).
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_client.bounded import ShardedFifo
from registry_client.errors import DeclarationFileError as DeclarationFileError
from registry_client.model import (
    RegistryUnavailable,
    RegistryVerdict,
    Report,
    ReportType,
    VerdictOrigin,
)
from registry_client.wire import (
    InvalidImei,
    RecordError,
    SerialRange,
    TacDeclaration,
    decide,
    normalise_imei,
    parse_report,
    parse_tac_declaration,
    report_to_json,
    tac_to_json,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tacs (
    tac TEXT PRIMARY KEY,
    manufacturer TEXT,
    participating INTEGER NOT NULL,
    ranges TEXT NOT NULL,            -- JSON [[first, last], ...], sorted
    updated TEXT,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    imei TEXT NOT NULL,
    type TEXT NOT NULL,
    country TEXT NOT NULL,
    since TEXT,
    withdrawn INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (imei, type, country)
);
CREATE INDEX IF NOT EXISTS tacs_seq ON tacs (seq);
CREATE INDEX IF NOT EXISTS reports_seq ON reports (seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ImportSummary:
    tacs: int = 0  # records read
    reports: int = 0
    changed: int = 0  # records that were new or different


@dataclass(frozen=True, slots=True)
class ChangesPage:
    """One page of ``GET /v1/changes``: items are TacDeclaration or Report, in stamp order."""

    changes: tuple[TacDeclaration | Report, ...]
    next_cursor: str
    has_more: bool


def _ranges_json(ranges: Sequence[SerialRange]) -> str:
    return json.dumps([[r.first, r.last] for r in ranges], separators=(",", ":"))


class LocalRegistry:
    """SQLite registry; implements ``VerdictSource`` (origin LOCAL) without touching the network.

    One connection, used from the thread that made it (the event loop thread in the gateway and
    the server). Verdicts come from an in-memory index of every TAC declaration and every
    report (about 0.4 KB per declared TAC and per reported IMEI), loaded when the registry is
    opened, so ``cached()`` never reads SQLite for a handset: a query per IMEI on the event loop
    was most of a fresh check's cost. Writes by another connection (``eir-gateway registry
    import`` while serving) are noticed through ``PRAGMA data_version`` at most every
    ``revalidate_interval`` seconds and read from the change sequence in slices of at most
    ``catch_up_seconds``, so a large import never holds the loop for long.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        origin: VerdictOrigin = VerdictOrigin.LOCAL,
        memo_size: int = 100_000,
        revalidate_interval: float = 0.5,
        catch_up_seconds: float = 0.001,
    ):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._origin = origin
        self._revalidate_interval = revalidate_interval
        self._catch_up_seconds = catch_up_seconds
        self._checked_at = time.monotonic()
        self._closed = False
        # The index: declarations by TAC, reports by IMEI body (in stamp order), and the stamp
        # of the last record applied to it.
        self._tacs: dict[str, TacDeclaration] = {}
        self._reports: dict[str, tuple[Report, ...]] = {}
        self._index_seq = 0
        self._behind = False  # records stamped above _index_seq not read yet
        # Verdicts handed out, so a re-check gets the very same object while nothing changed
        # (the classifier's decision cache relies on that). Bounded, oldest out; an entry made
        # before the index last changed (_generation) counts as absent.
        self._verdict_memo: ShardedFifo[str, tuple[int, RegistryVerdict]] = ShardedFifo(memo_size)
        self._generation = 0
        self._load_index()
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]

    @classmethod
    def open(
        cls, path: str | Path, seed_files: Iterable[str | Path] = (), *, memo_size: int = 100_000
    ) -> LocalRegistry:
        """Open (creating) the database; import ``seed_files`` when it holds nothing yet."""
        registry = cls(path, memo_size=memo_size)
        seeds = list(seed_files)
        if seeds and registry.is_empty():
            registry.import_files(seeds)
        return registry

    # -- writes ----------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
            self._catch_up(None)  # our own write: in the index before the call returns

    # -- the in-memory index ---------------------------------------------------------------

    def _load_index(self) -> None:
        """Read every declaration and report (one read transaction: a consistent snapshot)."""
        db = self._db
        db.execute("BEGIN")
        try:
            tacs = {
                row[0]: self._tac_from_row(row)
                for row in db.execute(
                    "SELECT tac, manufacturer, participating, ranges, updated FROM tacs"
                )
            }
            reports: dict[str, list[Report]] = {}
            for i, t, c, since, withdrawn in db.execute(
                "SELECT imei, type, country, since, withdrawn FROM reports ORDER BY seq"
            ):
                reports.setdefault(i, []).append(Report(i, ReportType(t), c, since, bool(withdrawn)))
            seq = self.last_seq()
        finally:
            db.execute("COMMIT")
        self._tacs = tacs
        self._reports = {imei: tuple(found) for imei, found in reports.items()}
        self._index_seq = seq

    def _apply_to_index(self, record: TacDeclaration | Report) -> None:
        if isinstance(record, TacDeclaration):
            self._tacs[record.tac] = record
            return
        # One report per (IMEI, type, country), the latest stamp last (the reports() order).
        kept = tuple(
            r
            for r in self._reports.get(record.imei, ())
            if (r.type, r.country) != (record.type, record.country)
        )
        self._reports[record.imei] = (*kept, record)

    def _catch_up(self, budget: float | None) -> None:
        """Apply records stamped since the index was last brought up to date; with a budget
        (seconds), stop after it and leave ``_behind`` set for the next call."""
        deadline = None if budget is None else time.perf_counter() + budget
        while True:
            page = self.changes(self._index_seq, limit=256)
            if page.changes:
                for record in page.changes:
                    self._apply_to_index(record)
                self._generation += 1
                self._index_seq = int(page.next_cursor)
            self._behind = page.has_more
            if not page.has_more or (deadline is not None and time.perf_counter() > deadline):
                return

    def _revalidate(self) -> None:
        if self._closed:  # as SQLite would say: the index must not outlive the database
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        now = time.monotonic()
        # While behind, keep reading slices often (each bounded in time) until caught up.
        interval = min(self._revalidate_interval, 0.01) if self._behind else self._revalidate_interval
        if now - self._checked_at < interval:
            return
        self._checked_at = now
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version or self._behind:
            self._data_version = version
            self._catch_up(self._catch_up_seconds)

    def _next_seq(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        seq = (int(row[0]) if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (str(seq),))
        return seq

    def _put_tac(self, db: sqlite3.Connection, d: TacDeclaration) -> bool:
        ranges = _ranges_json(d.ranges)
        row = db.execute(
            "SELECT manufacturer, participating, ranges, updated FROM tacs WHERE tac = ?", (d.tac,)
        ).fetchone()
        if row == (d.manufacturer, int(d.participating), ranges, d.updated):
            return False
        db.execute(
            "INSERT OR REPLACE INTO tacs (tac, manufacturer, participating, ranges, updated, seq)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (d.tac, d.manufacturer, int(d.participating), ranges, d.updated, self._next_seq(db)),
        )
        return True

    def _put_report(self, db: sqlite3.Connection, r: Report) -> bool:
        row = db.execute(
            "SELECT since, withdrawn FROM reports WHERE imei = ? AND type = ? AND country = ?",
            (r.imei, r.type.value, r.country),
        ).fetchone()
        if row == (r.since, int(r.withdrawn)):
            return False
        db.execute(
            "INSERT OR REPLACE INTO reports (imei, type, country, since, withdrawn, seq)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (r.imei, r.type.value, r.country, r.since, int(r.withdrawn), self._next_seq(db)),
        )
        return True

    def apply(self, records: Iterable[TacDeclaration | Report]) -> int:
        """Store records in one transaction; returns how many were new or changed."""
        return self.apply_with_meta(records, {})

    def import_files(
        self, paths: Iterable[str | Path], progress: Callable[[int, int], None] | None = None
    ) -> ImportSummary:
        """Import JSON/CSV files (formats in the module docstring) all-or-nothing.
        ``progress(records written, records in all)`` is called every 1,000 records and at
        the end (a long import shows it is moving)."""
        records: list[TacDeclaration | Report] = []
        for path in paths:
            records.extend(read_declaration_file(path))
        if progress is None:
            changed = self.apply(records)
        else:
            total = len(records)

            def reporting() -> Iterator[TacDeclaration | Report]:
                for n, record in enumerate(records, 1):
                    yield record
                    if n % 1000 == 0:
                        progress(n, total)

            changed = self.apply(reporting())
            progress(total, total)
        tacs = sum(isinstance(r, TacDeclaration) for r in records)
        return ImportSummary(tacs=tacs, reports=len(records) - tacs, changed=changed)

    # -- reads -----------------------------------------------------------------------------

    def is_empty(self) -> bool:
        return (
            self._db.execute("SELECT 1 FROM tacs LIMIT 1").fetchone() is None
            and self._db.execute("SELECT 1 FROM reports LIMIT 1").fetchone() is None
        )

    @staticmethod
    def _tac_from_row(row: tuple[Any, ...]) -> TacDeclaration:
        tac, manufacturer, participating, ranges, updated = row[:5]
        return TacDeclaration(
            tac=tac,
            participating=bool(participating),
            ranges=tuple(SerialRange(a, b) for a, b in json.loads(ranges)),
            manufacturer=manufacturer,
            updated=updated,
        )

    def tac(self, tac: str) -> TacDeclaration | None:
        self._revalidate()
        return self._tacs.get(tac)

    def reports(self, imei: str) -> tuple[Report, ...]:
        """Reports on a 14-digit IMEI body, oldest stamp first (withdrawn ones included)."""
        self._revalidate()
        return self._reports.get(imei, ())

    def verdict(self, imei: str, *, origin: VerdictOrigin | None = None) -> RegistryVerdict:
        """Verdict for an IMEI in any accepted form; raises InvalidImei."""
        body = normalise_imei(imei)
        return self._verdict(body, self.reports(body), origin or self._origin, time.time())

    def verdicts(self, imeis: Sequence[str]) -> list[RegistryVerdict]:
        """Verdicts in request order; raises InvalidImei."""
        bodies = [normalise_imei(i) for i in imeis]
        now = time.time()
        return [self._verdict(b, self.reports(b), self._origin, now) for b in bodies]

    def _verdict(
        self, body: str, reports: tuple[Report, ...], origin: VerdictOrigin, now: float
    ) -> RegistryVerdict:
        declaration = self._tacs.get(body[:8])
        status, source = decide(body, declaration)
        # One per fresh check: built as RegistryVerdict.__new__ builds it (tuple.__new__ over
        # the fields in order), without the interpreted __new__'s frame (~2,000 instructions).
        fields = (
            body,  # imei
            body[:8],  # tac
            status,
            declaration.manufacturer if declaration else None,
            source,
            reports,
            origin,
            now,  # fetched_at
        )
        return tuple.__new__(RegistryVerdict, fields)

    def changes(self, since: int = 0, limit: int = 1000) -> ChangesPage:
        """Records stamped after ``since``, oldest first, at most ``limit``."""
        rows = self._db.execute(
            "SELECT seq, 't', tac, manufacturer, participating, ranges, updated FROM tacs"
            " WHERE seq > ?1"
            " UNION ALL SELECT seq, 'r', imei, type, country, since, withdrawn FROM reports"
            " WHERE seq > ?1 ORDER BY 1 LIMIT ?2",
            (since, limit + 1),
        ).fetchall()
        has_more = len(rows) > limit
        rows = rows[:limit]
        items: list[TacDeclaration | Report] = []
        for _seq, kind, *rest in rows:
            if kind == "t":
                items.append(self._tac_from_row(tuple(rest)))
            else:
                imei, rtype, country, rsince, withdrawn = rest
                items.append(Report(imei, ReportType(rtype), country, rsince, bool(withdrawn)))
        cursor = rows[-1][0] if rows else since
        return ChangesPage(tuple(items), str(cursor), has_more)

    def last_seq(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def apply_with_meta(
        self, records: Iterable[TacDeclaration | Report], meta: dict[str, str]
    ) -> int:
        """Store records and meta keys in one transaction (the mirror's page + cursor)."""
        changed = 0
        with self._transaction() as db:
            for record in records:
                if isinstance(record, TacDeclaration):
                    changed += self._put_tac(db, record)
                else:
                    changed += self._put_report(db, record)
            for key, value in meta.items():
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        return changed

    # -- VerdictSource ---------------------------------------------------------------------

    def cached(self, imei: str) -> RegistryVerdict | None:
        """Local verdict, no network, no SQLite: from the in-memory index (memoised).

        None for a malformed IMEI or a closed/broken database.
        """
        if self._closed:
            return None
        try:
            body = normalise_imei(imei)
            self._revalidate()
        except (InvalidImei, sqlite3.Error):
            return None
        memo = self._verdict_memo
        entry = memo.get(body)
        if entry is not None and entry[0] == self._generation:
            return entry[1]
        verdict = self._verdict(body, self._reports.get(body, ()), self._origin, time.time())
        memo.put(body, (self._generation, verdict))  # the oldest goes; never a bulk clear
        return verdict

    async def check(self, imei: str) -> RegistryVerdict:
        if self._closed:
            raise RegistryUnavailable("local registry is closed")
        verdict = self.cached(imei)
        if verdict is None:
            try:
                normalise_imei(imei)
            except InvalidImei as exc:
                raise RegistryUnavailable(str(exc)) from None
            raise RegistryUnavailable("local registry cannot be read")
        return verdict

    async def start(self) -> None:
        """Nothing to start; present so every backend can be started the same way."""

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()


# -- import files ------------------------------------------------------------------------------


def _parse_record(obj: object, where: str, path: str) -> TacDeclaration | Report:
    if not isinstance(obj, dict):
        raise DeclarationFileError(f"{path}: {where}: record must be an object")
    try:
        kind = obj.get("kind")
        if kind == "report" or (kind in (None, "") and "imei" in obj and "tac" not in obj):
            return parse_report(obj)
        return parse_tac_declaration(obj)
    except RecordError as exc:
        raise DeclarationFileError(f"{path}: {where}: {exc}") from None


def _read_json(path: str, text: str) -> list[TacDeclaration | Report]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeclarationFileError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    out: list[TacDeclaration | Report] = []
    if isinstance(data, list):
        for index, obj in enumerate(data):
            out.append(_parse_record(obj, f"record {index}", path))
        return out
    if not isinstance(data, dict):
        raise DeclarationFileError(f"{path}: top level must be an object or a list")
    unknown = set(data) - {"tacs", "reports"}
    if unknown:
        raise DeclarationFileError(f"{path}: unexpected top-level keys {sorted(unknown)}")
    for key, kind in (("tacs", "tac"), ("reports", "report")):
        items = data.get(key, [])
        if not isinstance(items, list):
            raise DeclarationFileError(f"{path}: {key} must be a list")
        for index, obj in enumerate(items):
            if isinstance(obj, dict) and obj.get("kind") not in (None, kind):
                raise DeclarationFileError(f"{path}: {key}[{index}]: kind must be {kind!r}")
            tagged = {**obj, "kind": kind} if isinstance(obj, dict) else obj
            out.append(_parse_record(tagged, f"{key}[{index}]", path))
    return out


def _read_csv(path: str, text: str) -> list[TacDeclaration | Report]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "kind" not in reader.fieldnames:
        raise DeclarationFileError(f"{path}: line 1: header row with a 'kind' column required")
    out: list[TacDeclaration | Report] = []
    for row in reader:
        where = f"line {reader.line_num}"
        if None in row:
            raise DeclarationFileError(f"{path}: {where}: more fields than the header")
        fields = {k: v.strip() for k, v in row.items() if v is not None and v.strip() != ""}
        kind = fields.get("kind")
        if kind == "tac":
            keep = ("kind", "tac", "manufacturer", "participating", "ranges", "updated")
        elif kind == "report":
            keep = ("kind", "imei", "type", "country", "since", "withdrawn")
        else:
            raise DeclarationFileError(f"{path}: {where}: kind must be 'tac' or 'report'")
        out.append(_parse_record({k: fields[k] for k in keep if k in fields}, where, path))
    return out


def read_declaration_file(path: str | Path) -> list[TacDeclaration | Report]:
    """Parse a JSON or CSV declaration file (chosen by suffix; ``.csv`` is CSV, else JSON)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeclarationFileError(f"{name}: cannot read: {exc}") from None
    if name.lower().endswith(".csv"):
        return _read_csv(name, text)
    return _read_json(name, text)


def record_to_json(record: TacDeclaration | Report) -> dict[str, Any]:
    """A ``/v1/changes`` item (with ``kind``)."""
    if isinstance(record, TacDeclaration):
        return tac_to_json(record, kind=True)
    return report_to_json(record, kind=True)
