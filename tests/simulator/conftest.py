"""A real gateway (embedded default config, ports 0, state in a temporary directory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, load_config
from gateway.service import Gateway


def gateway_config(state_dir: Path, **overrides: str) -> GatewayConfig:
    return load_config(
        env={
            "EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:0",
            "EIR_METRICS_LISTEN": "127.0.0.1:0",
            "EIR_N5G_EIR_LISTEN": "http://127.0.0.1:0",
            "EIR_STATE_DIRECTORY": str(state_dir),
            **overrides,
        }
    )


async def running_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    gw = Gateway(config)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in running_gateway(gateway_config(tmp_path / "state")):
        yield gw


def port_of(gw: Gateway) -> int:
    (transport, _host, port) = gw.diameter_sockets[0]
    assert transport == "tcp"
    return port
