"""The environment of a gateway run as a process by a test or a bench (``python -m gateway.cli
run``): the embedded default configuration, listening on the given loopback ports (N5g-eir on a
port of its own choosing), its state in ``state``, and ``overrides`` (more ``EIR_*``)."""

from __future__ import annotations

import os
from pathlib import Path


def process_env(
    diameter_port: int, metrics_port: int, state: str | Path, **overrides: str
) -> dict[str, str]:
    env = dict(
        os.environ,
        EIR_DIAMETER_LISTEN=f"tcp://127.0.0.1:{diameter_port}",
        EIR_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        EIR_N5G_EIR_LISTEN="http://127.0.0.1:0",
        EIR_STATE_DIRECTORY=str(state),
    )
    env.update(overrides)  # any of the above included (bench/hostile_http.py: N5g-eir's port)
    return env
