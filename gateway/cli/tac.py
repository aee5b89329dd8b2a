"""`eir-gateway tac import FILE [--skip-bad] [--replace]` and `eir-gateway tac show TAC`.

Import formats and the bad-line policy are described in gateway.tac: strict by default (a bad
line fails the import, nothing is written), ``--skip-bad`` imports the good rows and names every
bad line. A progress bar is drawn on stderr when it is a terminal; a summary ends the import.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway import state
from gateway.cli._common import EXIT_OK, EXIT_USAGE, add_config_argument, config_or_none, fail
from gateway.state import StateError
from gateway.tac import TacImportError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("tac", help="TAC database (GSMA file or CSV)")
    commands = parser.add_subparsers(dest="tac_command", metavar="COMMAND", required=True)

    imp = commands.add_parser("import", help="import a GSMA file or CSV (tac,manufacturer,model)")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--skip-bad", action="store_true", help="import good rows, list bad lines")
    imp.add_argument("--replace", action="store_true", help="drop existing TACs first")
    add_config_argument(imp)
    imp.set_defaults(func=_import)

    show = commands.add_parser("show", help="manufacturer and model of a TAC")
    show.add_argument("tac", metavar="TAC", help="8 digits, or an IMEI (its first 8 digits)")
    add_config_argument(show)
    show.set_defaults(func=_show)


def _import(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    try:
        summary = state.import_tac(
            config, args.file, args.skip_bad, args.replace, progress=sys.stderr
        )
    except (TacImportError, StateError) as exc:
        return fail(f"import failed, nothing imported: {exc}")
    print(summary.render())
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    tac = args.tac.strip()[:8]
    try:
        info = state.tac_lookup(config, tac)
    except StateError as exc:
        return fail(str(exc))
    if info is None:
        where = state.where(config) if config.state.postgresql else config.tac.database
        return fail(f"TAC {tac} is not in {where}")
    print(f"{info.tac}  {info.manufacturer}  {info.model}")
    return EXIT_OK
