"""Wireshark reads our traffic: a full S13 exchange written to a pcap and dissected by tshark.

The exchange (CER/CEA, DWR/DWA, ECR/ECA for each Equipment-Status, ECR/ECA 5422, an ECR without
Terminal-Information answered 5005 with Failed-AVP, an unknown command answered 3001 with the E bit,
DPR/DPA) is encoded by our codec and answer builder, wrapped in synthesized Ethernet/IPv4/TCP on
127.0.0.1 port 3868 with consistent sequence numbers, and every message must come out of tshark as
Diameter with the expected fields and no malformed-packet or expert warning/error.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from diameter.answer import answer_to, error_answer
from diameter.codec import FLAG_PROXIABLE, FLAG_REQUEST, Avp, Message, decode_message
from diameter.dictionary import DICTIONARY
from diameter.validate import check_request
from tests.diameter import vectors as v
from tests.diameter.builders import EIR, S13, TGPP, eca_body

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (Debian/Ubuntu: apt-get install tshark)"
)

CLIENT = ("127.0.0.1", 40868)
SERVER = ("127.0.0.1", 3868)


# -- pcap writing -------------------------------------------------------------------------------


def write_tcp_pcap(path: Path, messages: list[tuple[bool, bytes]]) -> None:
    """Write ``(from_client, payload)`` segments of one TCP connection client -> SERVER:3868,
    after a three-way handshake and followed by FIN/ACK, with consistent seq/ack numbers."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Packet
    from scapy.utils import wrpcap

    seq = {True: 1_000_000, False: 2_000_000}  # next sequence number of each side

    def segment(from_client: bool, flags: str, payload: bytes = b"") -> Packet:
        src, dst = (CLIENT, SERVER) if from_client else (SERVER, CLIENT)
        pkt = (
            Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
            / IP(src=src[0], dst=dst[0])
            / TCP(
                sport=src[1],
                dport=dst[1],
                flags=flags,
                seq=seq[from_client],
                ack=seq[not from_client] if "A" in flags else 0,
                window=65535,
            )
        )
        if payload:
            pkt = pkt / payload
        seq[from_client] += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)
        return pkt

    packets = [segment(True, "S"), segment(False, "SA"), segment(True, "A")]
    packets += [segment(from_client, "PA", payload) for from_client, payload in messages]
    packets += [segment(True, "FA"), segment(False, "FA"), segment(True, "A")]
    for i, pkt in enumerate(packets):
        pkt.time = 1_700_000_000 + i / 1000
    wrpcap(str(path), packets)


# -- the exchange -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    command_code: int
    is_request: bool
    result_code: int | None = None
    experimental_result_code: int | None = None
    equipment_status: int | None = None
    error_bit: bool = False


def ecr(hop: int, imei: str | None = v.IMEI, command_code: int = 324) -> Message:
    avps = [
        Avp.new("Session-Id", f"{v.MME_HOST};1700000000;{hop}"),
        Avp.new(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13)],
        ),
        Avp.new("Auth-Session-State", 1),
        Avp.new("Origin-Host", v.MME_HOST),
        Avp.new("Origin-Realm", v.REALM),
        Avp.new("Destination-Realm", v.REALM),
    ]
    if imei is not None:
        avps.append(
            Avp.new(
                "Terminal-Information",
                [Avp.new("IMEI", imei), Avp.new("Software-Version", "01")],
            )
        )
    avps.append(Avp.new("User-Name", v.IMSI))
    avps.append(
        Avp.new(
            "Proxy-Info", [Avp.new("Proxy-Host", "dra.example.net"), Avp.new("Proxy-State", b"s")]
        )
    )
    return Message(command_code, S13, FLAG_REQUEST | FLAG_PROXIABLE, hop, 0x7000 + hop, avps)


