"""The operations endpoints while the gateway starts: alive at once, ready once it serves."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway import service
from gateway.classify import Classifier
from gateway.config import load_config
from gateway.logs import JsonFormatter
from gateway.service import Gateway
from tests.e2e.conftest import StartGateway, connect_mme, gateway_env, metric_value, scrape


async def test_healthz_alive_and_readyz_503_while_stores_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loading = threading.Event()
    release = threading.Event()
    real = Classifier.from_config

    class SlowLoad:
        # Stands in for the service's Classifier (a compiled class takes no new attributes).
        @staticmethod
        def from_config(*args: Any, **kwargs: Any) -> Classifier:
            loading.set()
            assert release.wait(10), "the test never released the store load"
            return real(*args, **kwargs)

    monkeypatch.setattr(service, "Classifier", SlowLoad)
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


async def test_sighup_reload_applies_policy_names_restart_keys_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for key, value in gateway_env(tmp_path / "var").items():
        monkeypatch.setenv(key, value)
    source = Path(__file__).resolve().parents[2] / "config"
    config_file = tmp_path / "gateway.toml"
    text = (source / "gateway.toml").read_text()
    config_file.write_text(text)
    for name in ("tac-sample.txt", "lists-sample.csv", "registry-declarations.json"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    gateway = Gateway(load_config(config_file))
    await gateway.start()
    try:
        assert gateway.classifier is not None
        assert gateway.classifier.policy.monitor_mode is False
        edited = text.replace("monitor_mode = false", "monitor_mode = true")
        edited = edited.replace('level = "INFO"', 'level = "DEBUG"')
        assert edited.count("true") > text.count("true") and 'level = "DEBUG"' in edited
        config_file.write_text(edited)
        with caplog.at_level("WARNING", logger="eir.gateway"):
            await gateway.reload()
        assert gateway.classifier.policy.monitor_mode is True  # applied
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == ["reload: logging.level changed; applied at the next restart"]
        _, metrics = await scrape(gateway)
        assert 'eir_config_reloads_total{outcome="ok"} 1.0' in metrics
        assert "eir_config_last_reload_success_timestamp_seconds 0.0" not in metrics
        assert "eir_lists_import_failed 0.0" in metrics
        config_file.write_text(edited.replace("monitor_mode = true", "monitor_mode = maybe"))
        await gateway.reload()
        assert gateway.classifier.policy.monitor_mode is True  # the old policy stays
        _, metrics = await scrape(gateway)
        assert 'eir_config_reloads_total{outcome="refused"} 1.0' in metrics
    finally:
        await gateway.stop()


async def test_one_structured_line_per_decision(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway, origin_host="mme7.test")
    try:
        with caplog.at_level("DEBUG", logger="eir.s13"):
            answer = await mme.check("35693803564380", imsi="001010123456789")
    finally:
        await mme.close()
    (record,) = [r for r in caplog.records if r.name == "eir.s13"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["session_id"] == answer.get("Session-Id")
    assert fields["origin_host"] == "mme7.test"
    assert fields["imei"] == "35693803564380" and fields["imsi"] == "00101**********"
    assert fields["status"] == "BLACKLISTED" and fields["decisive"] == "blacklisted"
    assert "001010123456789" not in record.getMessage()  # IMSI masked (DESIGN.md §6)
    # logging.format = "json": the fields are keys of the line, not words of its message.
    line = json.loads(JsonFormatter().format(record))
    assert line["imei"] == "35693803564380" and line["origin_host"] == "mme7.test"
    assert line["reasons"] == ["blacklisted"] and line["level"] == "debug"


async def test_unknown_command_codes_share_one_metric_label(start_gateway: StartGateway) -> None:
    # 2**24 command codes exist: a label per code would let any peer grow the metrics (and the
    # memory behind them) without bound (DESIGN.md §6: bounded labels).
    from tests.e2e.test_conformance_edges import ecr, open_peer

    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        for code in range(700_000, 700_040):
            answer = await peer.ask(ecr(command_code=code))
            assert answer.get("Result-Code") == 3001
    finally:
        peer.close()
    _, text = await scrape(gateway)
    assert metric_value(
        text, "diameter_messages_total", direction="in", command="unknown", result=""
    ) == 40
    assert metric_value(
        text, "diameter_messages_total", direction="out", command="unknown", result="3001"
    ) == 40
    # No label value names one of the codes (a sample's value may hold those digits by chance).
    assert '"700000"' not in text and '"700039"' not in text
