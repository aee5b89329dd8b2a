"""`eir-gateway` command line: one module per sub-command group.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-command(s)
and sets ``func`` (taking the parsed ``argparse.Namespace`` and returning an exit status) as the
parser default.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gateway.cli._common import EXIT_BROKEN_PIPE

# Sub-command modules inside gateway.cli, registered in this order.
COMMAND_MODULES: tuple[str, ...] = (
    "run", "api", "registry", "check", "lists", "tac", "state", "simulate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eir-gateway",
        description="Equipment Identity Register gateway (Diameter S13, TS 29.272).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"gateway.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 2
        status: int = func(args)
        sys.stdout.flush()  # here, not at interpreter exit, where the error cannot be caught
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools killed by SIGPIPE do.
        # stdout is pointed at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return status
