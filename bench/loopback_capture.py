"""Gateway-side latency, generator slip and answer verification from a loopback capture.

End-to-end latency, as a load generator measures it, adds the generator's own delays to the
gateway's: how late it sent a request against its schedule (slip) and how late it read the
answer. When the generators share a core, those can be most of a tail. A capture on ``lo``
(``dumpcap``, Wireshark's capture engine) stamps each segment as the sender's ``write`` hands
it to the kernel, so, per request:

* gateway-side latency = the segment that completed the request (its last byte) to the segment
  that began its answer: the time the request waited in the gateway's socket buffer for the
  event loop, plus the gateway's work, plus the wait of an answer written later than its read;
* slip = how late each request reached the wire against its connection's even schedule
  (``rate`` per connection, anchored on its least late request), whatever the generator.

Nothing here runs the gateway's code: HTTP/2 frames (RFC 9113 §4.1) and Diameter headers
(RFC 6733 §3) are read by the few lines below, header blocks by the ``hpack`` package (RFC 7541,
python-hyper), so the N5g-eir answers an ``h2load`` run received can be checked against the
verdicts its PEIs should get. TCP is reassembled per direction from the sequence numbers
(loopback loses nothing; a gap ends that direction, counted); a connection whose SYN is not in
the capture is left out.
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_LINKTYPE_ETHERNET = 1  # what Linux gives ``lo``
_ETHERTYPE_IPV4 = 0x0800
_TCP = 6
_SYN, _FIN, _RST = 0x02, 0x01, 0x04

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
_H2_DATA, _H2_HEADERS, _H2_RST_STREAM, _H2_CONTINUATION = 0x0, 0x1, 0x3, 0x9
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20
_ME_IDENTITY_CHECK = 324  # TS 29.272 §7.2.19
_DIAMETER_REQUEST = 0x80  # RFC 6733 §3, the R bit


# --- capture ----------------------------------------------------------------------------------

class Capture:
    """``dumpcap`` on ``lo`` for the given TCP ports, into a pcap file (started and stopped
    around a run; ``cpu``: the core it may use)."""

    def __init__(self, path: Path, ports: list[int], cpu: int | None = None) -> None:
        self.path = path
        self.ports = ports
        self.cpu = cpu
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """None when a capture can be taken, else why not."""
        if shutil.which("dumpcap") is None:
            return "dumpcap not installed (Debian package wireshark-common or tshark)"
        return None

    def start(self) -> None:
        filt = " or ".join(f"tcp port {p}" for p in self.ports)
        # -P: pcap, not pcapng; -B: a 64 MiB kernel buffer so that nothing is dropped.
        argv = ["dumpcap", "-q", "-P", "-i", "lo", "-B", "64", "-f", filt, "-w", str(self.path)]
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu), *argv]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        # dumpcap creates the file once its capture is open.
        deadline = time.monotonic() + 10
        while not (self.path.exists() and self.path.stat().st_size >= _PCAP_HEADER.size):
            if self._process.poll() is not None or time.monotonic() > deadline:
                err = self._process.stderr.read() if self._process.stderr else b""
                self.stop()
                raise RuntimeError(f"dumpcap did not start: {err.decode(errors='replace')}")
            time.sleep(0.05)
        time.sleep(0.2)  # the filter is attached before the file is written; a margin anyway

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> str:
        """Stops the capture; dumpcap's own count of packets dropped, as it reported it."""
        process, self._process = self._process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        return " ".join(line for line in err.decode(errors="replace").splitlines()
                        if "dropped" in line.lower())


# --- pcap and TCP -----------------------------------------------------------------------------

