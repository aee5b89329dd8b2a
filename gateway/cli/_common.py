"""Helpers shared by the gateway's CLI modules: config loading and the exit-code convention.

Exit codes: 0 ok, 1 the operation failed (bad data, not found), 2 usage or configuration error;
messages go to stderr.
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import ConfigError, GatewayConfig, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
