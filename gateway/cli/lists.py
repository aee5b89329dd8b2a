"""`eir-gateway lists add|remove|import|export|show`: the operator black/grey/white lists.

    eir-gateway lists add {black|grey|white} {imei|range|tac|pair} VALUE [--imsi IMSI] [--reason T]
    eir-gateway lists remove {black|grey|white} {imei|range|tac|pair} VALUE [--imsi IMSI]
    eir-gateway lists import FILE [--format csv|jsonl]   (all or nothing, with progress)
    eir-gateway lists export [FILE] [--format csv|jsonl] (to FILE or stdout)
    eir-gateway lists show [--list L] [--kind K] [--limit N]
    eir-gateway lists audit [--actor A] [--target T] [--after SEQ] [--limit N]

Every change bumps the store version, which a running gateway picks up (poll or SIGHUP), and is
recorded in the audit log with the actor ``cli:USER``. The commands go through the service layer
the provisioning API uses (gateway.provisioning).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import state
from gateway.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_argument,
    config_or_none,
    fail,
)
from gateway.lists import EntryKind, ListColour, ListError, make_entry
from gateway.progress import Progress, ProgressPrinter
from gateway.provisioning import FORMATS, Provisioning
from gateway.state import StateError

_COLOURS = [c.value for c in ListColour]
_KINDS = [k.value for k in EntryKind]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("lists", help="operator black/grey/white lists")
    commands = parser.add_subparsers(dest="lists_command", metavar="COMMAND", required=True)

    for name, helptext in (("add", "add or update an entry"), ("remove", "remove an entry")):
        p = commands.add_parser(name, help=helptext)
        p.add_argument("list", choices=_COLOURS)
        p.add_argument("kind", choices=_KINDS)
        p.add_argument("value", help="IMEI (14/15 digits), FIRST-LAST, or 8-digit TAC")
        p.add_argument("--imsi", default="", help="IMSI, for kind pair")
        if name == "add":
            p.add_argument("--reason", default="", help="reason / comment")
        add_config_argument(p)
        p.set_defaults(func=_add if name == "add" else _remove)

    imp = commands.add_parser("import", help="import a CSV or JSON lines file (all rows or none)")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--format", choices=FORMATS, help="default: jsonl for *.jsonl, else csv")
    add_config_argument(imp)
    imp.set_defaults(func=_import)

    exp = commands.add_parser("export", help="export every entry as CSV or JSON lines")
    exp.add_argument("file", metavar="FILE", nargs="?", help="default: stdout")
    exp.add_argument("--format", choices=FORMATS, help="default: jsonl for *.jsonl, else csv")
    add_config_argument(exp)
    exp.set_defaults(func=_export)

    aud = commands.add_parser("audit", help="print the audit log of list changes")
    aud.add_argument("--actor", help="only this actor (cli:USER, api:TOKEN-NAME)")
    aud.add_argument("--target", help="only this entry (LIST/KIND:VALUE)")
    aud.add_argument("--after", type=int, default=0, help="records after this sequence number")
    aud.add_argument("--limit", type=int, default=100, help="at most N records (default 100)")
    add_config_argument(aud)
    aud.set_defaults(func=_audit)

    show = commands.add_parser("show", help="print entries and the store version")
    show.add_argument("--list", choices=_COLOURS)
    show.add_argument("--kind", choices=_KINDS)
    show.add_argument("--limit", type=int, default=100, help="at most N entries (default 100)")
    add_config_argument(show)
    show.set_defaults(func=_show)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return f"cli:uid={os.getuid()}"


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    return "jsonl" if str(args.file or "").endswith((".jsonl", ".ndjson")) else "csv"


def _with_store(args: argparse.Namespace, body: Callable[[Provisioning], int]) -> int:
    """Open the configured store (SQLite or PostgreSQL, ``[state] backend``), run ``body``,
    close; a store that cannot be used (SQLite: corrupt, not a database, locked, unwritable;
    PostgreSQL: unreachable, refused) is a clean error naming it, exit 1."""
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    where = (state.where(config) if config.state.postgresql
             else str(Path(config.lists.database).resolve()))
    try:
        store = state.open_list_store(config)
    except (sqlite3.Error, OSError, StateError) as exc:
        return fail(f"{where}: cannot open the lists database: {exc}", EXIT_FAILED)
    try:
        return body(Provisioning(store))
    except (sqlite3.Error, StateError) as exc:
        return fail(f"{where}: lists database error: {exc}", EXIT_FAILED)
    finally:
        store.close()


def _add(args: argparse.Namespace) -> int:
    try:
        entry = make_entry(args.list, args.kind, args.value, args.imsi, args.reason)
    except ListError as exc:
        return fail(str(exc), EXIT_USAGE)

    def body(service: Provisioning) -> int:
        service.put(entry, _actor())
        # The path: a relative state directory makes a new store wherever the CLI runs.
        print(f"added {entry.colour.value} {entry.kind.value} {entry.value} to "
              f"{service.store.location}; version {service.version()}")
        return EXIT_OK

    return _with_store(args, body)


def _remove(args: argparse.Namespace) -> int:
    try:
        entry = make_entry(args.list, args.kind, args.value, args.imsi)
    except ListError as exc:
        return fail(str(exc), EXIT_USAGE)

    def body(service: Provisioning) -> int:
        what = f"{entry.colour.value} {entry.kind.value} {entry.value}"
        path = service.store.location
        if service.delete(entry, _actor()) is None:
            return fail(f"no {entry.colour.value} {entry.kind.value} entry {entry.value} "
                        f"in {path}")
        print(f"removed {what} from {path}; version {service.version()}")
        return EXIT_OK

    return _with_store(args, body)


def _import(args: argparse.Namespace) -> int:
    def body(service: Provisioning) -> int:
        progress = Progress(0, ProgressPrinter(sys.stderr, args.file))
        try:
            n = service.import_file(args.file, _format(args), _actor(), progress)
        except ListError as exc:
            if progress.done and sys.stderr.isatty():
                sys.stderr.write("\n")  # end the bar's line before the message
            return fail(f"import failed, nothing imported: {exc}")
        print(f"{args.file}: {n} entries imported into {service.store.location}; "
              f"version {service.version()} ({progress.rate:,.0f} entries/s)")
        return EXIT_OK

    return _with_store(args, body)


def _export(args: argparse.Namespace) -> int:
    fmt = _format(args)

    def body(service: Provisioning) -> int:
        if not args.file:
            service.export(sys.stdout, fmt)
            return EXIT_OK
        try:
            out = open(args.file, "w", newline="", encoding="utf-8")
        except OSError as exc:  # a bad output path is bad input: exit 2, no traceback
            return fail(f"cannot write {args.file}: {exc.strerror}", EXIT_USAGE)
        try:
            with out:
                n = service.export(out, fmt)
        except OSError as exc:  # disk full, ...: the file is incomplete, say so
            return fail(f"cannot write {args.file} (incomplete): {exc.strerror}")
        print(f"{args.file}: {n} entries exported from {service.store.location}", file=sys.stderr)
        return EXIT_OK

    return _with_store(args, body)


def _show(args: argparse.Namespace) -> int:
    colour = ListColour(args.list) if args.list else None
    kind = EntryKind(args.kind) if args.kind else None

    def body(service: Provisioning) -> int:
        print(f"version {service.version()}")
        for e in service.store.entries(colour, kind, limit=max(args.limit, 0)):
            imsi = f" imsi={e.imsi}" if e.imsi else ""
            print(f"{e.colour.value:<5} {e.kind.value:<5} {e.value}{imsi}  {e.reason}".rstrip())
        return EXIT_OK

    return _with_store(args, body)


def _audit(args: argparse.Namespace) -> int:
    def body(service: Provisioning) -> int:
        for r in service.audit(after=args.after, limit=max(args.limit, 0), actor=args.actor,
                               target=args.target):
            when = datetime.fromtimestamp(r.at, UTC).isoformat(timespec="seconds")
            change = {"before": r.before, "after": r.after}
            print(f"{r.seq} {when} {r.actor} {r.action} {r.target} "
                  f"{json.dumps(change, separators=(',', ':'))}")
        return EXIT_OK

    return _with_store(args, body)
