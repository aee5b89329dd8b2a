"""`eir-gateway run`: serve S13 until SIGTERM/SIGINT (SIGHUP reloads lists and policy).

With ``--workers N`` (or ``process.workers``) above 1 this process supervises N workers
(:mod:`gateway.supervisor`), each started as ``run --worker-spec`` with the parent's sockets.

Start-up failures end with one line on stderr and no traceback: a bad input file or database
(TAC file, list CSV, registry seed, corrupt SQLite file) exits 2 like a configuration error,
since the operator has to fix a file; an environment problem (address in use, no SCTP in the
kernel, a state directory that cannot be created) exits 1.

A gateway (or worker) that stopped cleanly ends the process at once (``os._exit``): every store
is flushed and closed by then, and tearing the interpreter down object by object took another
0.5-1.1 s under load, past the DPA timeout that bounds the stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sqlite3
import ssl
import sys
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, NoReturn

from diameter.errors import DiameterError
from diameter.settings import ListenEndpoint
from gateway import aio, fd_limit, logs
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
from gateway.config import ConfigError, GatewayConfig, with_workers
from gateway.lists import ListError
from gateway.service import Gateway
from gateway.state import StateError
from gateway.supervisor import Supervisor, WorkerFailed
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
    parser.add_argument(
        "--workers",
        metavar="N",
        help="worker processes sharing the listeners under one supervising process: a number"
        ' or "auto" (the cores this process may use); overrides process.workers',
    )
    # Set by the supervisor when it starts a worker (see gateway.supervisor): not for operators.
    parser.add_argument("--worker-spec", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _exit_now(status: int) -> NoReturn:
    """End the process without the interpreter's teardown (module by module, with garbage
    collections): all that is left to write is the log."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _state_directory_problem(config: GatewayConfig) -> str | None:
    # The service creates it too; done here first, the error names the key that chose it.
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return (f"{config.where('state.directory')}: cannot create {config.state_dir}: "
                f"{exc.strerror or exc}")
    return None


def _worker(config: GatewayConfig, spec: dict[str, Any]) -> Coroutine[Any, Any, None]:
    """One worker of a supervisor: its listeners and operations socket are the parent's."""
    endpoints = tuple(
        ListenEndpoint(transport, host, port, tuple(extra))
        for transport, host, port, extra in spec["listen"]
    )
    config = replace(config, transport=replace(config.transport, listen=endpoints))
    if spec["api"] is None:
        # One API, on the socket the supervisor gave worker 0 (see gateway.supervisor).
        config = replace(config, api=replace(config.api, host=None))

    def lists_written() -> None:
        """Worker 0's API wrote the lists: the supervisor has the other workers reload."""
        if os.getppid() == spec["parent_pid"]:  # never signal whoever adopted an orphan
            os.kill(spec["parent_pid"], signal.SIGUSR1)

    gateway = Gateway(
        config,
        listeners=[socket.socket(fileno=fd) for fd in spec["listeners"]],
        operations_socket=socket.socket(fileno=spec["operations"]),
        n5g_eir_listeners=[socket.socket(fileno=fd) for fd in spec["n5g_eir_listeners"]],
        api_socket=None if spec["api"] is None else socket.socket(fileno=spec["api"]),
        lists_written=lists_written,
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        parent = spec["parent"]
        reloads: set[asyncio.Task[None]] = set()

        async def lists_changed() -> None:
            try:
                await gateway.lists_changed()
            except Exception:  # as a failed poll: logged, the next poll tries again
                logging.getLogger("eir.gateway").exception("reloading the operator lists failed")

        def reload_lists() -> None:  # SIGUSR1 from the supervisor: another worker's API wrote
            task = loop.create_task(lists_changed())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        # Before the worker is ready: the supervisor signals only ready workers.
        loop.add_signal_handler(signal.SIGUSR1, reload_lists)

        def parent_gone() -> None:  # the pipe's other end closed: the supervisor exited
            loop.remove_reader(parent)
            logging.getLogger("eir.gateway").error("the supervisor is gone: stopping")
            os.kill(os.getpid(), signal.SIGTERM)

        loop.add_reader(parent, parent_gone)
        await gateway.serve()

    return serve()


def run(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    spec = json.loads(args.worker_spec) if args.worker_spec else None
    if args.workers is not None and spec is None:
        try:
            config = with_workers(config, args.workers)
        except ConfigError as exc:
            return fail(f"configuration error: {exc}", EXIT_USAGE)
    logs.configure(
        config.logging.level, config.logging.format, None if spec is None else spec["index"]
    )
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
    supervise = spec is None and config.process.workers > 1
    if spec is None:  # workers inherit the limit raised here
        fd_limit.apply(config, log)
    if not supervise:
        log.info("event loop: %s", aio.loop_name())
    try:
        if supervise:
            # The parent only supervises: asyncio's own loop (uvloop is for the workers).
            asyncio.run(Supervisor(config, config.process.workers).serve())
        elif spec is not None:
            aio.run(_worker(config, spec))
        else:
            aio.run(Gateway(config).serve())
        if not supervise:
            _exit_now(EXIT_OK)
    except WorkerFailed as exc:
        # The worker printed why; a bad file (status 2) stays a configuration error.
        return stop(f"cannot start: {exc}", exc.status if exc.status > 0 else EXIT_FAILED)
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
    except (DiameterError, OSError, StateError) as exc:
        # Cannot bind, no SCTP in the kernel, TLS files unreadable, PostgreSQL unreachable
        # (named by its DSN): the environment.
        return stop(f"cannot start: {exc}", EXIT_FAILED)
    return EXIT_OK
