"""`eir-gateway registry serve | import | check`: the reference IMEI registry (registry-api.yaml).

eir-gateway registry serve [--host 127.0.0.1] [--port 8700] [--database FILE]
                           [--token T ...] [--seed FILE ...]
eir-gateway registry import FILE [FILE ...] [--database FILE]
eir-gateway registry check IMEI [--database FILE | --url URL [--token T]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gateway.config import DEFAULT_CONFIG
from gateway.progress import Progress, ProgressPrinter
from registry_client.client import HttpRegistryClient
from registry_client.local import DeclarationFileError, LocalRegistry
from registry_client.model import RegistryUnavailable, RegistryVerdict
from registry_client.server import RegistryServer, server_ssl_context
from registry_client.settings import RegistrySettings
from registry_client.wire import InvalidImei, verdict_to_json

DEFAULT_DATABASE = RegistrySettings().database
# Next to the embedded default config, like it: `registry serve` works from any directory.
DEFAULT_SEED = str(DEFAULT_CONFIG.parent / "registry-declarations.json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("registry", help="reference IMEI registry (registry-api.yaml)")
    commands = parser.add_subparsers(dest="registry_command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="serve the local registry over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8700)
    serve.add_argument("--database", default=DEFAULT_DATABASE, help="SQLite file")
    serve.add_argument(
        "--token", action="append", default=[], help="accepted bearer token (repeatable)"
    )
    serve.add_argument(
        "--token-file", help="file of accepted bearer tokens, one per line (kept out of ps)"
    )
    serve.add_argument(
        "--seed",
        action="append",
        default=[],
        help=f"declaration file imported at start (repeatable; default {DEFAULT_SEED} "
        "when the database is empty)",
    )
    serve.add_argument("--max-age", type=int, default=3600, help="Cache-Control max-age (s)")
    serve.add_argument("--negative-max-age", type=int, default=300, help="max-age for unknown")
    serve.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    serve.add_argument("--tls-client-ca", help="require client certificates from this CA (mTLS)")
    serve.set_defaults(func=_serve)

    imp = commands.add_parser("import", help="import declarations/reports (JSON or CSV)")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--database", default=DEFAULT_DATABASE, help="SQLite file")
    imp.set_defaults(func=_import)

    check = commands.add_parser("check", help="registry verdict for one IMEI")
    check.add_argument("imei")
    check.add_argument("--database", default=DEFAULT_DATABASE, help="SQLite file (local)")
    check.add_argument("--url", help="ask a registry over HTTP instead of the local database")
    check.add_argument("--token", help="bearer token for --url")
    check.add_argument("--budget", type=float, default=5.0, help="seconds to wait with --url")
    check.set_defaults(func=_check)


def _serve(args: argparse.Namespace) -> int:
    tokens = list(args.token)
    try:
        if args.token_file:
            lines = Path(args.token_file).read_text(encoding="utf-8").splitlines()
            tokens += [t.strip() for t in lines if t.strip() and not t.startswith("#")]
        registry = LocalRegistry(args.database)
        seeds = args.seed or ([DEFAULT_SEED] if registry.is_empty() else [])
        if seeds:
            summary = registry.import_files(seeds)
            print(f"imported {summary.tacs} TACs, {summary.reports} reports", file=sys.stderr)
        context = None
        if args.tls_cert:
            context = server_ssl_context(args.tls_cert, args.tls_key, args.tls_client_ca)
    except (DeclarationFileError, OSError) as exc:
        print(f"eir-gateway registry serve: {exc}", file=sys.stderr)
        return 1
    server = RegistryServer(
        registry,
        tokens=tokens,
        host=args.host,
        port=args.port,
        max_age=args.max_age,
        negative_max_age=args.negative_max_age,
        ssl_context=context,
    )

    async def run() -> None:
        stop = asyncio.Event()
        received: list[str] = []
        loop = asyncio.get_running_loop()

        def on_signal(signum: signal.Signals) -> None:
            received.append(signum.name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await server.start()
        auth = "bearer tokens required" if tokens else "no authentication"
        print(f"registry serving {args.database} on {server.url} ({auth})", file=sys.stderr)
        try:
            await stop.wait()
            # An operator (or a supervisor's log) sees why it went away.
            print(f"registry stopping ({received[0]})", file=sys.stderr, flush=True)
        finally:
            await server.stop()
        print("registry stopped", file=sys.stderr, flush=True)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"eir-gateway registry serve: {exc}", file=sys.stderr)
        return 1
    finally:
        registry.close_sync()
    return 0


def _import(args: argparse.Namespace) -> int:
    registry = LocalRegistry(args.database)
    # A bar with rate and ETA on a terminal, a line per 10% otherwise (gateway.progress).
    printer = ProgressPrinter(sys.stderr, "registry import")
    bars: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(Progress(total, printer))
        bars[0].advance(done, done)

    try:
        summary = registry.import_files(args.files, progress)
    except DeclarationFileError as exc:
        print(f"eir-gateway registry import: {exc} (nothing imported)", file=sys.stderr)
        return 1
    finally:
        registry.close_sync()
    if bars:
        bars[0].finish()
    print(
        f"imported {summary.tacs} TACs and {summary.reports} reports into {args.database}"
        f" ({summary.changed} new or changed)"
    )
    return 0


def _print_verdict(verdict: RegistryVerdict) -> None:
    body = verdict_to_json(verdict)
    body["origin"] = verdict.origin.value
    body["age_seconds"] = round(max(0.0, time.time() - verdict.fetched_at), 3)
    print(json.dumps(body, indent=2))


def _check(args: argparse.Namespace) -> int:
    if args.url:
        settings = RegistrySettings(
            backend="http", url=args.url, token=args.token, budget=args.budget
        )

        async def ask() -> RegistryVerdict:
            client = HttpRegistryClient(settings)
            try:
                return await client.check(args.imei)
            finally:
                await client.close()

        try:
            verdict = asyncio.run(ask())
        except RegistryUnavailable as exc:
            print(f"eir-gateway registry check: registry unavailable: {exc}", file=sys.stderr)
            return 1
    else:
        registry = LocalRegistry(args.database)
        try:
            if registry.is_empty():
                print(
                    f"note: {args.database} is empty (eir-gateway registry import FILE)",
                    file=sys.stderr,
                )
            verdict = registry.verdict(args.imei)
        except InvalidImei as exc:
            print(f"eir-gateway registry check: {exc}", file=sys.stderr)
            return 2
        finally:
            registry.close_sync()
    _print_verdict(verdict)
    return 0
