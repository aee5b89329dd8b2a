"""`eir-gateway run`: serve S13 until SIGTERM/SIGINT (SIGHUP reloads lists and policy).

Start-up failures end with one line on stderr and no traceback: a bad input file or database
(TAC file, list CSV, registry seed, corrupt SQLite file) exits 2 like a configuration error,
since the operator has to fix a file; an environment problem (address in use, no SCTP in the
kernel, a state directory that cannot be created) exits 1.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import ssl

from diameter.errors import DiameterError
from gateway import aio, logs
from gateway.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_argument,
    config_or_none,
    database_problem,
    databases,
    fail,
)
from gateway.config import GatewayConfig
from gateway.lists import ListError
from gateway.service import Gateway
from gateway.tac import TacImportError
from registry_client.local import DeclarationFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the gateway (S13 server, metrics and health endpoints)",
        description="Serve Diameter S13 on the configured listeners (default tcp://127.0.0.1:3868)"
        " and metrics on 127.0.0.1:9868, with state under ./var/.",
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


def _state_directory_problem(config: GatewayConfig) -> str | None:
    # The service creates it too; done here first, the error names the key that chose it.
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return (f"{config.where('state.directory')}: cannot create {config.state_dir}: "
                f"{exc.strerror or exc}")
    return None


def run(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    logs.configure(config.logging.level, config.logging.format)
    log = logging.getLogger("eir.gateway")

    def stop(message: str, code: int) -> int:
        log.error("%s", message)
        return fail(message, code)

    problem = _state_directory_problem(config)
    if problem is not None:
        return stop(f"cannot start: {problem}", EXIT_FAILED)
    problem = database_problem(config)
    if problem is not None:
        return stop(f"cannot start: {problem}", EXIT_USAGE)
    log.info("event loop: %s", aio.loop_name())
    try:
        aio.run(Gateway(config).serve())
    except (TacImportError, ListError, DeclarationFileError) as exc:
        # Their messages name the file and the line or row.
        return stop(f"cannot start: bad input file: {exc}", EXIT_USAGE)
    except sqlite3.DatabaseError as exc:
        # Found after the pre-flight check (damage past the header): sqlite3 names no file.
        files = ", ".join(str(path) for _, path in databases(config))
        return stop(f"cannot start: database error: {exc} (one of {files})", EXIT_USAGE)
    except ssl.SSLError as exc:
        # Not caught when the configuration was loaded (a passphrase-protected key, a file
        # changed since): ssl's "[SSL] PEM lib" names no file, so name the keys and paths.
        t = config.transport
        return stop(
            f"cannot start: TLS: {exc} ({config.where('diameter.tls_cert')} = {t.tls_cert}, "
            f"diameter.tls_key = {t.tls_key})", EXIT_USAGE,
        )
    except (DiameterError, OSError) as exc:
        # Cannot bind, no SCTP in the kernel, TLS files unreadable: the environment.
        return stop(f"cannot start: {exc}", EXIT_FAILED)
    return EXIT_OK

