"""Sockets and TLS contexts for the Diameter transports (RFC 6733 §2.1, §2.1.1, §13).

TCP_NODELAY on every connection. SCTP: one-to-one (SOCK_STREAM) sockets whose default send
parameters carry payload protocol id 46 (RFC 6733 §11.5), with the configured streams, RTO,
heartbeat and SCTP_NODELAY (RFC 6458 §8); several local or remote addresses (multi-homing)
through pysctp's sctp_bindx / sctp_connectx. Messages go on
stream 0 with ordered delivery: RFC 6733 §2.1.1 recommends the U flag, but unordered delivery
could let a request overtake the CER (§5.6.1 closes on that) or a DPR overtake the answers before
it; a receiver accepts any stream either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterable
from typing import Any

from diameter.errors import DiameterError
from diameter.settings import SctpSettings, TransportSettings

DIAMETER_PPID = 46  # RFC 6733 §11.5: Diameter in clear-text SCTP DATA chunks
IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
# Socket options of <linux/sctp.h> (RFC 6458 §8).
SCTP_RTOINFO = 0
SCTP_INITMSG = 2
SCTP_NODELAY = 3
SCTP_PEER_ADDR_PARAMS = 9
SCTP_DEFAULT_SEND_PARAM = 10
SPP_HB_ENABLE = 1
SPP_HB_DISABLE = 2
# struct sctp_sndrcvinfo: stream, ssn, flags (u16), ppid, context, timetolive, tsn, cumtsn (u32),
# assoc_id (s32); the kernel copies the ppid to the wire as is, so it is given in network order.
SNDRCVINFO = struct.Struct("=HHHxxIIIIIi")
# struct sctp_initmsg: num_ostreams, max_instreams, max_attempts, max_init_timeo (0: unchanged).
INITMSG = struct.Struct("=HHHH")
# struct sctp_rtoinfo: assoc_id, initial, max, min (milliseconds).
RTOINFO = struct.Struct("=iIII")
# struct sctp_paddrparams (packed) up to spp_flags, padded to 4: the length Linux accepts for
# callers without the IPv6 flow label and DSCP fields. assoc_id, address (sockaddr_storage, all
# zero: every path), hbinterval (ms), pathmaxrxt, pathmtu, sackdelay, flags.
PADDRPARAMS = struct.Struct("=i128sIHIII2x")


def origin_state_now() -> int:
    """An Origin-State-Id for this start (RFC 6733 §8.16): seconds since the epoch."""
    return int(time.time()) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Sockets


def sctp_unavailable() -> str | None:
    """Why SCTP cannot be used here, or None when the kernel opens SCTP sockets."""
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError as exc:
        return f"the kernel cannot open SCTP sockets ({exc.strerror or exc})"
    probe.close()
    return None


def pysctp() -> Any:
    """pysctp (sctp_bindx, sctp_connectx), or None where it cannot be imported."""
    try:
        import sctp
    except ImportError:
        return None
    return sctp


def sctp_socket(family: int = socket.AF_INET, options: SctpSettings | None = None) -> socket.socket:
    """A non-blocking one-to-one (SOCK_STREAM) SCTP socket sending PPID 46 by default, with
    ``options`` applied (they become the defaults of every association it accepts or opens)."""
    sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
    try:
        set_sctp_options(sock, options or SctpSettings())
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def set_sctp_options(sock: socket.socket, options: SctpSettings) -> None:
    def ms(seconds: float) -> int:
        return round(seconds * 1000)

    info = SNDRCVINFO.pack(0, 0, 0, socket.htonl(DIAMETER_PPID), 0, 0, 0, 0, 0)
    sock.setsockopt(IPPROTO_SCTP, SCTP_DEFAULT_SEND_PARAM, info)
    sock.setsockopt(IPPROTO_SCTP, SCTP_NODELAY, int(options.nodelay))
    sock.setsockopt(
        IPPROTO_SCTP, SCTP_INITMSG, INITMSG.pack(options.streams_out, options.streams_in, 0, 0)
    )
    rto = RTOINFO.pack(0, ms(options.rto_initial), ms(options.rto_max), ms(options.rto_min))
    sock.setsockopt(IPPROTO_SCTP, SCTP_RTOINFO, rto)
    interval = ms(options.heartbeat_interval)
    flags = SPP_HB_ENABLE if interval else SPP_HB_DISABLE
    params = PADDRPARAMS.pack(0, b"", interval, options.path_max_retransmissions, 0, 0, flags)
    sock.setsockopt(IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, params)


def _multihoming() -> Any:
    sctp = pysctp()
    if sctp is None:
        raise DiameterError("SCTP multi-homing needs pysctp (pip install pysctp)")
    return sctp


def bind_sctp(sock: socket.socket, addresses: Iterable[str], port: int) -> None:
    """Bind to one address, or to several (multi-homing: sctp_bindx, RFC 6458 §9.1)."""
    addresses = list(addresses)
    if len(addresses) == 1:
        sock.bind((addresses[0], port))
        return
    sctp = _multihoming()
    sctp.sctpsocket_tcp(sock.family, sock).bindx([(address, port) for address in addresses])


async def connect_sctp(sock: socket.socket, hosts: list[str], port: int) -> None:
    """Open the association to one address, or to a multi-homed peer (sctp_connectx, RFC 6458
    §9.9), without blocking: the socket is non-blocking and the loop waits for it to be writable."""
    loop = asyncio.get_running_loop()
    try:
        if len(hosts) == 1:
            sock.connect((hosts[0], port))
        else:
            _multihoming().sctpsocket_tcp(sock.family, sock).connectx([(h, port) for h in hosts])
        return
    except BlockingIOError:
        pass  # EINPROGRESS: the handshake (INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK) goes on
    writable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not writable.done():
            writable.set_result(None)

    loop.add_writer(sock.fileno(), ready)
    try:
        await writable
    finally:
        loop.remove_writer(sock.fileno())
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, f"SCTP connect to {hosts} port {port}: {os.strerror(error)}")


def server_ssl_context(settings: TransportSettings) -> ssl.SSLContext:
    """TLS for incoming connections (RFC 6733 §13.1: port 5868, TLS from the first byte)."""
    if not settings.tls_cert or not settings.tls_key:
        raise DiameterError("TLS listener without tls_cert/tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca:
        context.load_verify_locations(settings.tls_ca)
    if settings.tls_verify_client:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert:
        context.load_cert_chain(cert, key)
    return context


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        if sock.proto in (0, socket.IPPROTO_TCP):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
