"""The pcap writer's pieces: checksum, message splitting, TCP sequence numbers."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from gateway.simulator.pcap import Capture, checksum, split_messages, write_pcap


def _message(n: int, size: int = 24) -> bytes:
    return bytes([1]) + size.to_bytes(3, "big") + bytes([0x80]) + (257).to_bytes(3, "big") + bytes(
        [n] * (size - 8)
    )


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (carry folded); checksum is ~ddf2.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with a zero octet


def test_split_messages() -> None:
    a, b = _message(1), _message(2, 32)
    assert split_messages(a + b) == [a, b]
    assert split_messages(a + b[:10]) == [a, b[:10]]


def test_frames_sequence_numbers_and_reassembly(tmp_path: Path) -> None:
    capture = Capture(("127.0.0.1", 40000), ("127.0.0.1", 5000), opened=1.0, closed=3.0)
    a, b, c = _message(1), _message(2, 40), _message(3)
    capture.record(1.1, True, a + b[:5])  # a read or write may cut a message ...
    capture.record(1.2, True, b[5:])  # ... the rest comes later
    capture.record(1.3, False, c)
    path = tmp_path / "t.pcap"
    assert write_pcap(path, [capture]) == 3 + 3 + 3
    packets = rdpcap(str(path))
    payloads = [bytes(p[TCP].payload) for p in packets if len(p[TCP].payload)]
    assert payloads == [a, b, c]
    assert all(p[TCP].dport == 3868 or p[TCP].sport == 3868 for p in packets)
    syn, synack = packets[0][TCP], packets[1][TCP]
    first, second, answer = (p for p in packets if len(p[TCP].payload))
    assert first[TCP].seq == syn.seq + 1 and second[TCP].seq == first[TCP].seq + len(a)
    assert answer[TCP].seq == synack.seq + 1 and answer[TCP].ack == second[TCP].seq + len(b)
    for p in packets:  # checksums as computed by scapy
        ip_sum, tcp_sum = p[IP].chksum, p[TCP].chksum
        rebuilt = IP(bytes(p[IP]))
        del rebuilt[IP].chksum
        del rebuilt[TCP].chksum
        rebuilt = IP(bytes(rebuilt))
        assert (rebuilt[IP].chksum, rebuilt[TCP].chksum) == (ip_sum, tcp_sum)
