"""Helpers shared by the gateway's CLI modules: config loading and the exit-code convention.

Exit codes: 0 ok, 1 the operation failed (bad data, not found), 2 usage or configuration error,
3 ``simulate``: the gateway ended the run early (DPR, connection closed), 141 (128 + SIGPIPE, as
a shell reports a tool killed by SIGPIPE) when stdout was closed by its reader (``| head``);
messages go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
from pathlib import Path
from urllib.parse import quote

from gateway.config import ConfigError, GatewayConfig, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CUT_SHORT = 3
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="gateway TOML file (default: the embedded config)"
    )


def config_or_none(args: argparse.Namespace) -> GatewayConfig | None:
    """Load the configuration, printing the error and returning None when it is invalid."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"eir-gateway: configuration error: {exc}", file=sys.stderr)
        return None


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"eir-gateway: {message}", file=sys.stderr)
    return code


def databases(config: GatewayConfig) -> list[tuple[str, Path]]:
    """(key, file) of the SQLite databases this configuration uses."""
    out: list[tuple[str, Path]] = []
    if not config.state.postgresql:
        out += [("tac.database", config.tac.database), ("lists.database", config.lists.database)]
        if config.observations.enabled:
            out.append(("observations.database", config.observations.database))
    if config.registry.backend == "local":
        out.append(("registry.database", Path(config.registry.database)))
    elif config.registry.backend == "http" and config.registry.mirror:
        out.append(("registry.mirror_database", Path(config.registry.mirror_database)))
    return out


def database_problem(config: GatewayConfig) -> str | None:
    """What is wrong with an existing database file, naming it and its key; None when all open.

    sqlite3's own error ("file is not a database") names no file; reading the schema version
    (the header page only, so cheap on a 10-million-entry list) finds a corrupt or foreign file.
    """
    for dotted, path in databases(config):
        if not path.is_file():
            continue  # created when missing
        try:
            uri = f"file:{quote(str(path.resolve()))}?mode=ro"
            connection = sqlite3.connect(uri, uri=True)
            try:
                connection.execute("PRAGMA schema_version").fetchone()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            return f"{config.where(dotted)}: {path}: {exc}"
    return None
