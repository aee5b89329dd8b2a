"""Backend choice and the `eir-gateway registry` commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gateway import registry_source
from gateway.cli import main
from gateway.cli import registry as registry_cli
from registry_client.client import HttpRegistryClient
from registry_client.factory import build_source
from registry_client.local import LocalRegistry
from registry_client.model import VerdictOrigin
from registry_client.server import RegistryServer
from registry_client.settings import RegistrySettings
from tests.registry.conftest import NON_PARTICIPATING, OUTSIDE, SAMPLE, STOLEN, TOKEN

# The registry commands alone (other command modules of the dispatcher are not needed here).
STANDALONE = (
    "import argparse, sys\n"
    "from gateway.cli import registry\n"
    "parser = argparse.ArgumentParser(prog='eir-gateway')\n"
    "registry.register(parser.add_subparsers())\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eir-gateway")
    registry_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


async def test_build_source_backends(tmp_path: Path) -> None:
    assert build_source(RegistrySettings(backend="none")) is None
    local = build_source(
        RegistrySettings(database=str(tmp_path / "r.sqlite"), seed_files=(str(SAMPLE),))
    )
    assert isinstance(local, LocalRegistry)
    verdict = await local.check(STOLEN)
    assert verdict.origin is VerdictOrigin.LOCAL and verdict.active_reports
    await local.close()
    http = build_source(RegistrySettings(backend="http"), metrics_registry=CollectorRegistry())
    assert isinstance(http, HttpRegistryClient)
    await http.close()
    with pytest.raises(ValueError, match="backend"):
        build_source(RegistrySettings(backend="ldap"))


async def test_gateway_slot_delegates(tmp_path: Path) -> None:
    settings = RegistrySettings(database=str(tmp_path / "g.sqlite"), seed_files=(str(SAMPLE),))
    source = registry_source.build(settings)
    assert isinstance(source, LocalRegistry)
    assert source.cached(OUTSIDE) is not None
    await source.close()
    assert registry_source.build(RegistrySettings(backend="none")) is None


async def test_two_http_sources_on_the_default_metrics_registry() -> None:
    first = build_source(RegistrySettings(backend="http"))
    second = build_source(RegistrySettings(backend="http"))
    assert first is not None and second is not None
    await first.close()
    await second.close()


def test_cli_import_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the eir-gateway dispatcher (COMMAND_MODULES holds "registry")."""
    db = str(tmp_path / "cli.sqlite")
    assert main(["registry", "import", str(SAMPLE), "--database", db]) == 0
    out, err = capsys.readouterr()
    assert "3 TACs and 3 reports" in out
    # Not a terminal: progress as lines, the last at 100% (gateway.progress).
    assert err.splitlines()[-1].startswith("registry import: 100.0% 6 rows")
    assert main(["registry", "check", OUTSIDE + "00", "--database", db]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["imei"], shown["status"], shown["origin"]) == (
        OUTSIDE,
        "not_manufactured",
        "local",
    )
    assert main(["registry", "check", "123", "--database", db]) == 2


def test_cli_import_error_names_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.sqlite")
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,tac,participating\ntac,12345678,true\ntac,87654321,perhaps\n")
    assert run_cli(["registry", "import", str(SAMPLE), str(bad), "--database", db]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: line 3: participating" in err and "nothing imported" in err
    registry = LocalRegistry(db)
    assert registry.is_empty()
    registry.close_sync()


async def test_cli_check_over_http(
    server: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["registry", "check", NON_PARTICIPATING, "--url", server.url, "--token", TOKEN]
    assert await asyncio.to_thread(run_cli, argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "unknown" and shown["origin"] == "online"
    argv[-1] = "wrong"
    assert await asyncio.to_thread(run_cli, argv) == 1


async def test_cli_serve_until_sigterm(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# accepted tokens\nfile-token\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STANDALONE, "registry", "serve", "--port", "0",
        "--database", str(tmp_path / "served.sqlite"), "--seed", str(SAMPLE),
        "--token-file", str(tokens),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        url = ""
        async with asyncio.timeout(20):
            while not url:
                line = (await process.stderr.readline()).decode()
                assert line, "server exited before serving"
                if " on http://" in line:
                    url = line.split(" on ")[1].split()[0]
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer file-token"}) as http:
            async with http.get(f"{url}/v1/imeis/{STOLEN}") as resp:
                assert resp.status == 200 and (await resp.json())["reports"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
