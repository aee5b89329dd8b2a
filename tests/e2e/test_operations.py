"""The operations endpoints while the gateway starts: alive at once, ready once it serves."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway import service
from gateway.classify import Classifier
from gateway.config import load_config
from gateway.service import Gateway
from tests.e2e.conftest import gateway_env, scrape


async def test_healthz_alive_and_readyz_503_while_stores_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loading = threading.Event()
    release = threading.Event()
    real = Classifier.from_config

    def slow_from_config(*args: Any, **kwargs: Any) -> Classifier:
        loading.set()
        assert release.wait(10), "the test never released the store load"
        return real(*args, **kwargs)

    monkeypatch.setattr(service.Classifier, "from_config", slow_from_config)
    gateway = Gateway(load_config(None, env=gateway_env(tmp_path / "var")))
    starting = asyncio.create_task(gateway.start())
    try:
        await asyncio.wait_for(asyncio.to_thread(loading.wait, 10), 15)
        assert gateway.metrics_port is not None
        # A big TAC file or list can take a while: the process answers meanwhile.
        assert (await scrape(gateway, "/healthz"))[0] == 200
        status, body = await scrape(gateway, "/readyz")
        assert status == 503 and '"classifier_loaded": false' in body
        assert (await scrape(gateway, "/metrics"))[0] == 200
        release.set()
        await asyncio.wait_for(starting, 15)
        assert (await scrape(gateway, "/readyz"))[0] == 200
    finally:
        release.set()
        if not starting.done():
            await asyncio.wait_for(starting, 15)
        await gateway.stop()
