"""`eir-gateway` command line: one module per sub-command group.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-command(s)
and sets ``func`` (taking the parsed ``argparse.Namespace`` and returning an exit status) as the
parser default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules inside gateway.cli, registered in this order.
COMMAND_MODULES: tuple[str, ...] = ("run", "registry", "check", "lists", "tac", "simulate")


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
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    status: int = func(args)
    return status