def packets(path: Path) -> Iterator[tuple[float, int, int, int, int, bytes]]:
    """(time, source port, destination port, sequence number, TCP flags, payload) of every
    IPv4 TCP segment of a little-endian pcap file written on ``lo``."""
    data = path.read_bytes()
    magic, _major, _minor, _zone, _sigfigs, _snaplen, linktype = _PCAP_HEADER.unpack_from(data)
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise ValueError(f"{path}: not a little-endian pcap file (magic {magic:#x})")
    if linktype != _LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (lo)")
    scale = 1e-6 if magic == 0xA1B2C3D4 else 1e-9
    offset = _PCAP_HEADER.size
    end = len(data)
    while offset + _RECORD.size <= end:
        seconds, fraction, captured, _original = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        frame = data[offset:offset + captured]
        offset += captured
        if len(frame) < 14 + 20 or int.from_bytes(frame[12:14], "big") != _ETHERTYPE_IPV4:
            continue
        ip = 14
        header = (frame[ip] & 0x0F) * 4
        if frame[ip + 9] != _TCP:
            continue
        ip_end = ip + int.from_bytes(frame[ip + 2:ip + 4], "big")
        tcp = ip + header
        source, destination, sequence = struct.unpack_from("!HHI", frame, tcp)
        flags = frame[tcp + 13]
        payload = frame[tcp + (frame[tcp + 12] >> 4) * 4:ip_end]
        yield seconds + fraction * scale, source, destination, sequence, flags, payload


@dataclass(slots=True)
class Direction:
    """The bytes one side of a TCP connection sent, and when each segment of them left."""

    next_sequence: int | None = None  # None until the SYN
    data: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)  # offset after each segment
    times: list[float] = field(default_factory=list)
    broken: bool = False  # a gap: the rest is not read

    def add(self, when: float, sequence: int, flags: int, payload: bytes) -> None:
        if flags & _SYN:
            self.next_sequence = (sequence + 1) & 0xFFFFFFFF
            return
        if self.next_sequence is None or self.broken or not payload:
            return
        skip = (self.next_sequence - sequence) & 0xFFFFFFFF
        if skip >= 0x80000000:  # ahead of what we have: bytes missing from the capture
            self.broken = True
            return
        if skip >= len(payload):
            return  # a retransmission of what we have
        fresh = payload[skip:]
        self.data += fresh
        self.ends.append(len(self.data))
        self.times.append(when)
        self.next_sequence = (self.next_sequence + len(fresh)) & 0xFFFFFFFF

    def time_of(self, offset: int) -> float:
        """When the byte at ``offset`` was sent."""
        return self.times[bisect_right(self.ends, offset)]


@dataclass(slots=True)
class Connection:
    client_port: int
    server_port: int
    client: Direction = field(default_factory=Direction)  # client -> server
    server: Direction = field(default_factory=Direction)  # server -> client


def connections(path: Path, server_ports: set[int]) -> list[Connection]:
    """The TCP connections to ``server_ports`` in a capture, reassembled, in order of start."""
    found: dict[tuple[int, int], Connection] = {}
    for when, source, destination, sequence, flags, payload in packets(path):
        if destination in server_ports:
            key = (source, destination)
            conn = found.get(key)
            if conn is None:
                if not flags & _SYN:
                    continue  # began before the capture
                conn = found[key] = Connection(source, destination)
            conn.client.add(when, sequence, flags, payload)
        elif source in server_ports:
            conn = found.get((destination, source))
            if conn is not None:
                conn.server.add(when, sequence, flags, payload)
    return list(found.values())


# --- what was asked and answered --------------------------------------------------------------

@dataclass(slots=True)
class Exchange:
    sent: float  # the request's last byte on the wire
    answered: float | None = None  # the answer's first byte on the wire
    request: str = ""  # the :path (N5g-eir)
    outcome: str | None = None  # of the answer (N5g-eir)


def _h2_frames(data: bytes | bytearray, start: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset of the frame, type, flags, stream id, end of the frame) of each whole frame."""
    offset = start
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset:offset + 3], "big")
        end = offset + 9 + length
        if end > len(data):
            return
        stream = int.from_bytes(data[offset + 5:offset + 9], "big") & 0x7FFFFFFF
        yield offset, data[offset + 3], data[offset + 4], stream, end
        offset = end


def _fragment(data: bytes | bytearray, offset: int, kind: int, flags: int, end: int) -> bytes:
    """A HEADERS or CONTINUATION frame's header block fragment (RFC 9113 §6.2, §6.10)."""
    body = offset + 9
    pad = 0
    if kind == _H2_HEADERS:
        if flags & _PADDED:
            pad = data[body]
            body += 1
        if flags & _PRIORITY:
            body += 5
    return bytes(data[body:end - pad])


