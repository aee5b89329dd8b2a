"""The SCTP transport itself (RFC 6733 §2.1.1) in a kernel that has SCTP: socket options,
PPID 46 on every DATA chunk both ways, one Diameter message per SCTP message, multi-homing."""

from __future__ import annotations

import asyncio
import socket

import sctp

from diameter.codec import Message, decode_message
from diameter.settings import ListenEndpoint, SctpSettings, TransportSettings
from diameter.transport import Client, Server, sctp_socket, sockets
from diameter.transport.sockets import IPPROTO_SCTP, SCTP_INITMSG, SCTP_NODELAY, SCTP_RTOINFO
from tests.diameter.test_peer_helpers import EIR_HOST, cer, ecr, ecr_message, eir_node, mme_node
from tests.sctp.guest import raw

OPTIONS = SctpSettings(
    streams_out=7, streams_in=9, rto_initial=0.5, rto_min=0.2, rto_max=2.0,
    heartbeat_interval=1.5, path_max_retransmissions=3, nodelay=True,
)  # fmt: skip


def assert_options(sock: socket.socket, peer: tuple[str, int] | None) -> None:
    """What ``OPTIONS`` set, read back from the kernel."""
    info = sock.getsockopt(IPPROTO_SCTP, sockets.SCTP_DEFAULT_SEND_PARAM, sockets.SNDRCVINFO.size)
    assert socket.ntohl(sockets.SNDRCVINFO.unpack(info)[3]) == 46
    assert sock.getsockopt(IPPROTO_SCTP, SCTP_NODELAY) == 1
    wrapped = sctp.sctpsocket_tcp(sock.family, sock)
    rto = wrapped.get_rtoinfo()
    assert (rto.initial, rto.min, rto.max) == (500, 200, 2000)
    if peer is None:  # endpoint defaults: INIT parameters
        streams = sockets.INITMSG.unpack(sock.getsockopt(IPPROTO_SCTP, SCTP_INITMSG, 8))
        assert streams[:2] == (7, 9)
    else:  # the association's path to the peer
        params = wrapped.get_paddrparams(0, peer)
        assert (params.hbinterval, params.pathmaxrxt) == (1500, 3)
        status = wrapped.get_status()
        assert (status.outstrms, status.instrms) == (7, 7)  # both ends offered 7 out, 9 in


async def test_options_reach_the_listener_and_every_association() -> None:
    settings = TransportSettings(listen=(ListenEndpoint("sctp", "127.0.0.1", 0),), sctp=OPTIONS)
    server = Server(eir_node(), settings)
    await server.start()
    try:
        (listener,) = server._servers
        assert_options(listener[1].sockets[0], None)
        port = server.sockets[0][2]
        client = await Client.connect(
            mme_node(), "127.0.0.1", port, transport="sctp", settings=settings
        )
        (connection,) = server.connections
        assert connection.transport is not None
        accepted = connection.transport.get_extra_info("socket")
        assert_options(accepted, accepted.getpeername())
        assert (await client.request(ecr_message(end_to_end=0))).get("Result-Code") == 2001
        await client.close()
    finally:
        await server.stop(timeout=1.0)


def test_sctp_socket_defaults() -> None:
    sock = sctp_socket()
    try:
        info = sock.getsockopt(IPPROTO_SCTP, sockets.SCTP_DEFAULT_SEND_PARAM, 32)
        assert socket.ntohl(sockets.SNDRCVINFO.unpack(info)[3]) == 46
        assert sock.getsockopt(IPPROTO_SCTP, SCTP_NODELAY) == 1
        rto = sctp.sctpsocket_tcp(socket.AF_INET, sock).get_rtoinfo()
        assert (rto.initial, rto.min, rto.max) == (3000, 1000, 60000)  # RFC 4960 §15
        assert sock.getsockopt(IPPROTO_SCTP, SCTP_RTOINFO, 16)
    finally:
        sock.close()


async def test_gateway_side_sends_ppid_46_one_message_per_sctp_message() -> None:
    """A plain SCTP client sends CER and a burst of ECRs; every answer comes back as its own SCTP
    message (MSG_EOR, length = the Diameter Message Length) in DATA chunks of PPID 46, though the
    peer core writes a burst of answers at once."""
    server = Server(eir_node(), TransportSettings(listen=(ListenEndpoint("sctp", "127.0.0.1", 0),)))
    await server.start()
    port = server.sockets[0][2]

    def exchange() -> list[raw.Received]:
        sock = raw.raw_socket()
        try:
            sock.connect(("127.0.0.1", port))
            raw.send(sock, cer())
            got = [raw.receive(sock)]
            for index in range(40):
                raw.send(sock, ecr(hop_by_hop=0x1000 + index, end_to_end=0x2000 + index))
            got.extend(raw.receive(sock) for _ in range(40))
            return [g for g in got if g is not None]
        finally:
            sock.close()

    try:
        received = await asyncio.to_thread(exchange)
    finally:
        await server.stop(timeout=1.0)
    assert len(received) == 41
    for message in received:
        assert message.ppid == 46 and message.whole, message
        assert message.diameter_length == len(message.data)
    assert decode_message(received[0].data).get("Result-Code") == 2001
    hops = sorted(decode_message(m.data).hop_by_hop for m in received[1:])
    assert hops == [0x1000 + i for i in range(40)]


