"""`eir-gateway api`: the provisioning and query API on its own, without S13.

The same API the gateway serves on ``[api] listen``, over the same stores: run it beside a
gateway (both see the lists database; each picks the other's changes up by its version poll, at
once on PostgreSQL's NOTIFY hint) or on a provisioning host. Needs at least one token (``api.tokens`` or ``api.token_file``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3

from gateway import aio, logs, registry_source
from gateway.api.app import start_api
from gateway.classify import Classifier
from gateway.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_argument,
    config_or_none,
    database_problem,
    fail,
)
from gateway.config import GatewayConfig
from gateway.list_updates import follow_lists
from gateway.lists import ListError
from gateway.tac import TacImportError

log = logging.getLogger("eir.api")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api", help="serve the provisioning and query API only (no S13)",
        description="Serve the provisioning API on api.listen until SIGTERM/SIGINT.",
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


async def serve(config: GatewayConfig) -> None:
    registry = registry_source.build(config.registry)
    start = getattr(registry, "start", None)
    if start is not None:
        await start()
    classifier = await asyncio.to_thread(Classifier.from_config, config, registry)
    lists = classifier.lists

    async def changed() -> None:
        await asyncio.to_thread(lists.poll)

    api = await start_api(config, classifier, changed)
    if api is None:
        raise SystemExit(fail("nothing to serve: api.listen is empty or no token is configured",
                              EXIT_USAGE))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Changes by others (CLI, gateways, their import files) show in checks within a poll, or
    # at once on PostgreSQL's NOTIFY hint.
    following = asyncio.create_task(follow_lists(
        lists, config.lists.poll_interval or 5.0,
        lambda version: log.info("operator lists changed, now version %s", version),
    ))
    try:
        await stop.wait()
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await api.stop()
        if registry is not None:
            await registry.close()
        if lists.store is not None:
            lists.store.close()


def run(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    logs.configure(config.logging.level, config.logging.format)
    problem = database_problem(config)
    if problem is not None:
        return fail(f"cannot start: {problem}", EXIT_USAGE)
    try:
        aio.run(serve(config))
    except (TacImportError, ListError) as exc:
        return fail(f"cannot start: bad input file: {exc}", EXIT_USAGE)
    except (sqlite3.Error, OSError) as exc:
        return fail(f"cannot start: {exc}", EXIT_FAILED)
    return EXIT_OK
