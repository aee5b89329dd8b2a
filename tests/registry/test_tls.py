"""Bearer token over mutual TLS: the client presents tls_cert, verifies the registry with tls_ca."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from registry_client.local import LocalRegistry
from registry_client.model import RegistryStatus, RegistryUnavailable
from registry_client.server import RegistryServer, server_ssl_context
from tests.registry.conftest import STOLEN, ClientFactory

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl command not available")


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, ext: str, cwd: Path) -> None:
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
             f"/CN={name}", cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test registry CA",
             cwd=cwd)  # fmt: skip
    _issue("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", cwd)
    _issue("client", "extendedKeyUsage=clientAuth\n", cwd)
    return cwd


async def test_mutual_tls(pki: Path, local: LocalRegistry, make_client: ClientFactory) -> None:
    context = server_ssl_context(
        str(pki / "server.pem"), str(pki / "server.key"), client_ca=str(pki / "ca.pem")
    )
    server = RegistryServer(local, tokens=["test-token"], ssl_context=context)
    await server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        client = make_client(
            server.url,
            tls_ca=str(pki / "ca.pem"),
            tls_cert=str(pki / "client.pem"),
            tls_key=str(pki / "client.key"),
        )
        verdict = await client.check(STOLEN)
        assert verdict.status is RegistryStatus.MANUFACTURED and verdict.active_reports

        no_cert = make_client(server.url, tls_ca=str(pki / "ca.pem"), budget=1.0, retries=0)
        with pytest.raises(RegistryUnavailable):
            await no_cert.check(STOLEN)
        untrusted = make_client(server.url, budget=1.0, retries=0)  # system CAs only
        with pytest.raises(RegistryUnavailable):
            await untrusted.check(STOLEN)
        assert server.request_counts["/v1/imeis/{imei}"] == 1
    finally:
        await server.stop()
