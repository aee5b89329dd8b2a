"""`eir-gateway run`: serve S13 until SIGTERM/SIGINT (SIGHUP reloads lists and policy)."""

from __future__ import annotations

import argparse
import logging

from gateway import aio, logs
from gateway.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_argument,
    config_or_none,
    fail,
)
from gateway.service import Gateway


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the gateway (S13 server, metrics and health endpoints)",
        description="Serve Diameter S13 on the configured listeners (default tcp://127.0.0.1:3868)"
        " and metrics on 127.0.0.1:9868, with state under ./var/.",
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    logs.configure(config.logging.level, config.logging.format)
    log = logging.getLogger("eir.gateway")
    log.info("event loop: %s", aio.loop_name())
    try:
        aio.run(Gateway(config).serve())
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return fail(f"cannot start: {exc}", EXIT_FAILED)
    return EXIT_OK