async def test_client_side_sends_ppid_46_one_message_per_sctp_message() -> None:
    """The other way: our Client (the simulator's) towards a plain SCTP server."""
    listener = raw.raw_socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> list[raw.Received]:
        conn, _ = listener.accept()
        got: list[raw.Received] = []
        with conn:
            while (message := raw.receive(conn)) is not None:
                got.append(message)
                raw.send(conn, _answer(message.data))
        return got

    served = asyncio.ensure_future(asyncio.to_thread(serve))
    client = await Client.connect(mme_node(), "127.0.0.1", port, transport="sctp")
    answers = await asyncio.gather(
        *(client.request(ecr_message(end_to_end=0), timeout=10) for _ in range(20))
    )
    assert all(a.get("Result-Code") == 2001 for a in answers)
    await client.close()
    received = await asyncio.wait_for(served, 20)
    listener.close()
    assert [decode_message(m.data).command_code for m in received] == [257] + [324] * 20 + [282]
    for message in received:
        assert message.ppid == 46 and message.whole, message
        assert message.diameter_length == len(message.data)


def _answer(request: bytes) -> bytes:
    """2001 to any request, as a CEA/ECA/DPA: enough for our Client."""
    message = decode_message(request)
    answer = Message(message.command_code, message.application_id, 0, message.hop_by_hop,
                     message.end_to_end)  # fmt: skip
    if message.command_code == 324:
        answer.add("Session-Id", message.get("Session-Id"))
    answer.add("Result-Code", 2001)
    answer.add("Origin-Host", EIR_HOST).add("Origin-Realm", "example.net")
    if message.command_code == 257:
        answer.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 0)
        answer.add("Product-Name", "plain sctp").add("Auth-Application-Id", 16777252)
    return answer.encode()


async def test_multihomed_listener_advertises_both_addresses_in_init_ack() -> None:
    """Bound with sctp_bindx to 127.0.0.1 and 127.0.0.2: a client that connects to 127.0.0.1
    only learns 127.0.0.2 from the INIT-ACK's address parameters (RFC 4960 §3.3.3, §5.1.2)."""
    endpoint = ListenEndpoint("sctp", "127.0.0.1", 0, extra_addresses=("127.0.0.2",))
    server = Server(eir_node(), TransportSettings(listen=(endpoint,)))
    await server.start()
    try:
        port = server.sockets[0][2]
        assert server.sockets == [("sctp", "127.0.0.1", port), ("sctp", "127.0.0.2", port)]
        client = await Client.connect(mme_node(), "127.0.0.1", port, transport="sctp")
        assert client.connection is not None and client.connection.transport is not None
        sock = client.connection.transport.get_extra_info("socket")
        peer_addresses = sctp.sctpsocket_tcp(socket.AF_INET, sock).getpaddrs()
        assert sorted(peer_addresses) == [("127.0.0.1", port), ("127.0.0.2", port)]
        assert client.info is not None and client.info.origin_host == EIR_HOST
        assert (await client.request(ecr_message(end_to_end=0))).get("Result-Code") == 2001
        await client.close()
    finally:
        await server.stop(timeout=1.0)


async def test_client_connectx_to_a_multihomed_server() -> None:
    endpoint = ListenEndpoint("sctp", "127.0.0.1", 0, extra_addresses=("127.0.0.2",))
    server = Server(eir_node(), TransportSettings(listen=(endpoint,)))
    await server.start()
    try:
        port = server.sockets[0][2]
        client = await Client.connect(
            mme_node(), ["127.0.0.2", "127.0.0.1"], port, transport="sctp",
            local_addresses=("127.0.0.3", "127.0.0.4"),
        )  # fmt: skip
        (connection,) = server.connections
        assert connection.transport is not None
        accepted = connection.transport.get_extra_info("socket")
        remote = sctp.sctpsocket_tcp(socket.AF_INET, accepted).getpaddrs()
        assert sorted(a for a, _ in remote) == ["127.0.0.3", "127.0.0.4"]
        assert (await client.request(ecr_message(end_to_end=0))).get("Result-Code") == 2001
        await client.close()
    finally:
        await server.stop(timeout=1.0)
