"""`eir-gateway state migrate [--from DIR]`: copy the SQLite state into the PostgreSQL database
of ``[state] dsn``.

The SQLite files are the ones the configuration names (``lists.database``, ``tac.database``,
``observations.database`` in ``state.directory``, or in ``--from DIR``); the target must be
empty. One transaction: a failure leaves PostgreSQL as it was. Then switch ``[state] backend``
to ``"postgresql"`` and restart the gateways.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_argument,
    config_or_none,
    fail,
)
from gateway.state import StateError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("state", help="the gateway's state (SQLite, PostgreSQL)")
    commands = parser.add_subparsers(dest="state_command", metavar="COMMAND", required=True)
    mig = commands.add_parser(
        "migrate", help="copy the SQLite state into the PostgreSQL database of [state] dsn"
    )
    mig.add_argument("--from", dest="source", metavar="DIR",
                     help="the SQLite state directory (default: state.directory)")
    add_config_argument(mig)
    mig.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    if not config.state.dsn:
        return fail("state migrate needs [state] dsn (or EIR_STATE_DSN): the PostgreSQL "
                    "database to copy into", EXIT_USAGE)
    try:
        from gateway.pg.database import Database
        from gateway.pg.migrate import MigrationError, migrate
    except ImportError:
        return fail("state migrate needs asyncpg (pip install 'eir-gateway[postgresql]')",
                    EXIT_USAGE)

    def moved(path: Path) -> Path:
        return Path(args.source) / path.name if args.source else path

    sources = {"lists": moved(config.lists.database), "tac": moved(config.tac.database),
               "observations": moved(config.observations.database)}
    try:
        db = Database(config.state.dsn)
    except StateError as exc:
        return fail(str(exc), EXIT_FAILED)
    try:
        report = migrate(db, sources, lambda table, n: print(
            f"\r{table}: {n:,} rows", end="", file=sys.stderr, flush=True))
    except (MigrationError, StateError) as exc:
        print(file=sys.stderr)
        return fail(f"migration failed, nothing written: {exc}", EXIT_FAILED)
    finally:
        db.close()
    print(file=sys.stderr)
    for path in report.skipped:
        print(f"{path}: does not exist, nothing to copy")
    rows = ", ".join(f"{table} {n:,}" for table, n in report.rows.items())
    print(f"copied into {db.name}: {rows or 'nothing'}; lists version {report.lists_version}")
    return EXIT_OK
