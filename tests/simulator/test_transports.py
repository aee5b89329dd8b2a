"""The simulator over TLS (RFC 6733 §13, certificates made for the test) against the real
gateway. Over SCTP: tests/sctp/guest/test_gateway.py, in a kernel with SCTP."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.service import Gateway
from gateway.simulator.pcap import split_messages
from gateway.simulator.runner import SimulatorSettings, simulate
from gateway.simulator.traffic import Check

OPENSSL = shutil.which("openssl")
CHECKS = [
    Check("35693803564380", expected="BLACKLISTED"),
    Check("35209900000000", expected="WHITELISTED"),
]


def _certificate(directory: Path) -> tuple[str, str]:
    cert, key = directory / "eir.crt", directory / "eir.key"
    assert OPENSSL is not None
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=30,
    )
    return str(cert), str(key)


async def _gateway(tmp_path: Path, env: dict[str, str]) -> Gateway:
    base = {
        "EIR_METRICS_LISTEN": "127.0.0.1:0",
        "EIR_N5G_EIR_LISTEN": "http://127.0.0.1:0",
        "EIR_STATE_DIRECTORY": str(tmp_path / "state"),
    }
    gw = Gateway(load_config(env=base | env))
    await gw.start()
    return gw


@pytest.fixture
async def tls_gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, str]]:
    if OPENSSL is None:
        pytest.skip("needs the openssl CLI to make a test certificate")
    cert, key = _certificate(tmp_path)
    gw = await _gateway(
        tmp_path,
        {
            "EIR_DIAMETER_LISTEN": "tls://127.0.0.1:0",
            "EIR_DIAMETER_TLS_CERT": cert,
            "EIR_DIAMETER_TLS_KEY": key,
        },
    )
    try:
        yield gw, cert
    finally:
        await gw.stop()


async def test_tls(tls_gateway: tuple[Gateway, str]) -> None:
    gw, cert = tls_gateway
    ((transport, _, port),) = gw.diameter_sockets
    assert transport == "tls"
    settings = SimulatorSettings(
        port=port, transport="tls", tls_ca=cert, tls_server_name="localhost", window=4,
        count=20, capture=True, max_duration=30.0,
    )
    report, captures = await simulate(settings, CHECKS)
    assert report.ok, report.render_text()
    assert report.stats.outcomes == {"BLACKLISTED": 10, "WHITELISTED": 10}
    # The capture holds the clear-text Diameter messages, not TLS records.
    (capture,) = captures
    sent = split_messages(b"".join(d for _, out, d in capture.records if out))
    assert [m[5:8] for m in sent].count((324).to_bytes(3, "big")) == 20
    assert sent[0][5:8] == (257).to_bytes(3, "big")  # CER first (RFC 6733 §5.3)


async def test_tls_untrusted_certificate_fails(tls_gateway: tuple[Gateway, str]) -> None:
    gw, _ = tls_gateway
    port = gw.diameter_sockets[0][2]
    settings = SimulatorSettings(port=port, transport="tls", count=1, connect_timeout=5.0)
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError: no CA given, self-signed
        await simulate(settings, CHECKS)
