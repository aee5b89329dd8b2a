"""TAC database: import (GSMA pipe file or plain CSV) into SQLite, lookups from memory.

Input formats (detected from the first line: a ``|`` means GSMA):

* GSMA TAC export (standards.md §5): pipe-separated, one header row, columns mapped by name
  case-insensitively, so the 17-column layout (``TAC|Marketing Name|Internal Model Name|
  Manufacturer|...``) and the 20-column layout (``TAC|Marketing Name|Manufacturer (or)
  Applicant|...``) both load. Needed: ``TAC``, a manufacturer column (``Manufacturer`` or
  ``Manufacturer (or) Applicant``); model is ``Model Name``, else ``Marketing Name``, else
  ``Internal Model Name``. Every row must have the header's column count; surrounding double
  quotes are stripped.
* Plain CSV ``tac,manufacturer,model``, header optional (a first field ``tac`` marks it). One
  record per physical line, fields split as CSV (so a quoted field may hold a comma). The rule
  that makes community files such as IMEIDB (``TAC,Manufacturer,Model,,`` with unquoted commas
  inside model names) load: TAC = first field, exactly 8 decimal digits; manufacturer = second
  field, not empty; model = every further non-empty field, rejoined with ``,`` (may be empty).
  A line breaking this rule is a bad line.

Bad lines: strict mode (the default) fails the whole import with :class:`TacImportError` naming
the file and line, nothing imported (one SQLite transaction); ``skip_bad`` imports the good rows
and reports every bad line. A TAC seen twice: the last row wins, counted in the summary.
"""

from __future__ import annotations

import csv
import sqlite3
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from gateway.errors import TacImportError as TacImportError
from gateway.imei import is_decimal
from gateway.progress import Progress, ProgressPrinter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tac (
    tac INTEGER PRIMARY KEY,
    manufacturer TEXT NOT NULL,
    model TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_MANUFACTURER_COLUMNS = ("manufacturer", "manufacturer (or) applicant")
_MODEL_COLUMNS = ("model name", "marketing name", "internal model name")


@dataclass(frozen=True, slots=True)
class TacInfo:
    tac: str
    manufacturer: str
    model: str


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    problem: str


@dataclass(slots=True)
class ImportSummary:
    file: str
    format: str = ""
    lines: int = 0  # data lines read (header and blank lines excluded)
    imported: int = 0  # distinct TACs written
    duplicates: int = 0  # rows whose TAC appeared earlier in the file (last wins)
    bad: list[BadLine] = field(default_factory=list)

    def render(self) -> str:
        text = (
            f"{self.file}: {self.format} format, {self.lines} rows, {self.imported} TACs imported, "
            f"{self.duplicates} duplicate TACs (last wins), {len(self.bad)} bad lines"
        )
        return "\n".join([text, *(f"  line {b.line}: {b.problem}" for b in self.bad)])


def _valid_tac(text: str) -> bool:
    return len(text) == 8 and is_decimal(text)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text.strip()


Row = tuple[str, str, str]
Parsed = Row | BadLine


def _parse_gsma(lines: Iterator[tuple[int, str]], header: str) -> Iterator[tuple[int, Parsed]]:
    """Map the header (eagerly, so a bad header raises here), then parse rows lazily."""
    names = [_unquote(h).lower() for h in header.split("|")]
    index = {n: i for i, n in enumerate(names)}
    if "tac" not in index:
        raise TacImportError("header has no TAC column")
    man = next((index[c] for c in _MANUFACTURER_COLUMNS if c in index), None)
    if man is None:
        raise TacImportError("header has no Manufacturer column")
    models = [index[c] for c in _MODEL_COLUMNS if c in index]
    return _gsma_rows(lines, index["tac"], man, models, len(names))


def _gsma_rows(
    lines: Iterator[tuple[int, str]], t: int, man: int, models: list[int], width: int
) -> Iterator[tuple[int, Parsed]]:
    for number, line in lines:
        cells = line.split("|")
        if len(cells) != width:
            yield number, BadLine(number, f"{len(cells)} columns, header has {width}")
            continue
        tac = _unquote(cells[t])
        if not _valid_tac(tac):
            yield number, BadLine(number, f"TAC {tac!r} is not 8 decimal digits")
            continue
        model = next((m for m in (_unquote(cells[i]) for i in models) if m), "")
        yield number, (tac, _unquote(cells[man]), model)


def _parse_csv(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, Parsed]]:
    for number, line in lines:
        fields = next(csv.reader([line]))
        if number == 1 and fields and fields[0].strip().lower() == "tac":
            continue  # header
        tac = fields[0].strip() if fields else ""
        if not _valid_tac(tac):
            yield number, BadLine(number, f"TAC {tac!r} is not 8 decimal digits")
            continue
        manufacturer = fields[1].strip() if len(fields) > 1 else ""
        if not manufacturer:
            yield number, BadLine(number, "no manufacturer (second field)")
            continue
        model = ",".join(f.strip() for f in fields[2:] if f.strip())
        yield number, (tac, manufacturer, model)


