"""A plain SCTP peer for the guest tests: blocking one-to-one sockets that read every message
with its SCTP receive information (RFC 6458 §5.3.5), so a test sees the PPID of each DATA chunk
and where each SCTP message ends. Run it in a thread (``asyncio.to_thread``) beside the loop."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from diameter.transport.sockets import IPPROTO_SCTP

SCTP_RECVRCVINFO = 32  # <linux/sctp.h>: deliver struct sctp_rcvinfo with every message
SCTP_RCVINFO = 3  # its cmsg type
# struct sctp_rcvinfo: sid, ssn, flags (u16), ppid, tsn, cumtsn, context (u32), assoc_id (s32).
RCVINFO = struct.Struct("=HHHxxIIIIi")
MSG_EOR = 0x80


@dataclass(frozen=True)
class Received:
    data: bytes
    ppid: int
    stream: int
    whole: bool  # MSG_EOR: the end of an SCTP message

    @property
    def diameter_length(self) -> int:
        return int.from_bytes(self.data[1:4], "big")


def raw_socket(local: tuple[str, ...] = (), family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
    sock.setsockopt(IPPROTO_SCTP, SCTP_RECVRCVINFO, 1)
    sock.settimeout(20.0)
    if local:
        sock.bind((local[0], 0))
    return sock


def receive(sock: socket.socket, size: int = 1 << 20) -> Received | None:
    """One SCTP message (or None at SHUTDOWN), with the PPID of its DATA chunks."""
    data, ancillary, flags, _ = sock.recvmsg(size, socket.CMSG_SPACE(RCVINFO.size))
    if not data:
        return None
    ppid, stream = -1, -1
    for level, kind, payload in ancillary:
        if level == IPPROTO_SCTP and kind == SCTP_RCVINFO:
            stream, _, _, raw_ppid, *_ = RCVINFO.unpack(payload[: RCVINFO.size])
            ppid = socket.ntohl(raw_ppid)
    return Received(data, ppid, stream, bool(flags & MSG_EOR))


def send(sock: socket.socket, message: bytes, ppid: int = 46) -> None:
    """One SCTP message with the given PPID (sctp_sendmsg through sendmsg's SCTP_SNDRCV)."""
    info = struct.pack("=HHHxxIIIIIi", 0, 0, 0, socket.htonl(ppid), 0, 0, 0, 0, 0)
    sock.sendmsg([message], [(IPPROTO_SCTP, 1, info)])  # SCTP_SNDRCV = 1
