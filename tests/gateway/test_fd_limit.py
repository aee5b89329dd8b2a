"""The open-file limit raised at start (gateway/fd_limit.py): real setrlimit in child processes
started with a low soft limit, and a real `eir-gateway run`'s /proc limits."""

from __future__ import annotations

import dataclasses
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.fd_limit import RESERVE, need
from tests.gateway_process import process_env

REPO = Path(__file__).resolve().parents[2]
_, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
needs_room = pytest.mark.skipif(
    HARD != resource.RLIM_INFINITY and HARD < 4096,
    reason=f"the hard open-files limit here ({HARD}) leaves no room to lower and raise",
)


def limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


PROBE = """
import logging, resource, sys
from gateway import fd_limit
from gateway.config import load_config
logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s", level=logging.INFO)
config = load_config(None, env={"EIR_STATE_DIRECTORY": sys.argv[1]} | dict(
    a.split("=", 1) for a in sys.argv[2:]))
print("soft", fd_limit.apply(config, logging.getLogger("t")))
print("now", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def probe(tmp_path: Path, soft: int, hard: int, *env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path), *env], cwd=REPO, capture_output=True,
        text=True, timeout=60, preexec_fn=lambda: limited(soft, hard),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_need_of_the_embedded_defaults(tmp_path: Path) -> None:
    config = load_config(None, env={"EIR_STATE_DIRECTORY": str(tmp_path)})
    needed = need(config)
    assert needed is not None
    assert needed.total == (config.transport.max_connections
                            + config.n5g_eir.max_connections
                            + config.registry.max_connections + RESERVE)
    # Above systemd's default soft limit: the reason the soft limit is raised at all.
    assert needed.total > 1024


def test_need_without_n5g_eir_and_with_an_unbounded_limit(tmp_path: Path) -> None:
    config = load_config(None, env={"EIR_STATE_DIRECTORY": str(tmp_path)})
    without = dataclasses.replace(
        config, n5g_eir=dataclasses.replace(config.n5g_eir, listen=()))
    needed = need(without)
    assert needed is not None
    assert "n5g_eir.max_connections" not in dict(needed.parts)
    unbounded = dataclasses.replace(
        config, transport=dataclasses.replace(config.transport, max_connections=0))
    assert need(unbounded) is None


@needs_room
def test_soft_limit_raised_to_the_hard_one(tmp_path: Path) -> None:
    out = probe(tmp_path, 512, 4096)
    assert "raised from 512 to 4096" in out
    assert "now 4096" in out
    assert "WARNING" not in out  # 4,096 covers the embedded defaults' need


@needs_room
def test_a_hard_limit_below_the_need_is_said_naming_the_keys(tmp_path: Path) -> None:
    out = probe(tmp_path, 512, 1500)
    assert "now 1500" in out
    assert "WARNING open files limit 1500 is below" in out
    assert "diameter.max_connections 1024" in out
    assert "n5g_eir.max_connections 1024" in out
    fewer = probe(tmp_path, 512, 1500, "EIR_DIAMETER_MAX_CONNECTIONS=500",
                  "EIR_N5G_EIR_MAX_CONNECTIONS=500")
    assert "WARNING" not in fewer


@needs_room
def test_an_unbounded_connection_limit_is_said(tmp_path: Path) -> None:
    out = probe(tmp_path, 2048, 2048, "EIR_N5G_EIR_MAX_CONNECTIONS=0")
    assert "WARNING a connection limit is 0" in out


@needs_room
def test_run_raises_its_soft_limit(tmp_path: Path) -> None:
    """The real `eir-gateway run`, started with systemd's soft limit of 1,024."""
    from tests.e2e.test_run_process import free_port, wait_for_port

    diameter_port, metrics_port = free_port(), free_port()
    env = process_env(diameter_port, metrics_port, tmp_path / "var")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run"], cwd=REPO, env=env,
        stderr=subprocess.PIPE, text=True, preexec_fn=lambda: limited(1024, 4096),
    )
    try:
        wait_for_port(diameter_port)
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            time.sleep(0.1)
    assert process.returncode == 0, err
    assert "raised from 1024 to 4096" in err