def exchange() -> list[tuple[bool, bytes, Expected]]:
    """Our traffic, in order: (from the MME?, wire octets, what tshark must show)."""
    out: list[tuple[bool, bytes, Expected]] = []

    def request(msg: Message) -> Message:
        wire = msg.encode()
        out.append((True, wire, Expected(msg.command_code, True)))
        return decode_message(wire)

    def answer(msg: Message, expected: Expected) -> None:
        out.append((False, msg.encode(), expected))

    cer = request(decode_message(v.CER))
    problem = check_request(cer, DICTIONARY.commands_by_abbrev["CER"])
    assert problem is None
    cea_body = [
        Avp.new("Host-IP-Address", "127.0.0.1"),
        Avp.new("Vendor-Id", 0),
        Avp.new("Product-Name", "eir-gateway"),
        Avp.new("Auth-Application-Id", S13),
        Avp.new("Firmware-Revision", 1),
    ]
    answer(answer_to(cer, EIR, 2001, body=cea_body), Expected(257, False, 2001))

    dwr = request(decode_message(v.DWR))
    answer(answer_to(dwr, EIR, 2001), Expected(280, False, 2001))

    for hop, status in ((11, 0), (12, 1), (13, 2)):
        req = request(ecr(hop))
        assert check_request(req, DICTIONARY.commands_by_abbrev["ECR"]) is None
        answer(
            answer_to(req, EIR, 2001, body=eca_body(status=status)),
            Expected(324, False, 2001, equipment_status=status),
        )

    req = request(ecr(14, imei="99000000000000"))
    answer(
        answer_to(req, EIR, None, body=eca_body(experimental=5422)),
        Expected(324, False, experimental_result_code=5422),
    )

    req = request(ecr(15, imei=None))
    missing = check_request(req, DICTIONARY.commands_by_abbrev["ECR"])
    assert missing is not None and missing.result_code == 5005
    answer(error_answer(req, EIR, missing, body=eca_body()), Expected(324, False, 5005))

    # A command the S13 application does not have: 3001 with the E bit (RFC 6733 §7.1.3).
    req = request(ecr(16, command_code=316))  # 316 is Update-Location (S6a), not S13
    answer(answer_to(req, EIR, 3001), Expected(316, False, 3001, error_bit=True))

    dpr = request(decode_message(v.DPR))
    answer(answer_to(dpr, EIR, 2001), Expected(282, False, 2001))
    return out


# -- running tshark ---------------------------------------------------------------------------


def tshark(*args: str) -> str:
    assert TSHARK is not None
    result = subprocess.run(
        [TSHARK, "-n", "-o", "tcp.analyze_sequence_numbers:TRUE", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Expected]]:
    traffic = exchange()
    path = tmp_path_factory.mktemp("tshark") / "s13.pcap"
    write_tcp_pcap(path, [(from_client, wire) for from_client, wire, _ in traffic])
    return path, [expected for _, _, expected in traffic]


FIELDS = [
    "diameter.cmd.code",
    "diameter.flags.request",
    "diameter.flags.error",
    "diameter.Result-Code",
    "diameter.Experimental-Result-Code",
    "diameter.Equipment-Status",
    "diameter.applicationId",
]


def rows(path: Path) -> list[dict[str, str]]:
    args = ["-r", str(path), "-Y", "diameter", "-T", "fields", "-E", "separator=|"]
    for field in FIELDS:
        args += ["-e", field]
    out = []
    for line in tshark(*args).splitlines():
        out.append(dict(zip(FIELDS, line.split("|"), strict=True)))
    return out


def flag(value: str) -> bool:
    return value in ("1", "True", "true")


def test_every_message_is_decoded_as_diameter(capture: tuple[Path, list[Expected]]) -> None:
    path, expected = capture
    got = rows(path)
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert int(row["diameter.cmd.code"]) == want.command_code, row
        assert flag(row["diameter.flags.request"]) is want.is_request, row
        assert flag(row["diameter.flags.error"]) is want.error_bit, row
        rc = row["diameter.Result-Code"]
        assert (int(rc) if rc else None) == want.result_code, row
        erc = row["diameter.Experimental-Result-Code"]
        assert (int(erc) if erc else None) == want.experimental_result_code, row
        status = row["diameter.Equipment-Status"]
        assert (int(status) if status else None) == want.equipment_status, row
        if want.command_code == 324:
            assert int(row["diameter.applicationId"]) == S13


