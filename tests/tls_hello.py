"""A TLS client that sends its ClientHello and nothing more: what a server answers it shows
whether it runs a handshake for that connection at all."""

from __future__ import annotations

import asyncio
import ssl

import pytest


def client_hello(alpn: tuple[str, ...] = ("h2",)) -> bytes:
    """A TLS ClientHello (offering ``alpn``), the first flight of a client's connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def answer_to_client_hello(host: str, port: int, alpn: tuple[str, ...] = ("h2",)) -> bytes:
    """What the server sends back to a ClientHello, up to its close (or 5 s: a server in the
    handshake waits for the client's next flight)."""
    reader, writer = await asyncio.open_connection(host, port)
    received = b""
    try:
        writer.write(client_hello(alpn))
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
    except (ConnectionResetError, TimeoutError):
        pass  # aborted (reset), or still in the handshake
    finally:
        writer.close()
    return received
