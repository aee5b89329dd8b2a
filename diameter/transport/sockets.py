"""Sockets and TLS contexts for the Diameter transports (RFC 6733 §2.1, §2.1.1, §13).

TCP_NODELAY on every connection. SCTP: one-to-one (SOCK_STREAM) sockets whose default send
parameters carry payload protocol id 46 (RFC 6733 §11.5); several local addresses (multi-homing)
through pysctp's sctp_bindx / sctp_connectx when the ``sctp`` extra is installed. Messages go on
stream 0 with ordered delivery: RFC 6733 §2.1.1 recommends the U flag, but unordered delivery
could let a request overtake the CER (§5.6.1 closes on that) or a DPR overtake the answers before
it; a receiver accepts any stream either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterable
from typing import Any

from diameter.errors import DiameterError
from diameter.settings import TransportSettings

DIAMETER_PPID = 46  # RFC 6733 §11.5: Diameter in clear-text SCTP DATA chunks
SCTP_NODELAY = 3
SCTP_DEFAULT_SEND_PARAM = 10
# struct sctp_sndrcvinfo: stream, ssn, flags (u16), ppid, context, timetolive, tsn, cumtsn (u32),
# assoc_id (s32); the kernel copies the ppid to the wire as is, so it is given in network order.
SNDRCVINFO = struct.Struct("=HHHxxIIIIIi")


def origin_state_now() -> int:
    """An Origin-State-Id for this start (RFC 6733 §8.16): seconds since the epoch."""
    return int(time.time()) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Sockets


def sctp_unavailable() -> str | None:
    """Why SCTP cannot be used here, or None when the kernel opens SCTP sockets."""
    proto = getattr(socket, "IPPROTO_SCTP", 132)
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    except OSError as exc:
        return f"the kernel cannot open SCTP sockets ({exc.strerror or exc})"
    probe.close()
    return None


def pysctp() -> Any:
    try:
        import sctp
    except ImportError:
        return None
    return sctp


def sctp_socket(family: int = socket.AF_INET) -> socket.socket:
    """A one-to-one (SOCK_STREAM) SCTP socket sending PPID 46 by default, Nagle off."""
    proto = getattr(socket, "IPPROTO_SCTP", 132)
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(proto, SCTP_NODELAY, 1)
        info = SNDRCVINFO.pack(0, 0, 0, socket.htonl(DIAMETER_PPID), 0, 0, 0, 0, 0)
        sock.setsockopt(proto, SCTP_DEFAULT_SEND_PARAM, info)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_sctp(sock: socket.socket, addresses: Iterable[str], port: int) -> None:
    """Bind to one address, or to several (multi-homing, sctp_bindx through pysctp)."""
    addresses = list(addresses)
    if len(addresses) == 1:
        sock.bind((addresses[0], port))
        return
    sctp = pysctp()
    if sctp is None:
        raise DiameterError("SCTP multi-homing needs pysctp (the 'sctp' extra)")
    wrapper = sctp.sctpsocket_tcp(sock.family, sock)
    wrapper.bindx([(address, port) for address in addresses])


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
        else:
            sock.setsockopt(sock.proto, SCTP_NODELAY, 1)
