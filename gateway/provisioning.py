"""Provisioning of the operator lists: the one service layer behind ``eir-gateway lists`` and the
provisioning API (gateway/api). Every write names its actor and lands in the audit log in the
transaction of the change (gateway/audit.py).

Everything here blocks on SQLite: from asyncio, call it in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from gateway import audit
from gateway.lists import (
    CSV_HEADER,
    JSON_FIELDS,
    EntryKind,
    Key,
    LineReader,
    ListBackend,
    ListColour,
    ListEntry,
    ListError,
    csv_row,
    entry_json,
    iter_csv,
    iter_jsonl,
)
from gateway.progress import Progress

FORMATS = ("csv", "jsonl")
MAX_PAGE = 1000


class CursorError(ValueError):
    """A pagination cursor this service did not issue."""


def encode_cursor(entry: ListEntry) -> str:
    key = [entry.kind.value, entry.colour.value, entry.first, entry.last, entry.imsi]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Key:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        kind, colour, first, last, imsi = json.loads(raw)
        EntryKind(kind), ListColour(colour)
        if not (isinstance(first, int) and isinstance(last, int) and isinstance(imsi, str)):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, RecursionError):  # JSON nested too deeply
        raise CursorError(f"cursor {text!r} was not issued by this API") from None
    return (kind, colour, first, last, imsi)


class Provisioning:
    """List operations with their audit records over one store (SQLite or PostgreSQL)."""

    def __init__(self, store: ListBackend) -> None:
        self.store = store

    def version(self) -> int:
        return self.store.version()

    def create(self, entry: ListEntry, actor: str) -> ListEntry:
        """A new entry; :class:`gateway.lists.EntryExists` when it is already stored."""
        return self.store.put(entry, actor, create_only=True)[1]

    def put(self, entry: ListEntry, actor: str) -> tuple[bool, ListEntry]:
        """Create or update (reason); returns (created, the stored entry)."""
        before, after = self.store.put(entry, actor)
        return before is None, after

    def get(self, entry: ListEntry) -> ListEntry | None:
        return self.store.get(entry)

    def delete(self, entry: ListEntry, actor: str) -> ListEntry | None:
        return self.store.delete(entry, actor)

    def page(
        self,
        colour: ListColour | None,
        kind: EntryKind | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[ListEntry], str | None]:
        """One page of entries in key order and the cursor of the next (None: last page)."""
        after = decode_cursor(cursor) if cursor else None
        limit = max(1, min(limit, MAX_PAGE))
        entries = self.store.page(colour, kind, after, limit)
        more = len(entries) == limit
        return entries, encode_cursor(entries[-1]) if more else None

    def matching(self, body: int) -> list[ListEntry]:
        return self.store.matching(body)

    def import_file(
        self, path: str | Path, fmt: str, actor: str, progress: Progress | None = None,
        label: str | None = None,
    ) -> int:
        """Import a CSV or JSON lines file, all rows or none; returns the entry count."""
        if fmt not in FORMATS:
            raise ListError(f"format {fmt!r} is not csv or jsonl")
        lines = LineReader(path)
        if progress is not None:
            progress.total = lines.size
        rows = iter_csv(lines) if fmt == "csv" else iter_jsonl(lines)
        return self.store.import_entries(
            rows, label or str(path), actor, progress, lambda: lines.position
        )

    def export(self, out: TextIO, fmt: str) -> int:
        """Every entry, as CSV (the import format, with timestamps) or JSON lines; returns the
        entry count."""
        n = 0
        for chunk, count in self.export_chunks(fmt):
            out.write(chunk)
            n = count
        return n

    def export_chunks(self, fmt: str, rows: int = 1000) -> Iterator[tuple[str, int]]:
        """The export as (text, entries so far) chunks of ``rows`` entries, for streaming."""
        if fmt not in FORMATS:
            raise ListError(f"format {fmt!r} is not csv or jsonl")
        buffer = _Buffer()
        writer = csv.writer(buffer, lineterminator="\n")
        if fmt == "csv":
            writer.writerow(CSV_HEADER)
        n = 0
        for n, e in enumerate(self.store.entries(), 1):
            if fmt == "csv":
                writer.writerow(csv_row(e))
            else:
                item = entry_json(e)
                assert item is not None
                # The import fields only (not ``source``): an export imports again as it is.
                buffer.write(json.dumps({k: item[k] for k in JSON_FIELDS},
                                        separators=(",", ":")) + "\n")
            if n % rows == 0:
                yield buffer.take(), n
        yield buffer.take(), n

    def audit(self, **filters: object) -> list[audit.AuditRecord]:
        """Audit records (filters as :func:`gateway.audit.query`)."""
        return self.store.audit(**filters)


class _Buffer:
    """A text sink csv.writer writes into, emptied chunk by chunk."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        return text
