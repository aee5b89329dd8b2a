"""Append-only audit log of changes to the operator lists: who, when, what, before and after.

The log is a table of the lists database, so each change and its audit record commit in one
transaction: there is no change without its record, and no record of a change that rolled back.
SQLite triggers refuse UPDATE and DELETE on it, whoever writes to the file (the API, the CLI or
another process). Records are numbered (``seq``, never reused: AUTOINCREMENT), so a reader pages
through them with ``after=seq``.

``before`` and ``after`` hold the entry as JSON (``None`` for a creation or a removal); a bulk
import records one summary (file, SHA-256, rows, resulting version) rather than millions of rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, seq);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

ACTIONS = ("create", "update", "delete", "import")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: float
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def append(
    conn: sqlite3.Connection,
    at: float,
    actor: str,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    """Add one record; call inside the transaction of the change it describes."""
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)",
        (at, actor, action, target, _dump(before), _dump(after)),
    )


def _dump(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def query(conn: sqlite3.Connection, **filters: Any) -> list[AuditRecord]:
    """Records with ``seq > after`` matching every filter given (``after``, ``limit``,
    ``actor``, ``action``, ``target``, ``since``, ``until``: see :func:`query_sql`), oldest
    first, at most ``limit``."""
    sql, args = query_sql(lambda n: "?", **filters)
    return records(conn.execute(sql, args).fetchall())


def query_sql(
    placeholder: Callable[[int], str],
    *,
    after: int = 0,
    limit: int = 100,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[str, list[object]]:
    """The SELECT of :func:`query` and its arguments; ``placeholder(n)`` writes the n-th
    parameter as the database wants it (``?`` for SQLite, ``$n`` for PostgreSQL)."""
    args: list[object] = [after]
    where: list[str] = [f"seq > {placeholder(1)}"]
    for column, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = {placeholder(len(args))}")
    if since is not None:
        args.append(since)
        where.append(f"at >= {placeholder(len(args))}")
    if until is not None:
        args.append(until)
        where.append(f"at < {placeholder(len(args))}")
    args.append(limit)
    sql = ("SELECT seq, at, actor, action, target, before, after FROM audit "
           f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT {placeholder(len(args))}")
    return sql, args


def records(rows: Iterable[Sequence[Any]]) -> list[AuditRecord]:
    """Records from (seq, at, actor, action, target, before, after) rows."""
    return [
        AuditRecord(seq, at, who, what, target_, _load(b), _load(a))
        for seq, at, who, what, target_, b, a in rows
    ]


def dump(value: Mapping[str, Any] | None) -> str | None:
    """``before``/``after`` as stored."""
    return _dump(value)


def _load(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)