# Wireshark warns "Data is empty" for any AVP whose data is empty. RFC 6733 §7.5 asks for the
# missing AVP "of correct minimum length" with zeroes: for Terminal-Information, whose members are
# all optional, that is no data at all. This one warning, on the member of the 5005 answer's
# Failed-AVP, is expected; any other warning, any error or malformed packet fails the test.
ALLOWED_WARNINGS = {"Data is empty"}


def frame_of_5005(path: Path) -> str:
    out = tshark(
        "-r", str(path), "-Y", "diameter.Result-Code == 5005", "-T", "fields", "-e", "frame.number"
    )
    (frame,) = out.split()
    return frame


def test_no_malformed_packets_or_expert_errors(capture: tuple[Path, list[Expected]]) -> None:
    path, _ = capture
    assert tshark("-r", str(path), "-Y", "_ws.malformed") == ""
    errors = tshark("-r", str(path), "-Y", "_ws.expert.severity == error")
    assert errors == ""
    warnings = tshark(
        "-r",
        str(path),
        "-Y",
        "_ws.expert.severity == warning",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "frame.number",
        "-e",
        "_ws.expert.message",
    )
    assert [line.split("|") for line in warnings.splitlines()] == [
        [frame_of_5005(path), "Data is empty"]
    ]
    verbose = tshark("-r", str(path), "-V")
    assert "Malformed" not in verbose
    assert "Expert Info (Error" not in verbose
    assert verbose.count("Expert Info (Warning") == 1


def test_expert_summary(capture: tuple[Path, list[Expected]]) -> None:
    path, _ = capture
    summary = tshark("-q", "-r", str(path), "-z", "expert")
    # "-z expert" prints one section per severity that occurred
    assert "Errors (" not in summary, summary
    assert "Warns (1)" in summary, summary
    warn_section = summary.split("Warns (1)")[1].split("\n\n")[0]
    assert "Diameter  Data is empty" in warn_section
    # TCP notes and chats only (handshake, FIN): nothing about the Diameter payloads
    for section in ("Notes (", "Chats ("):
        if section in summary:
            body = summary.split(section)[1].split("\n\n")[0]
            assert "Diameter" not in body, body


def test_wireshark_decodes_the_s13_avps(capture: tuple[Path, list[Expected]]) -> None:
    path, _ = capture
    out = tshark(
        "-r",
        str(path),
        "-Y",
        "diameter.cmd.code == 324 && diameter.flags.request == 1",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "diameter.IMEI",
        "-e",
        "diameter.Software-Version",
        "-e",
        "diameter.User-Name",
        "-e",
        "diameter.Session-Id",
    )
    lines = out.splitlines()
    assert len(lines) == 5  # four ECRs with Terminal-Information, one without
    imeis = [line.split("|")[0] for line in lines]
    assert imeis == [v.IMEI, v.IMEI, v.IMEI, "99000000000000", ""]
    for line in lines:
        _, _sv, user, session = line.split("|")
        assert user == v.IMSI
        assert session.startswith(f"{v.MME_HOST};1700000000;")
    assert [line.split("|")[1] for line in lines] == ["01", "01", "01", "01", ""]


def test_wireshark_pairs_answers_with_requests(capture: tuple[Path, list[Expected]]) -> None:
    path, expected = capture
    out = tshark("-r", str(path), "-Y", "diameter.answer_to", "-T", "fields", "-e", "frame.number")
    # every answer is matched to its request by Hop-by-Hop / End-to-End identifier
    assert len(out.split()) == sum(1 for e in expected if not e.is_request)


def test_failed_avp_and_e_bit_answer(capture: tuple[Path, list[Expected]]) -> None:
    path, _ = capture
    verbose = tshark("-r", str(path), "-Y", "diameter.Result-Code == 5005", "-V")
    assert "Failed-AVP" in verbose
    assert "Terminal-Information" in verbose
    e_bit = tshark(
        "-r",
        str(path),
        "-Y",
        "diameter.flags.error == 1",
        "-T",
        "fields",
        "-e",
        "diameter.Result-Code",
    )
    assert e_bit.split() == ["3001"]
