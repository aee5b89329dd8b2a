"""Cross-check with an independent implementation: scapy's Diameter layer (scapy.contrib.diameter).

scapy builds CER, DWR, DPR and ME-Identity-Check-Request messages that our codec decodes to the
same values; scapy dissects our encodings (CEA, DWA, DPA, ECA with each Equipment-Status, the 5422
Experimental-Result form, E-bit 3xxx answers with Failed-AVP) to the same fields. AVPs are compared
through scapy's generic fields (code, flags, vendor, raw data octets) and, where scapy's dictionary
types them, through its typed values too.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest

from diameter.answer import answer_to, error_answer
from diameter.codec import Avp, Message, decode_message
from diameter.dictionary import DICTIONARY
from diameter.validate import check_avps, check_request
from tests.diameter import vectors as v
from tests.diameter.builders import EIR, S13, TGPP, command, eca_body

scapy_diameter = pytest.importorskip("scapy.contrib.diameter")
logging.getLogger("scapy").setLevel(logging.ERROR)
AVP = scapy_diameter.AVP
DiamG = scapy_diameter.DiamG
DiamReq = scapy_diameter.DiamReq





# -- scapy's view of a message, as plain data ----------------------------------------------------


def scapy_tree(avps: list[Any]) -> list[tuple[int, int, int, Any]]:
    """(code, flags, vendor, raw data | children) for each scapy AVP; padding (scapy keeps it as a
    Raw payload) is dropped. Grouped AVPs are those scapy dissected into a list of AVPs."""
    out: list[tuple[int, int, int, Any]] = []
    for avp in avps:
        flags = int(avp.avpFlags)
        vendor = int(avp.avpVnd) if flags & 0x80 else 0
        if isinstance(avp.val, list):
            content: Any = scapy_tree(avp.val)
        else:
            header = 12 if flags & 0x80 else 8
            content = bytes(avp)[header : avp.avpLen]
        out.append((avp.avpCode, flags, vendor, content))
    return out


def our_tree(avps: list[Avp]) -> list[tuple[int, int, int, Any]]:
    out: list[tuple[int, int, int, Any]] = []
    for avp in avps:
        defn = avp.definition()
        grouped = defn is not None and defn.grammar is not None
        content: Any = our_tree(avp.children) if grouped else avp.data
        out.append((avp.code, avp.flags, avp.vendor, content))
    return out


def scapy_header(pkt: Any) -> tuple[int, int, int, int, int, int, int]:
    return (
        pkt.version,
        pkt.drLen,
        int(pkt.drFlags),
        pkt.drCode,
        pkt.drAppId,
        pkt.drHbHId,
        pkt.drEtEId,
    )


def our_header(wire: bytes) -> tuple[int, int, int, int, int, int, int]:
    msg = decode_message(wire)
    return (
        msg.version,
        len(wire),
        msg.flags,
        msg.command_code,
        msg.application_id,
        msg.hop_by_hop,
        msg.end_to_end,
    )


def scapy_find(avps: list[Any], code: int) -> Any:
    (found,) = [a for a in avps if a.avpCode == code]
    return found


def assert_same_as_scapy(wire: bytes) -> Any:
    """scapy dissects ``wire`` to the same header and AVP tree as our decoder, and re-serialises
    its dissection to the same octets."""
    pkt = DiamG(wire)
    assert scapy_header(pkt) == our_header(wire)
    assert scapy_tree(pkt.avpList) == our_tree(decode_message(wire).avps)
    assert bytes(pkt) == wire
    return pkt


# -- scapy builds, we decode -------------------------------------------------------------------


def scapy_vsai() -> Any:
    return AVP(260, val=[AVP(266, val=TGPP), AVP(258, val=S13)])


def scapy_cer() -> bytes:
    return bytes(
        DiamReq(
            257,
            drHbHId=0x101,
            drEtEId=0x5CA1AB1E,
            avpList=[
                AVP(264, val=v.MME_HOST),
                AVP(296, val=v.REALM),
                AVP(257, val="127.0.0.1"),
                AVP(257, val="::1"),
                AVP(266, val=TGPP),
                AVP(269, val="mme-sim"),
                AVP(278, val=1700000000),
                AVP(265, val=TGPP),
                AVP(258, val=S13),
                scapy_vsai(),
                AVP(267, val=1),
            ],
        )
    )


def scapy_dwr() -> bytes:
    return bytes(
        DiamReq(
            280,
            drHbHId=0x102,
            drEtEId=0x5CA1AB1F,
            avpList=[AVP(264, val=v.MME_HOST), AVP(296, val=v.REALM), AVP(278, val=1700000000)],
        )
    )


def scapy_dpr(cause: int = 0) -> bytes:
    return bytes(
        DiamReq(
            282,
            drHbHId=0x103,
            drEtEId=0x5CA1AB20,
            avpList=[AVP(264, val=v.MME_HOST), AVP(296, val=v.REALM), AVP(273, val=cause)],
        )
    )


def scapy_ecr(imei: str = v.IMEI, *, software_version: str | None = "14") -> bytes:
    terminal = [AVP([1402, TGPP], val=imei)]
    if software_version is not None:
        terminal.append(AVP([1403, TGPP], val=software_version))
    return bytes(
        DiamReq(
            324,
            drAppId=S13,
            drHbHId=0x104,
            drEtEId=0x5CA1AB21,
            avpList=[
                AVP(263, val=v.SESSION_ID),
                scapy_vsai(),
                AVP(277, val=1),
                AVP(264, val=v.MME_HOST),
                AVP(296, val=v.REALM),
                AVP(283, val=v.REALM),
                AVP([1401, TGPP], val=terminal),
                AVP(1, val=v.IMSI),
                AVP(284, val=[AVP(280, val="dra.example.net"), AVP(33, val=b"\x01\x02ps")]),
            ],
        )
    )


@pytest.mark.parametrize(
    ("name", "build"),
    [("CER", scapy_cer), ("DWR", scapy_dwr), ("DPR", scapy_dpr), ("ECR", scapy_ecr)],
)
def test_scapy_builds_our_golden_vectors(name: str, build: Any) -> None:
    # Two independent encoders agree octet for octet with the annotated vectors.
    assert build() == v.WELL_FORMED[name]


def test_scapy_cer_decodes_to_the_same_values() -> None:
    msg = decode_message(scapy_cer())
    assert msg.is_request and not msg.is_proxiable
    assert (msg.command_code, msg.application_id) == (257, 0)
    assert check_request(msg, command(0, 257)) is None
    assert msg.get("Origin-Host") == v.MME_HOST
    assert msg.get("Origin-Realm") == v.REALM
    assert [a.value for a in msg.find_all(257)] == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert msg.get("Vendor-Id") == TGPP
    assert msg.get("Product-Name") == "mme-sim"
    assert msg.get("Origin-State-Id") == 1700000000
    assert msg.get("Auth-Application-Id") == S13
    vsai = msg.find(260)
    assert vsai is not None
    assert [(c.code, c.value) for c in vsai.children] == [(266, TGPP), (258, S13)]
    assert msg.get("Firmware-Revision") == 1
    # scapy took the flags from its own tables: M on the base AVPs, none on Product-Name
    # and Firmware-Revision (RFC 6733 §4.5 "MUST NOT")
    assert [a.flags for a in msg.avps] == [0x40] * 5 + [0x00] + [0x40] * 4 + [0x00]


def test_scapy_dwr_and_dpr_decode_to_the_same_values() -> None:
    dwr = decode_message(scapy_dwr())
    assert check_request(dwr, command(0, 280)) is None
    assert (dwr.get("Origin-Host"), dwr.get("Origin-State-Id")) == (v.MME_HOST, 1700000000)
    for cause in (0, 1, 2):
        dpr = decode_message(scapy_dpr(cause))
        assert check_request(dpr, command(0, 282)) is None
        assert dpr.get("Disconnect-Cause") == cause


@pytest.mark.parametrize(
    ("imei", "sv"), [(v.IMEI, "14"), ("490154203237518", None), ("35395803121326", "99")]
)
def test_scapy_ecr_decodes_to_the_same_values(imei: str, sv: str | None) -> None:
    msg = decode_message(scapy_ecr(imei, software_version=sv))
    assert msg.flags == 0xC0  # scapy's table: ECR is R+P
    assert (msg.command_code, msg.application_id) == (324, S13)
    assert check_request(msg, command(S13, 324)) is None
    assert msg.get("Session-Id") == v.SESSION_ID
    assert msg.get("Auth-Session-State") == 1
    assert msg.get("Destination-Realm") == v.REALM
    assert msg.get("User-Name") == v.IMSI
    terminal = msg.find(1401, TGPP)
    assert terminal is not None and terminal.flags == 0xC0
    imei_avp = terminal.find(1402, TGPP)
    assert imei_avp is not None and imei_avp.value == imei
    sv_avp = terminal.find(1403, TGPP)
    assert (sv_avp.value if sv_avp else None) == sv
    (proxy,) = msg.find_all(284)
    assert [c.value for c in proxy.children] == ["dra.example.net", b"\x01\x02ps"]


# -- we build, scapy dissects -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(v.WELL_FORMED))
def test_scapy_dissects_our_golden_vectors(name: str) -> None:
    assert_same_as_scapy(v.WELL_FORMED[name])


def _cea() -> bytes:
    cer = decode_message(v.CER)
    body = [
        Avp.new("Host-IP-Address", "127.0.0.1"),
        Avp.new("Vendor-Id", 0),
        Avp.new("Product-Name", "eir-gateway"),
        Avp.new("Origin-State-Id", 7),
        Avp.new("Auth-Application-Id", S13),
        Avp.new(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13)],
        ),
        Avp.new("Firmware-Revision", 1),
    ]
    return answer_to(cer, EIR, 2001, body=body).encode()


def test_scapy_dissects_our_cea() -> None:
    wire = _cea()
    pkt = assert_same_as_scapy(wire)
    assert int(pkt.drFlags) == 0 and pkt.drCode == 257
    assert scapy_find(pkt.avpList, 268).val == 2001
    assert scapy_find(pkt.avpList, 264).val == v.EIR_HOST.encode()
    assert scapy_find(pkt.avpList, 257).val == b"\x00\x01\x7f\x00\x00\x01"
    assert scapy_find(pkt.avpList, 269).val == b"eir-gateway"
    assert check_avps(decode_message(wire).avps, command(0, 257).answer, DICTIONARY, ()) is None


@pytest.mark.parametrize(("request_wire", "code"), [(v.DWR, 280), (v.DPR, 282)])
def test_scapy_dissects_our_dwa_and_dpa(request_wire: bytes, code: int) -> None:
    wire = answer_to(decode_message(request_wire), EIR, 2001).encode()
    pkt = assert_same_as_scapy(wire)
    assert (int(pkt.drFlags), pkt.drCode, pkt.drAppId) == (0, code, 0)
    assert scapy_find(pkt.avpList, 268).val == 2001
    assert scapy_find(pkt.avpList, 296).val == v.REALM.encode()


def _eca(status: int | None, *, experimental: int | None = None) -> bytes:
    request = decode_message(scapy_ecr())
    body = eca_body(status, experimental)
    if experimental is not None:
        return answer_to(request, EIR, None, body=body).encode()
    assert status is not None
    return answer_to(request, EIR, 2001, body=body).encode()


@pytest.mark.parametrize("status", [0, 1, 2])
def test_scapy_dissects_our_eca_with_each_equipment_status(status: int) -> None:
    wire = _eca(status)
    pkt = assert_same_as_scapy(wire)
    assert (int(pkt.drFlags), pkt.drCode, pkt.drAppId) == (0x40, 324, S13)
    assert (pkt.drHbHId, pkt.drEtEId) == (0x104, 0x5CA1AB21)
    assert pkt.avpList[0].avpCode == 263  # Session-Id first
    assert pkt.avpList[0].val == v.SESSION_ID.encode()
    assert scapy_find(pkt.avpList, 268).val == 2001
    status_avp = scapy_find(pkt.avpList, 1445)
    assert status_avp.name == "AVP Equipment-Status"  # scapy knows the S13 AVP
    assert (status_avp.val, int(status_avp.avpFlags), status_avp.avpVnd) == (status, 0xC0, TGPP)
    proxy = scapy_find(pkt.avpList, 284)
    assert [a.val for a in proxy.val if hasattr(a, "avpCode")] == [
        b"dra.example.net",
        b"\x01\x02ps",
    ]


def test_scapy_dissects_our_5422_answer() -> None:
    wire = _eca(None, experimental=5422)
    pkt = assert_same_as_scapy(wire)
    assert not [a for a in pkt.avpList if a.avpCode == 268]  # no Result-Code (TS 29.272 §7.4.3)
    er = scapy_find(pkt.avpList, 297)
    assert [(a.avpCode, a.val) for a in er.val if hasattr(a, "avpCode")] == [
        (266, TGPP),
        (298, 5422),
    ]
    assert not [a for a in pkt.avpList if a.avpCode == 1445]


def test_scapy_dissects_our_e_bit_answer_with_failed_avp() -> None:
    # an ECR with an unknown M-bit vendor AVP and the E bit set: 3008 comes first (E bit answer)
    request = decode_message(scapy_ecr())
    request.avps.append(Avp(4711, 0xC0, TGPP, b"?"))
    request.flags |= 0x20
    request = decode_message(request.encode())
    problem = check_request(request, command(S13, 324))
    assert problem is not None and problem.result_code == 3008
    wire = error_answer(request, EIR, problem).encode()
    pkt = assert_same_as_scapy(wire)
    assert int(pkt.drFlags) == 0x60  # P copied, E set, R clear
    assert scapy_find(pkt.avpList, 268).val == 3008
    # 3009 with a Failed-AVP holding the offending AVP
    request.flags &= ~0x20
    request.avps[-1] = Avp(4711, 0xC1, TGPP, b"?")
    request = decode_message(request.encode())
    problem = check_request(request, command(S13, 324))
    assert problem is not None and problem.result_code == 3009
    wire = error_answer(request, EIR, problem).encode()
    pkt = assert_same_as_scapy(wire)
    assert int(pkt.drFlags) == 0x60
    failed = scapy_find(pkt.avpList, 279)
    (inner,) = [a for a in failed.val if hasattr(a, "avpCode")]
    assert (inner.avpCode, int(inner.avpFlags), inner.avpVnd) == (4711, 0xC1, TGPP)
    assert check_avps(decode_message(wire).avps, DICTIONARY.answer_message, DICTIONARY, ()) is None


def test_scapy_dissects_our_3001_for_an_unknown_command() -> None:
    request = Message(
        325,
        S13,
        0xC0,
        9,
        10,
        [Avp.new("Session-Id", "x;1"), Avp.new("Origin-Host", v.MME_HOST)],
    )
    wire = answer_to(decode_message(request.encode()), EIR, 3001).encode()
    pkt = assert_same_as_scapy(wire)
    assert int(pkt.drFlags) == 0x60
    assert [a.avpCode for a in pkt.avpList] == [263, 268, 264, 296]


def test_scapy_dissects_our_5005_with_zero_filled_failed_avp() -> None:
    request = decode_message(scapy_ecr())
    request.avps = [a for a in request.avps if a.code != 1401]
    request = decode_message(request.encode())
    problem = check_request(request, command(S13, 324))
    assert problem is not None and problem.result_code == 5005
    wire = error_answer(request, EIR, problem, body=[Avp.new("Auth-Session-State", 1)]).encode()
    pkt = assert_same_as_scapy(wire)
    assert int(pkt.drFlags) == 0x40  # 5xxx: no E bit
    failed = scapy_find(pkt.avpList, 279)
    (missing,) = [a for a in failed.val if hasattr(a, "avpCode")]
    assert (missing.avpCode, int(missing.avpFlags), missing.avpVnd, missing.avpLen) == (
        1401,
        0xC0,
        TGPP,
        12,
    )