def parse_tac_file(
    path: str | Path, skip_bad: bool = False, progress: TextIO | None = None
) -> tuple[dict[int, tuple[str, str]], ImportSummary]:
    """Read a TAC file into ``{tac: (manufacturer, model)}``; a bad line raises unless skip_bad."""
    path = Path(path)
    summary = ImportSummary(str(path))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TacImportError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # older GSMA exports; every byte decodes
    all_lines = text.splitlines()
    total = len(all_lines)
    numbered = ((i, s) for i, s in enumerate(all_lines, 1) if s.strip())
    first = next(numbered, None)
    if first is None:
        return {}, summary
    if "|" in first[1]:
        summary.format = "gsma"
        try:
            rows = _parse_gsma(numbered, first[1])
        except TacImportError as exc:
            raise TacImportError(f"{path}:{first[0]}: {exc}") from None
    else:
        summary.format = "csv"
        rows = _parse_csv(_chain_first(first, numbered))
    # A bar with rate and ETA on a terminal, one line per 10% otherwise (gateway.progress).
    bar = None if progress is None else Progress(total, ProgressPrinter(progress, str(path)))
    records: dict[int, tuple[str, str]] = {}
    for number, row in rows:
        summary.lines += 1
        if not isinstance(row, BadLine) and ("\x00" in row[1] or "\x00" in row[2]):
            # UTF-8 holds it, SQLite stores it; PostgreSQL's text cannot: bad on both
            row = BadLine(number, "a NUL character")
        if isinstance(row, BadLine):
            if not skip_bad:
                raise TacImportError(f"{path}:{row.line}: {row.problem}")
            summary.bad.append(row)
        else:
            key = int(row[0])
            if key in records:
                summary.duplicates += 1
            records[key] = (row[1], row[2])
        if bar is not None:
            bar.advance(number, summary.lines)
    if bar is not None:
        bar.finish()
    summary.imported = len(records)
    return records, summary


def _chain_first(
    first: tuple[int, str], rest: Iterator[tuple[int, str]]
) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


def connect(database: str | Path) -> sqlite3.Connection:
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(database))
    conn.executescript(_SCHEMA)
    return conn


