"""The messages of a run as a pcap file Wireshark decodes as Diameter.

Each simulated connection is written as one TCP connection (three-way handshake, one segment per
Diameter message, FIN exchange) between the real local port and port 3868, the port Wireshark's
Diameter dissector is registered on (RFC 6733 §2.1), whatever port the server used. Sequence and
acknowledgement numbers follow the bytes each side sent (RFC 9293 §3.4); IPv4 and TCP checksums
are computed (RFC 1071), so no decoder flags the frames. The file is written with scapy's
``PcapWriter`` (Ethernet link type) once the run is over, from the bytes recorded on the wire
side of the connection: CER/CEA, every MICR/MICA, DWR/DWA and DPR/DPA as sent and received.
SCTP and TLS connections are written the same way (as clear-text TCP) so they stay readable.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

DIAMETER_PORT = 3868
LINKTYPE_ETHERNET = 1
_MAX_SEGMENT = 65_000  # keeps the IPv4 total length below 65535
_ETHER = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_PSEUDO = struct.Struct("!4s4sBBH")
_CLIENT_MAC = bytes.fromhex("020000000001")
_SERVER_MAC = bytes.fromhex("020000000002")
_SYN, _ACK, _PSH, _FIN = 0x02, 0x10, 0x08, 0x01


def checksum(data: bytes) -> int:
    """Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) & 1:
        data += b"\0"
    words = array("H", data)
    if sys.byteorder == "little":
        words.byteswap()  # network order: big-endian 16-bit words
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass(slots=True)
class Capture:
    """The bytes of one connection: (wall-clock time, True when sent by us, bytes)."""

    client: tuple[str, int]
    server: tuple[str, int] = ("127.0.0.1", DIAMETER_PORT)
    records: list[tuple[float, bool, bytes]] = field(default_factory=list)
    opened: float = 0.0
    closed: float | None = None

    def record(self, when: float, outgoing: bool, data: bytes) -> None:
        self.records.append((when, outgoing, bytes(data)))


def split_messages(stream: bytes) -> list[bytes]:
    """Cut a byte stream at Diameter message boundaries (RFC 6733 §3 Message Length); a
    trailing partial message is returned as it is."""
    out: list[bytes] = []
    offset, end = 0, len(stream)
    while offset < end:
        length = int.from_bytes(stream[offset + 1 : offset + 4], "big") if end - offset >= 4 else 0
        if length < 20 or offset + length > end:
            out.append(stream[offset:])
            break
        out.append(stream[offset : offset + length])
        offset += length
    return out


class _Flow:
    """One direction's addresses and sequence number."""

    def __init__(self, src: tuple[str, int], dst: tuple[str, int], mac: bytes, peer_mac: bytes,
                 isn: int) -> None:
        self.src_ip = ipaddress.IPv4Address(src[0]).packed
        self.dst_ip = ipaddress.IPv4Address(dst[0]).packed
        self.sport, self.dport = src[1], dst[1]
        self.mac, self.peer_mac = mac, peer_mac
        self.seq = isn
        self.ip_id = 1

    def frame(self, flags: int, ack: int, payload: bytes = b"") -> bytes:
        tcp = _TCP.pack(self.sport, self.dport, self.seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                        5 << 4, flags, 65535, 0, 0)
        pseudo = _PSEUDO.pack(self.src_ip, self.dst_ip, 0, 6, len(tcp) + len(payload))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp + payload)) + tcp[18:]
        total = 20 + len(tcp) + len(payload)
        ip = _IPV4.pack(0x45, 0, total, self.ip_id & 0xFFFF, 0x4000, 64, 6, 0,
                        self.src_ip, self.dst_ip)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        self.ip_id += 1
        advance = len(payload) + (1 if flags & (_SYN | _FIN) else 0)
        self.seq += advance
        return _ETHER.pack(self.peer_mac, self.mac, 0x0800) + ip + tcp + payload


def _v4(address: str) -> str:
    """pcap frames are IPv4: other addresses (IPv6, names) are shown as loopback."""
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        return "127.0.0.1"


def connection_frames(capture: Capture) -> list[tuple[float, bytes]]:
    """Timestamped Ethernet frames for one connection."""
    client = (_v4(capture.client[0]), capture.client[1])
    server = (_v4(capture.server[0]), DIAMETER_PORT)
    c = _Flow(client, server, _CLIENT_MAC, _SERVER_MAC, 0x1000_0000 + client[1])
    s = _Flow(server, client, _SERVER_MAC, _CLIENT_MAC, 0x2000_0000 + client[1])
    t0 = capture.opened or (capture.records[0][0] if capture.records else 0.0)
    frames = [
        (t0, c.frame(_SYN, 0)),
        (t0, s.frame(_SYN | _ACK, c.seq)),
        (t0, c.frame(_ACK, s.seq)),
    ]
    # Reassemble each direction, then cut at message boundaries: a read may hold several
    # messages or part of one; a frame holds whole messages (or one large message's pieces).
    pending = {True: b"", False: b""}
    for when, outgoing, data in capture.records:
        stream = pending[outgoing] + data
        messages = split_messages(stream)
        if messages and (len(messages[-1]) < 20 or int.from_bytes(messages[-1][1:4], "big")
                         != len(messages[-1])):
            pending[outgoing] = messages.pop()
        else:
            pending[outgoing] = b""
        for message in messages:
            sender, receiver = (c, s) if outgoing else (s, c)
            for start in range(0, len(message), _MAX_SEGMENT):
                frames.append((when, sender.frame(_PSH | _ACK, receiver.seq,
                                                  message[start : start + _MAX_SEGMENT])))
    end = capture.closed if capture.closed is not None else (
        capture.records[-1][0] if capture.records else t0)
    frames.append((end, c.frame(_FIN | _ACK, s.seq)))
    frames.append((end, s.frame(_FIN | _ACK, c.seq)))
    frames.append((end, c.frame(_ACK, s.seq)))
    return frames


def write_pcap(path: str | Path, captures: Iterable[Capture]) -> int:
    """Write every connection's frames in time order; returns the number of frames."""
    frames: list[tuple[float, bytes]] = []
    for capture in captures:
        frames.extend(connection_frames(capture))
    frames.sort(key=lambda f: f[0])  # stable: a connection's frames keep their order
    # Imported here: scapy takes half a second to import, and only --pcap needs it.
    from scapy.utils import PcapWriter

    writer = PcapWriter(str(path), linktype=LINKTYPE_ETHERNET, sync=False)
    try:
        writer.write_header(None)  # the global header (link type Ethernet), once
        for when, frame in frames:
            sec = int(when)
            writer.write_packet(frame, sec=sec, usec=int((when - sec) * 1e6))
    finally:
        writer.close()
    return len(frames)
