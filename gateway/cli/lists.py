"""`eir-gateway lists add|remove|import|export|show`: the operator black/grey/white lists.

    eir-gateway lists add {black|grey|white} {imei|range|tac|pair} VALUE [--imsi IMSI] [--reason T]
    eir-gateway lists remove {black|grey|white} {imei|range|tac|pair} VALUE [--imsi IMSI]
    eir-gateway lists import FILE            (CSV, format in gateway.lists; all or nothing)
    eir-gateway lists export [FILE]          (CSV to FILE or stdout)
    eir-gateway lists show [--list L] [--kind K] [--limit N]

Every change bumps the store version, which a running gateway picks up (poll or SIGHUP).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    add_config_argument,
    config_or_none,
    fail,
)
from gateway.lists import EntryKind, ListColour, ListError, ListStore, make_entry

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

    imp = commands.add_parser("import", help="import a CSV file (all rows or none)")
    imp.add_argument("file", metavar="FILE")
    add_config_argument(imp)
    imp.set_defaults(func=_import)

    exp = commands.add_parser("export", help="export every entry as CSV")
    exp.add_argument("file", metavar="FILE", nargs="?", help="default: stdout")
    add_config_argument(exp)
    exp.set_defaults(func=_export)

    show = commands.add_parser("show", help="print entries and the store version")
    show.add_argument("--list", choices=_COLOURS)
    show.add_argument("--kind", choices=_KINDS)
    show.add_argument("--limit", type=int, default=100, help="at most N entries (default 100)")
    add_config_argument(show)
    show.set_defaults(func=_show)


def _store(args: argparse.Namespace) -> ListStore | None:
    config = config_or_none(args)
    return None if config is None else ListStore(config.lists.database)


def _add(args: argparse.Namespace) -> int:
    try:
        entry = make_entry(args.list, args.kind, args.value, args.imsi, args.reason)
    except ListError as exc:
        return fail(str(exc), EXIT_USAGE)
    store = _store(args)
    if store is None:
        return EXIT_USAGE
    with _closing(store):
        store.add(entry)
        print(f"added {entry.colour.value} {entry.kind.value} {entry.value}; "
              f"version {store.version()}")
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    try:
        entry = make_entry(args.list, args.kind, args.value, args.imsi)
    except ListError as exc:
        return fail(str(exc), EXIT_USAGE)
    store = _store(args)
    if store is None:
        return EXIT_USAGE
    with _closing(store):
        if not store.remove(entry):
            return fail(f"no {entry.colour.value} {entry.kind.value} entry {entry.value}")
        print(f"removed {entry.colour.value} {entry.kind.value} {entry.value}; "
              f"version {store.version()}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return EXIT_USAGE
    with _closing(store):
        try:
            n = store.import_csv(args.file)
        except ListError as exc:
            return fail(f"import failed, nothing imported: {exc}")
        print(f"{args.file}: {n} entries imported; version {store.version()}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return EXIT_USAGE
    with _closing(store):
        if args.file:
            with open(args.file, "w", newline="", encoding="utf-8") as out:
                n = store.export_csv(out)
            print(f"{args.file}: {n} entries exported", file=sys.stderr)
        else:
            store.export_csv(sys.stdout)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return EXIT_USAGE
    colour = ListColour(args.list) if args.list else None
    kind = EntryKind(args.kind) if args.kind else None
    with _closing(store):
        print(f"version {store.version()}")
        for e in store.entries(colour, kind, limit=max(args.limit, 0)):
            imsi = f" imsi={e.imsi}" if e.imsi else ""
            print(f"{e.colour.value:<5} {e.kind.value:<5} {e.value}{imsi}  {e.reason}".rstrip())
    return EXIT_OK


class _closing:
    def __init__(self, store: ListStore) -> None:
        self.store = store

    def __enter__(self) -> ListStore:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