def import_tac_file(
    database: str | Path,
    path: str | Path,
    skip_bad: bool = False,
    replace: bool = False,
    progress: TextIO | None = None,
) -> ImportSummary:
    """Parse ``path`` and write it into ``database`` in one transaction (upsert, or replace all).

    ``replace`` with zero valid rows raises :class:`TacImportError` and changes nothing."""
    records, summary = parse_tac_file(path, skip_bad, progress)
    if replace and not records:
        # An empty or all-bad file (e.g. a truncated download) must not wipe the table.
        raise TacImportError(
            f"{path}: no valid rows ({summary.lines} rows read, {len(summary.bad)} bad); "
            "refusing to replace the TAC database with nothing"
        )
    conn = connect(database)
    try:
        with conn:
            if replace:
                conn.execute("DELETE FROM tac")
            conn.executemany(
                "INSERT OR REPLACE INTO tac (tac, manufacturer, model) VALUES (?, ?, ?)",
                ((t, m, n) for t, (m, n) in records.items()),
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('source:' || ?, ?)",
                (str(path), file_stamp(path)),
            )
    finally:
        conn.close()
    return summary


def file_stamp(path: str | Path) -> str:
    st = Path(path).stat()
    return f"{st.st_mtime_ns}:{st.st_size}"


def stored_stamp(database: str | Path, path: str | Path) -> str | None:
    conn = connect(database)
    try:
        row = conn.execute(
            "SELECT value FROM meta WHERE key = 'source:' || ?", (str(path),)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


class TacDatabase:
    """In-memory TAC table: sorted ``array('I')`` of TACs, a parallel index into the distinct
    (manufacturer, model) pairs. Lookup is a bisect, O(log n), no SQLite. ``contains``, which
    every fresh check asks, is one probe of a set of the same TACs (about 70 bytes per TAC: 7 MB
    for a GSMA file of 100,000, against 17 bisect steps of about 120 instructions each)."""

    __slots__ = ("_known", "_names", "_refs", "_tacs")

    def __init__(self, tacs: array[int], refs: array[int], names: list[tuple[str, str]]) -> None:
        self._tacs = tacs
        self._refs = refs
        self._names = names
        self._known = frozenset(tacs)

    @classmethod
    def load(cls, database: str | Path) -> TacDatabase:
        conn = connect(database)
        tacs, refs = array("I"), array("I")
        names: list[tuple[str, str]] = []
        seen: dict[tuple[str, str], int] = {}
        try:
            cur = conn.execute("SELECT tac, manufacturer, model FROM tac ORDER BY tac")
            while chunk := cur.fetchmany(10_000):
                for tac, manufacturer, model in chunk:
                    key = (manufacturer, model)
                    ref = seen.get(key)
                    if ref is None:
                        ref = seen[key] = len(names)
                        names.append(key)
                    tacs.append(tac)
                    refs.append(ref)
        finally:
            conn.close()
        return cls(tacs, refs, names)

    @classmethod
    def from_records(cls, records: dict[int, tuple[str, str]]) -> TacDatabase:
        keys = sorted(records)
        names = sorted(set(records.values()))
        where = {n: i for i, n in enumerate(names)}
        return cls(array("I", keys), array("I", (where[records[k]] for k in keys)), names)

    def __len__(self) -> int:
        return len(self._tacs)

    def _find(self, tac: int) -> int:
        tacs = self._tacs
        i = bisect_left(tacs, tac)
        return i if i < len(tacs) and tacs[i] == tac else -1

    def contains(self, tac: int) -> bool:
        return tac in self._known

    def lookup(self, tac: str) -> TacInfo | None:
        if not _valid_tac(tac):
            return None
        i = self._find(int(tac))
        if i < 0:
            return None
        manufacturer, model = self._names[self._refs[i]]
        return TacInfo(tac, manufacturer, model)


def default_progress() -> TextIO:
    return sys.stderr


def import_if_changed(database: str | Path, source: str | Path) -> bool:
    """Import ``source`` (strict) when its mtime or size changed since its last import."""
    if stored_stamp(database, source) == file_stamp(source):
        return False
    import_tac_file(database, source)
    return True


def open_tac_database(database: str | Path, source: str | Path | None = None) -> TacDatabase:
    """Load the TAC table, first importing ``source`` (strict) when it changed since last time."""
    if source is not None:
        import_if_changed(database, source)
    return TacDatabase.load(database)
