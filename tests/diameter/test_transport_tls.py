"""Diameter over TLS/TCP (RFC 6733 §2.1, §13; port 5868), with certificates made for the test."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from diameter.codec import Message, decode_message
from diameter.settings import ListenEndpoint, TransportSettings
from diameter.transport import Client, ClientClosed, Server, client_ssl_context, server_ssl_context
from tests.diameter.test_peer_helpers import EIR_HOST, cer, ecr_message, eir_node, mme_node
from tests.tls_hello import answer_to_client_hello

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl CLI to make test certificates")


def _self_signed(
    directory: Path, name: str, subject_alt: str | None, file: str | None = None
) -> tuple[str, str]:
    """A certificate for CN=``name`` (subjectAltName ``subject_alt`` when given) and its key."""
    file = file or name
    cert, key = directory / f"{file}.crt", directory / f"{file}.key"
    assert OPENSSL is not None
    extension = ["-addext", f"subjectAltName={subject_alt}"] if subject_alt else []
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={name}", *extension,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    directory = tmp_path_factory.mktemp("tls")
    made = {
        "server": _self_signed(directory, "localhost", "DNS:localhost,IP:127.0.0.1"),
        "client": _self_signed(directory, "mme.example.net", "DNS:mme.example.net"),
        # No subjectAltName: the subject's CN names the peer.
        "cn_only": _self_signed(directory, "mme.example.net", None, "cn-only"),
        # The SAN wins over the CN; a wildcard covers one leftmost label.
        "wildcard": _self_signed(directory, "ignored.example.net", "DNS:*.pool.example.net",
                                 "wildcard"),
    }
    bundle = directory / "clients.pem"
    bundle.write_text("".join(Path(made[n][0]).read_text() for n in made if n != "server"))
    made["clients"] = (str(bundle), "")
    return made


def _settings(certs: dict[str, tuple[str, str]], verify_client: bool) -> TransportSettings:
    cert, key = certs["server"]
    return TransportSettings(
        listen=(ListenEndpoint("tls", "127.0.0.1", 0),),
        tls_cert=cert,
        tls_key=key,
        tls_ca=certs["clients"][0] if verify_client else None,
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


# ---------------------------------------------------------------------------------------------
# Peer identity (GSMA FS.19-style): the CER's Origin-Host must be a name of the client certificate


async def _raw_cer(port: int, context: ssl.SSLContext, origin_host: str) -> tuple[Message, bool]:
    """Send a CER from ``origin_host`` over TLS; the CEA, and whether the server closed the
    connection after a refusal (an accepting server keeps it: not waited for)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(cer(origin_host))
        head = await asyncio.wait_for(reader.readexactly(20), 5.0)
        body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[1:4], "big") - 20), 5.0)
        cea = decode_message(head + body)
        if cea.get("Result-Code") == 2001:
            return cea, False
        try:
            closed = await asyncio.wait_for(reader.read(1), 5.0) == b""
        except (ConnectionResetError, ssl.SSLError):
            closed = True
        return cea, closed
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("cert", "origin_host", "result_code"),
    [
        ("client", "mme.example.net", 2001),
        ("client", "MME.Example.NET", 2001),  # DNS names compare case-insensitively
        ("client", "rogue.example.net", 3010),
        ("cn_only", "mme.example.net", 2001),
        ("cn_only", "other.example.net", 3010),
        ("wildcard", "mme7.pool.example.net", 2001),
        ("wildcard", "a.b.pool.example.net", 3010),  # one label only
        ("wildcard", "ignored.example.net", 3010),  # the CN does not count beside a SAN
    ],
)
async def test_cer_origin_host_must_match_the_client_certificate(
    certs: dict[str, tuple[str, str]], cert: str, origin_host: str, result_code: int
) -> None:
    server = Server(eir_node(), _settings(certs, verify_client=True))
    await server.start()
    try:
        context = client_ssl_context(ca=certs["server"][0], cert=certs[cert][0], key=certs[cert][1])
        cea, closed = await _raw_cer(server.sockets[0][2], context, origin_host)
        assert cea.command_code == 257 and cea.get("Result-Code") == result_code
        if result_code == 3010:
            # RFC 6733 §5.3: unknown peer, a protocol error (E bit); then the connection closes.
            assert cea.is_error and closed
            assert "certificate" in cea.get("Error-Message")
        else:
            assert not cea.is_error and not closed
    finally:
        await server.stop(timeout=1.0)


async def test_origin_host_check_can_be_turned_off(certs: dict[str, tuple[str, str]]) -> None:
    server = Server(eir_node(tls_verify_origin_host=False), _settings(certs, verify_client=True))
    await server.start()
    try:
        cert, key = certs["client"]
        context = client_ssl_context(ca=certs["server"][0], cert=cert, key=key)
        cea, closed = await _raw_cer(server.sockets[0][2], context, "rogue.example.net")
        assert cea.get("Result-Code") == 2001 and not closed
    finally:
        await server.stop(timeout=1.0)


async def test_past_max_connections_a_tls_client_gets_no_handshake(
    certs: dict[str, tuple[str, str]],
) -> None:
    # Decided at accept: a client past the limit costs no handshake, and a handshake under way
    # holds a place (a flood of them was neither bounded nor counted, each up to 60 s).
    node = eir_node()
    server = Server(node, replace(_settings(certs, verify_client=False), max_connections=1))
    await server.start()
    try:
        ((_, host, port),) = server.sockets
        _, stalled = await asyncio.open_connection(host, port)  # never sends its ClientHello
        try:
            assert await answer_to_client_hello(host, port, ("diameter",)) == b""
            assert node.connections_refused == 1
        finally:
            stalled.close()
        context = client_ssl_context(ca=certs["server"][0])
        async with asyncio.timeout(10):
            while True:  # the stalled handshake's place is given back once it fails
                try:
                    client = await Client.connect(mme_node(), host, port, transport="tls",
                                                  ssl_context=context)
                    break
                except (ClientClosed, ConnectionError):
                    await asyncio.sleep(0.05)
        try:
            assert await answer_to_client_hello(host, port, ("diameter",)) == b""
            assert node.connections_refused >= 2
            answer = await client.request(ecr_message(end_to_end=1))
            assert answer.get("Result-Code") == 2001
        finally:
            await client.close()
    finally:
        await server.stop(timeout=0.5)
