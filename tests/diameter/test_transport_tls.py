"""Diameter over TLS/TCP (RFC 6733 §2.1, §13; port 5868), with certificates made for the test."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from diameter.settings import ListenEndpoint, TransportSettings
from diameter.transport import Client, ClientClosed, Server, client_ssl_context, server_ssl_context
from tests.diameter.test_peer_helpers import EIR_HOST, ecr_message, eir_node, mme_node

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl CLI to make test certificates")


def _self_signed(directory: Path, name: str, subject_alt: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    assert OPENSSL is not None
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName={subject_alt}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    directory = tmp_path_factory.mktemp("tls")
    return {
        "server": _self_signed(directory, "localhost", "DNS:localhost,IP:127.0.0.1"),
        "client": _self_signed(directory, "mme.example.net", "DNS:mme.example.net"),
    }


def _settings(certs: dict[str, tuple[str, str]], verify_client: bool) -> TransportSettings:
    cert, key = certs["server"]
    return TransportSettings(
        listen=(ListenEndpoint("tls", "127.0.0.1", 0),),
        tls_cert=cert,
        tls_key=key,
        tls_ca=certs["client"][0] if verify_client else None,
        tls_verify_client=verify_client,
    )


async def test_tls_cer_cea_and_request(certs: dict[str, tuple[str, str]]) -> None:
    settings = _settings(certs, verify_client=False)
    server = Server(eir_node(), settings)
    await server.start()
    try:
        ((transport, _, port),) = server.sockets
        assert transport == "tls"
        context = client_ssl_context(ca=certs["server"][0])
        client = await Client.connect(
            mme_node(), "127.0.0.1", port, transport="tls", ssl_context=context
        )
        assert client.info is not None and client.info.origin_host == EIR_HOST
        tls = client.connection.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3")
        assert (await client.request(ecr_message(end_to_end=0))).get("Result-Code") == 2001
        await client.close()
    finally:
        await server.stop(timeout=1.0)


async def test_tls_client_certificate_required(certs: dict[str, tuple[str, str]]) -> None:
    settings = _settings(certs, verify_client=True)
    assert server_ssl_context(settings).verify_mode is ssl.CERT_REQUIRED
    server = Server(eir_node(), settings)
    await server.start()
    try:
        port = server.sockets[0][2]
        anonymous = client_ssl_context(ca=certs["server"][0])
        with pytest.raises((ClientClosed, ssl.SSLError, ConnectionError)):
            await Client.connect(mme_node(), "127.0.0.1", port, transport="tls", ssl_context=anonymous)
        cert, key = certs["client"]
        known = client_ssl_context(ca=certs["server"][0], cert=cert, key=key)
        client = await Client.connect(mme_node(), "127.0.0.1", port, transport="tls", ssl_context=known)
        assert client.is_open
        await client.close()
    finally:
        await server.stop(timeout=1.0)


async def test_tls_client_rejects_unknown_server(certs: dict[str, tuple[str, str]]) -> None:
    server = Server(eir_node(), _settings(certs, verify_client=False))
    await server.start()
    try:
        port = server.sockets[0][2]
        wrong_ca = client_ssl_context(ca=certs["client"][0])
        with pytest.raises(ssl.SSLCertVerificationError):
            await Client.connect(mme_node(), "127.0.0.1", port, transport="tls", ssl_context=wrong_ca)
    finally:
        await server.stop(timeout=1.0)
