"""Diameter over SCTP (RFC 6733 §2.1.1): one-to-one sockets, PPID 46, multi-homing.

Skipped where the kernel cannot open SCTP sockets (no sctp module loaded, containers).
"""

from __future__ import annotations

import socket
import struct

import pytest

from diameter.errors import DiameterError
from diameter.settings import ListenEndpoint, TransportSettings
from diameter.transport import Client, Server, sctp_socket, sctp_unavailable, sockets
from tests.diameter.test_peer_helpers import EIR_HOST, ecr_message, eir_node, mme_node

REASON = sctp_unavailable()
needs_sctp = pytest.mark.skipif(REASON is not None, reason=f"SCTP: {REASON}")


@pytest.mark.skipif(REASON is None, reason="the kernel has SCTP: nothing to refuse")
async def test_sctp_listener_refused_clearly_and_nothing_left_listening() -> None:
    settings = TransportSettings(
        listen=(ListenEndpoint("tcp", "127.0.0.1", 0), ListenEndpoint("sctp", "127.0.0.1", 0))
    )
    server = Server(eir_node(), settings)
    with pytest.raises(DiameterError, match="SCTP"):
        await server.start()
    assert server.sockets == []


@needs_sctp
def test_sctp_socket_sends_ppid_46_by_default() -> None:
    sock = sctp_socket()
    try:
        proto = getattr(socket, "IPPROTO_SCTP", 132)
        info = sock.getsockopt(proto, 10, sockets.SNDRCVINFO.size)
        ppid = sockets.SNDRCVINFO.unpack(info)[3]
        assert socket.ntohl(ppid) == 46
        assert sock.getsockopt(proto, 3) == 1  # SCTP_NODELAY
    finally:
        sock.close()
    assert struct.calcsize("=HHHxxIIIIIi") == 32


@needs_sctp
async def test_sctp_cer_cea_and_request() -> None:
    settings = TransportSettings(listen=(ListenEndpoint("sctp", "127.0.0.1", 0),))
    server = Server(eir_node(), settings)
    await server.start()
    try:
        port = server.sockets[0][2]
        client = await Client.connect(mme_node(), "127.0.0.1", port, transport="sctp")
        assert client.info is not None and client.info.origin_host == EIR_HOST
        assert (await client.request(ecr_message(end_to_end=0))).get("Result-Code") == 2001
        await client.close()
    finally:
        await server.stop(timeout=1.0)


@pytest.mark.skipif(sockets.pysctp() is None, reason="SCTP multi-homing needs pysctp (extra 'sctp')")
@needs_sctp
async def test_sctp_multihomed_server_advertises_every_address() -> None:
    endpoint = ListenEndpoint("sctp", "127.0.0.1", 0, extra_addresses=("127.0.0.2",))
    server = Server(eir_node(), TransportSettings(listen=(endpoint,)))
    await server.start()
    try:
        port = server.sockets[0][2]
        client = await Client.connect(mme_node(), ["127.0.0.1", "127.0.0.2"], port, transport="sctp")
        assert client.info is not None
        assert set(client.info.host_ip_addresses) == {"127.0.0.1", "127.0.0.2"}
        await client.close()
    finally:
        await server.stop(timeout=1.0)
