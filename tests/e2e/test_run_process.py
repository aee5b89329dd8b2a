"""`eir-gateway run` as a process: start on the embedded defaults, SIGHUP, SIGTERM, config errors."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diameter.application import Application
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from diameter.node import Node
from diameter.settings import LocalIdentity, PeerSettings
from diameter.transport import Client
from tests.e2e.conftest import Mme
from tests.gateway_process import process_env

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


async def one_check(port: int, imei: str) -> int:
    node = Node(
        PeerSettings(identity=LocalIdentity(origin_host="mme.test", origin_realm="test")),
        [Application(S13_APPLICATION_ID, {}, vendor_id=VENDOR, name="S13")],
    )
    client = await Client.connect(node, "127.0.0.1", port)
    try:
        answer = await client.request(Mme(client, node).micr(imei), timeout=5.0)
    finally:
        await client.close()
    status: int = answer.get("Equipment-Status")
    return status


def gateway_command() -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "run"]


def test_run_serves_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    diameter_port, metrics_port = free_port(), free_port()
    env = process_env(diameter_port, metrics_port, tmp_path / "var")
    process = subprocess.Popen(
        gateway_command(), cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_port(diameter_port)
        wait_for_port(metrics_port)
        # A real exchange with the process (uvloop when installed).
        assert asyncio.run(one_check(diameter_port, "35693803564380")) == 1
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None  # SIGHUP reloads, it does not stop
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "lists and policy reloaded" in err
    assert "EIR gateway stopped" in err
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"event loop: {loop}" in err
    assert (tmp_path / "var" / "lists.sqlite").exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[diameter]\nwatchdog_seconds = 2\n", "diameter.watchdog_seconds"),
        ('[diameter]\nlisten = ["tcp://999.0.0.1:3868"]\n', "diameter.listen"),
        ("[policy]\nbogus = true\n", "policy.bogus"),
    ],
)
def test_run_refuses_a_bad_config_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    result = subprocess.run(
        [*gateway_command(), "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert str(config) in result.stderr and key in result.stderr, result.stderr
