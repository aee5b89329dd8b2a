"""bench/loopback_capture.py: TCP reassembly, HTTP/2 and Diameter exchanges, gateway-side latency,
slip and verification, on pcap files written here byte by byte (and one real capture)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from hpack import Encoder

from gateway.simulator.amf import outcome_of_response
from tests.bench_modules import BENCH, load

CLIENT, SERVER = 40000, 8080
PATH_1 = "/n5g-eir-eic/v1/equipment-status?pei=imei-352099001761481&supi=imsi-001010000000001"
PATH_3 = "/n5g-eir-eic/v1/equipment-status?pei=imeisv-3520990017614801"


@pytest.fixture(scope="module")
def capture() -> ModuleType:
    return load("loopback_capture")


def segment(when: float, source: int, destination: int, sequence: int, payload: bytes = b"",
            flags: int = 0x18) -> tuple[float, bytes]:
    """One IPv4 TCP segment on lo as Linux captures it (Ethernet with zero addresses)."""
    tcp = struct.pack("!HHIIBBHHH", source, destination, sequence, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0,
                     b"\x7f\0\0\1", b"\x7f\0\0\1")
    return when, b"\0" * 12 + b"\x08\x00" + ip + tcp + payload


def write_pcap(path: Path, records: list[tuple[float, bytes]]) -> Path:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for when, frame in records:
        seconds = int(when)
        out += struct.pack("<IIII", seconds, round((when - seconds) * 1e6), len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") \
        + payload


def get(encoder: Encoder, stream: int, path: str) -> bytes:
    block = encoder.encode([(":method", "GET"), (":scheme", "http"),
                            (":authority", "127.0.0.1:8080"), (":path", path)])
    return frame(0x1, 0x5, stream, block)  # HEADERS, END_STREAM | END_HEADERS


def answer(encoder: Encoder, stream: int, status: int, body: dict[str, object]) -> bytes:
    kind = "application/json" if status == 200 else "application/problem+json"
    block = encoder.encode([(":status", str(status)), ("content-type", kind)])
    return frame(0x1, 0x4, stream, block) + frame(0x0, 0x1, stream, json.dumps(body).encode())


def outcome(status: int, body: bytes) -> str:
    return outcome_of_response(status, body)[1]


def h2_pcap(path: Path) -> Path:
    """Two GETs: stream 1 in two segments (answered last, 404), stream 3 whole (answered
    first, 200), a retransmission, and a connection whose start is not in the capture."""
    requests, answers = Encoder(), Encoder()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b"")
    first = get(requests, 1, PATH_1)
    second = get(requests, 3, PATH_3)
    c, s = 1000, 5000  # initial sequence numbers
    client_bytes = preface + first + second
    cut = len(preface) + 10
    server_first = frame(0x4, 0, 0, b"") + answer(answers, 3, 200, {"status": "BLACKLISTED"})
    server_second = answer(answers, 1, 404, {"status": 404, "cause": "ERROR_EQUIPMENT_UNKNOWN"})
    records = [
        segment(1.0, CLIENT, SERVER, c, flags=0x02),
        segment(1.0, SERVER, CLIENT, s, flags=0x12),
        segment(1.000, CLIENT, SERVER, c + 1, client_bytes[:cut]),
        segment(1.001, CLIENT, SERVER, c + 1 + cut, client_bytes[cut:len(preface) + len(first)]),
        segment(1.002, CLIENT, SERVER, c + 1 + len(preface) + len(first),
                client_bytes[len(preface) + len(first):]),
        segment(1.0025, CLIENT, SERVER, c + 1 + cut, client_bytes[cut:]),  # retransmitted
        segment(1.004, SERVER, CLIENT, s + 1, server_first),
        segment(1.010, SERVER, CLIENT, s + 1 + len(server_first), server_second),
        # Began before the capture: no SYN, left out.
        segment(1.011, 40001, SERVER, 77, preface + get(Encoder(), 1, PATH_1)),
    ]
    return write_pcap(path, records)


def test_http2_exchanges_times_and_outcomes(capture: ModuleType, tmp_path: Path) -> None:
    conns = capture.connections(h2_pcap(tmp_path / "h2.pcap"), {SERVER})
    assert [c.client_port for c in conns] == [CLIENT]
    exchanges = {e.request: e for e in capture.http2_exchanges(conns[0], outcome)}
    one, three = exchanges[PATH_1], exchanges[PATH_3]
    # The request's last byte left at 1.001 (first segment 1.000); its answer began at 1.010.
    assert one.sent == pytest.approx(1.001) and one.answered == pytest.approx(1.010)
    assert one.outcome == "EQUIPMENT_UNKNOWN"
    assert three.sent == pytest.approx(1.002) and three.answered == pytest.approx(1.004)
    assert three.outcome == "BLACKLISTED"
    report = capture.summary([list(exchanges.values())], 1000.0,
                             expected={PATH_1: "EQUIPMENT_UNKNOWN", PATH_3: "WHITELISTED"})
    assert report["requests"] == 2 and report["unanswered"] == 0
    assert report["gateway_side_ms"]["max"] == pytest.approx(9.0)
    assert capture.percentiles_ms([0.009, 0.002, 0.004])["p50"] == pytest.approx(4.0)
    assert report["verified"] == 2
    assert report["mismatches"] == {"WHITELISTED -> BLACKLISTED": 1}


def test_a_gap_ends_the_direction(capture: ModuleType, tmp_path: Path) -> None:
    encoder = Encoder()
    data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + get(encoder, 1, PATH_1)
    later = get(encoder, 3, PATH_3)
    pcap = write_pcap(tmp_path / "gap.pcap", [
        segment(1.0, CLIENT, SERVER, 0, flags=0x02),
        segment(1.0, CLIENT, SERVER, 1, data),
        segment(1.1, CLIENT, SERVER, 1 + len(data) + 5, later),  # 5 bytes never captured
    ])
    conn = capture.connections(pcap, {SERVER})[0]
    assert conn.client.broken
    assert [e.request for e in capture.http2_exchanges(conn, outcome)] == [PATH_1]


def diameter(command: int, request: bool, hop: int, end: int, body: bytes = b"") -> bytes:
    flags = 0xC0 if request else 0x40
    return struct.pack("!B3sB3sIII", 1, (20 + len(body)).to_bytes(3, "big"), flags,
                       command.to_bytes(3, "big"), 16777252, hop, end) + body


def test_diameter_exchanges_match_by_hop_by_hop_and_end_to_end(capture: ModuleType,
                                                             tmp_path: Path) -> None:
    cer = diameter(257, True, 1, 1, b"\0" * 8)
    micr_a = diameter(324, True, 2, 20, b"\0" * 40)
    micr_b = diameter(324, True, 3, 20, b"\0" * 40)  # same End-to-End, another Hop-by-Hop
    client = cer + micr_a + micr_b
    cea = diameter(257, False, 1, 1)
    mica_b, mica_a = diameter(324, False, 3, 20, b"\0" * 12), diameter(324, False, 2, 20)
    pcap = write_pcap(tmp_path / "s13.pcap", [
        segment(2.0, CLIENT, 3868, 0, flags=0x02),
        segment(2.0, 3868, CLIENT, 0, flags=0x12),
        segment(2.000, CLIENT, 3868, 1, cer),
        segment(2.001, 3868, CLIENT, 1, cea),
        segment(2.002, CLIENT, 3868, 1 + len(cer), client[len(cer):len(cer) + 30]),
        segment(2.003, CLIENT, 3868, 1 + len(cer) + 30, client[len(cer) + 30:]),
        segment(2.006, 3868, CLIENT, 1 + len(cea), mica_b + mica_a),
    ])
    exchanges = capture.diameter_exchanges(capture.connections(pcap, {3868})[0])
    assert len(exchanges) == 2  # the CER is not an ME-Identity-Check
    sent = sorted((round(e.sent, 4), round(e.answered, 4)) for e in exchanges)
    # MICR A ends in the second segment (2.003) as does B; both answered in one segment.
    assert sent == [(2.003, 2.006), (2.003, 2.006)]


def test_slip_against_an_even_schedule(capture: ModuleType) -> None:
    late = capture.slip([10.0, 10.001, 10.0025, 10.003, 10.0035], 1000.0)
    # Anchored on the least late request: the one sent early (10.0035 for 10.004) is on time.
    assert min(late) == pytest.approx(0.0, abs=1e-9)
    assert late == pytest.approx([0.0005, 0.0005, 0.001, 0.0005, 0.0], abs=1e-9)


@pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("h2load") is None,
                    reason="needs dumpcap (Debian tshark) and h2load (nghttp2-client)")
def test_a_real_capture_of_h2load_against_the_n5g_eir_server(capture: ModuleType,
                                                             tmp_path: Path) -> None:
    """h2load against the N5g-eir HTTP/2 server as bench/n5g_eir.py runs its ceiling (a
    pre-built 200), captured by dumpcap: every request seen, answered and verified."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bench = BENCH / "n5g_eir.py"
    server = subprocess.Popen([sys.executable, str(bench), "--serve-ceiling", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cap = capture.Capture(tmp_path / "real.pcap", [port])
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("ready")
        try:
            cap.start()
        except RuntimeError as exc:
            pytest.skip(f"dumpcap cannot capture on lo here: {exc}")
        uri = f"http://127.0.0.1:{port}{PATH_1}"
        run = subprocess.run(["h2load", "-c", "2", "-m", "4", "-n", "200", uri],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        time.sleep(0.3)
    finally:
        cap.stop()
        server.terminate()
        server.wait(timeout=20)
    conns = capture.connections(cap.path, {port})
    exchanges = [capture.http2_exchanges(c, outcome) for c in conns]
    report = capture.summary(exchanges, 100.0, expected={PATH_1: "WHITELISTED"})
    assert report["connections"] == 2 and report["requests"] == 200
    assert report["unanswered"] == 0 and report["verified"] == 200 and not report["mismatches"]
    assert 0 < report["gateway_side_ms"]["p50"] <= report["gateway_side_ms"]["max"]