def _header_blocks(direction: Direction,
                   start: int) -> Iterator[tuple[int, int, int, int, int, Any]]:
    """(frame type, flags, stream id, offset of its first byte, end, payload) per frame, with
    HEADERS and their CONTINUATIONs joined into one decoded header list (RFC 7541: every block
    decoded in order, so the dynamic table follows the encoder's)."""
    from hpack import Decoder  # python-hyper's HPACK, not the gateway's

    decoder = Decoder()
    decoder.max_allowed_table_size = 1 << 20
    block, first, block_flags = b"", 0, 0
    for offset, kind, flags, stream, end in _h2_frames(direction.data, start):
        if kind in (_H2_HEADERS, _H2_CONTINUATION):
            if kind == _H2_HEADERS:
                block, first, block_flags = b"", offset, flags
            block += _fragment(direction.data, offset, kind, flags, end)
            if flags & _END_HEADERS:
                headers = dict(decoder.decode(block, raw=True))
                yield _H2_HEADERS, block_flags, stream, first, end, headers
        else:
            yield kind, flags, stream, offset, end, direction.data[offset + 9:end]


def http2_exchanges(conn: Connection, outcome_of: Callable[[int, bytes], str]) -> list[Exchange]:
    """GETs and their answers on one h2c connection (prior knowledge)."""
    if not bytes(conn.client.data[:len(H2_PREFACE)]) == H2_PREFACE:
        return []
    streams: dict[int, Exchange] = {}
    for kind, flags, stream, _, end, payload in _header_blocks(conn.client, len(H2_PREFACE)):
        if kind == _H2_HEADERS and flags & _END_STREAM and stream not in streams:
            sent = conn.client.time_of(end - 1)
            streams[stream] = Exchange(sent, request=payload.get(b":path", b"").decode())
    bodies: dict[int, tuple[int, bytearray]] = {}
    for kind, flags, stream, offset, _, payload in _header_blocks(conn.server, 0):
        exchange = streams.get(stream)
        if exchange is None or exchange.outcome is not None:
            continue
        if kind == _H2_HEADERS:
            status = int(payload.get(b":status", b"0"))
            if 100 <= status < 200:
                continue
            exchange.answered = conn.server.time_of(offset)
            bodies[stream] = (status, bytearray())
        elif kind == _H2_DATA and stream in bodies:
            bodies[stream][1].extend(payload)
        elif kind == _H2_RST_STREAM:
            exchange.answered = exchange.answered or conn.server.time_of(offset)
            exchange.outcome = "RST_STREAM"
            continue
        else:
            continue
        if flags & _END_STREAM:
            status, body = bodies.pop(stream)
            exchange.outcome = outcome_of(status, bytes(body))
    return list(streams.values())


def _diameter_messages(direction: Direction) -> Iterator[tuple[int, int, int, bytes]]:
    """(offset, flags, command code, Hop-by-Hop + End-to-End) of each whole message."""
    data = direction.data
    offset = 0
    while offset + 20 <= len(data):
        length = int.from_bytes(data[offset + 1:offset + 4], "big")
        if length < 20:
            return  # not Diameter: stop reading this direction
        if offset + length > len(data):
            return
        yield offset, data[offset + 4], int.from_bytes(data[offset + 5:offset + 8], "big"), \
            bytes(data[offset + 12:offset + 20])
        offset += length


def diameter_exchanges(conn: Connection) -> list[Exchange]:
    """ME-Identity-Check requests of one connection and their answers (matched by Hop-by-Hop
    and End-to-End, RFC 6733 §3)."""
    asked: dict[bytes, Exchange] = {}
    for offset, flags, command, ids in _diameter_messages(conn.client):
        if command == _ME_IDENTITY_CHECK and flags & _DIAMETER_REQUEST:
            length = int.from_bytes(conn.client.data[offset + 1:offset + 4], "big")
            asked[ids] = Exchange(conn.client.time_of(offset + length - 1))
    for offset, flags, command, ids in _diameter_messages(conn.server):
        if command == _ME_IDENTITY_CHECK and not flags & _DIAMETER_REQUEST:
            exchange = asked.get(ids)
            if exchange is not None and exchange.answered is None:
                exchange.answered = conn.server.time_of(offset)
    return list(asked.values())


# --- figures ----------------------------------------------------------------------------------

def percentiles_ms(values: list[float]) -> dict[str, float]:
    """p50/p99/p99.9/max of seconds, in milliseconds (nearest rank)."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 3)

    return {"p50": at(0.50), "p99": at(0.99), "p99.9": at(0.999),
            "max": round(ordered[-1] * 1e3, 3)}


def slip(sent: list[float], rate: float) -> list[float]:
    """How late each request of one connection (``sent`` in order) was against an even
    schedule at ``rate``/s, anchored so that the least late request is on time."""
    if not sent or rate <= 0:
        return []
    period = 1.0 / rate
    anchor = min(t - n * period for n, t in enumerate(sent))
    return [t - n * period - anchor for n, t in enumerate(sent)]


def summary(exchanges_per_connection: list[list[Exchange]], rate_per_connection: float,
            expected: dict[str, str | None] | None = None,
            window: tuple[float, float] | None = None) -> dict[str, Any]:
    """Requests, unanswered ones, verification (given the expected outcome per request) and the
    gateway-side latency and slip; with ``window``, the latency and slip of the requests sent
    within it only (slip still against the whole run's schedule)."""
    latencies, slips = [], []
    unanswered = verified = 0
    mismatches: dict[str, int] = {}
    requests = 0
    for exchanges in exchanges_per_connection:
        exchanges = sorted(exchanges, key=_sent)
        lateness = slip([e.sent for e in exchanges], rate_per_connection)
        for e, late in zip(exchanges, lateness, strict=True):
            requests += 1
            if e.answered is None:
                unanswered += 1
            elif expected is not None:
                want = expected.get(e.request)
                if want is not None:
                    verified += 1
                    if e.outcome != want:
                        key = f"{want} -> {e.outcome}"
                        mismatches[key] = mismatches.get(key, 0) + 1
            if window is not None and not window[0] <= e.sent <= window[1]:
                continue
            slips.append(late)
            if e.answered is not None:
                latencies.append(e.answered - e.sent)
    out: dict[str, Any] = {
        "connections": len(exchanges_per_connection),
        "requests": requests,
        "unanswered": unanswered,
        "gateway_side_ms": percentiles_ms(latencies),
        "slip_ms": percentiles_ms(slips),
    }
    if expected is not None:
        out["verified"] = verified
        out["mismatches"] = mismatches
    return out


def _sent(exchange: Exchange) -> float:
    return exchange.sent


def sending_window(exchanges_per_connection: list[list[Exchange]]) -> tuple[float, float] | None:
    """From the first request sent to the last."""
    times = [e.sent for x in exchanges_per_connection for e in x]
    return (min(times), max(times)) if times else None


def main() -> None:  # pragma: no cover - a helper for looking at a kept capture by hand
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--http2-port", type=int, action="append", default=[])
    parser.add_argument("--diameter-port", type=int, action="append", default=[])
    parser.add_argument("--rate-per-connection", type=float, default=0.0)
    args = parser.parse_args()
    conns = connections(args.pcap, set(args.http2_port) | set(args.diameter_port))
    out = {}
    if args.http2_port:
        h2 = [http2_exchanges(c, lambda status, body: str(status)) for c in conns
              if c.server_port in args.http2_port]
        out["http2"] = summary(h2, args.rate_per_connection)
    if args.diameter_port:
        dia = [diameter_exchanges(c) for c in conns if c.server_port in args.diameter_port]
        out["diameter"] = summary(dia, args.rate_per_connection)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
