"""Codec: golden wire vectors, every RFC 6733 data type, flags, vendors, padding, raw unknown AVPs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from typing import Any

import pytest

from diameter.codec import (
    AVP_FLAG_MANDATORY,
    AVP_FLAG_PROTECTED,
    AVP_FLAG_VENDOR,
    FIXED_SIZE,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    HEADER_LENGTH,
    Avp,
    Message,
    decode_avps,
    decode_message,
    decode_value,
    encode_avp,
    encode_message,
    encode_value,
)
from diameter.dictionary import DICTIONARY, AvpType
from diameter.errors import DecodeError, DiameterError, EncodeError
from tests.diameter import vectors as v
from tests.diameter.builders import S13, TGPP

UTC = dt.UTC


def a(name: str, value: Any) -> Avp:
    return Avp.new(name, value)


def vsai() -> Avp:
    return a(
        "Vendor-Specific-Application-Id", [a("Vendor-Id", TGPP), a("Auth-Application-Id", S13)]
    )


def proxy_info() -> Avp:
    return a("Proxy-Info", [a("Proxy-Host", "dra.example.net"), a("Proxy-State", b"\x01\x02ps")])


# -- golden vectors: our encoder produces exactly these bytes, our decoder reads them back -------

GOLDEN_MESSAGES: dict[str, Message] = {
    "CER": Message(
        257,
        0,
        FLAG_REQUEST,
        0x101,
        0x5CA1AB1E,
        [
            a("Origin-Host", v.MME_HOST),
            a("Origin-Realm", v.REALM),
            a("Host-IP-Address", "127.0.0.1"),
            a("Host-IP-Address", "::1"),
            a("Vendor-Id", TGPP),
            a("Product-Name", "mme-sim"),
            a("Origin-State-Id", 1700000000),
            a("Supported-Vendor-Id", TGPP),
            a("Auth-Application-Id", S13),
            vsai(),
            a("Firmware-Revision", 1),
        ],
    ),
    "DWR": Message(
        280,
        0,
        FLAG_REQUEST,
        0x102,
        0x5CA1AB1F,
        [
            a("Origin-Host", v.MME_HOST),
            a("Origin-Realm", v.REALM),
            a("Origin-State-Id", 1700000000),
        ],
    ),
    "DPR": Message(
        282,
        0,
        FLAG_REQUEST,
        0x103,
        0x5CA1AB20,
        [a("Origin-Host", v.MME_HOST), a("Origin-Realm", v.REALM), a("Disconnect-Cause", 0)],
    ),
    "ECR": Message(
        324,
        S13,
        FLAG_REQUEST | FLAG_PROXIABLE,
        0x104,
        0x5CA1AB21,
        [
            a("Session-Id", v.SESSION_ID),
            vsai(),
            a("Auth-Session-State", 1),
            a("Origin-Host", v.MME_HOST),
            a("Origin-Realm", v.REALM),
            a("Destination-Realm", v.REALM),
            a("Terminal-Information", [a("IMEI", v.IMEI), a("Software-Version", "14")]),
            a("User-Name", v.IMSI),
            proxy_info(),
        ],
    ),
    "ECA_2001": Message(
        324,
        S13,
        FLAG_PROXIABLE,
        0x104,
        0x5CA1AB21,
        [
            a("Session-Id", v.SESSION_ID),
            vsai(),
            a("Result-Code", 2001),
            a("Auth-Session-State", 1),
            a("Origin-Host", v.EIR_HOST),
            a("Origin-Realm", v.REALM),
            a("Equipment-Status", 0),
            proxy_info(),
        ],
    ),
    "ECA_5422": Message(
        324,
        S13,
        FLAG_PROXIABLE,
        0x104,
        0x5CA1AB21,
        [
            a("Session-Id", v.SESSION_ID),
            vsai(),
            a("Experimental-Result", [a("Vendor-Id", TGPP), a("Experimental-Result-Code", 5422)]),
            a("Auth-Session-State", 1),
            a("Origin-Host", v.EIR_HOST),
            a("Origin-Realm", v.REALM),
            proxy_info(),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(v.WELL_FORMED))
def test_golden_encode(name: str) -> None:
    assert GOLDEN_MESSAGES[name].encode() == v.WELL_FORMED[name]


@pytest.mark.parametrize("name", sorted(v.WELL_FORMED))
def test_golden_decode_and_reencode(name: str) -> None:
    wire = v.WELL_FORMED[name]
    msg = decode_message(wire)
    want = GOLDEN_MESSAGES[name]
    assert msg.problem is None
    assert (msg.version, msg.flags, msg.command_code, msg.application_id) == (
        1,
        want.flags,
        want.command_code,
        want.application_id,
    )
    assert (msg.hop_by_hop, msg.end_to_end) == (want.hop_by_hop, want.end_to_end)
    assert msg.avps == want.avps
    assert msg.encode() == wire


def test_golden_ecr_values() -> None:
    msg = decode_message(v.ECR)
    assert msg.is_request and msg.is_proxiable and not msg.is_error and not msg.is_retransmit
    assert msg.get("Session-Id") == v.SESSION_ID
    assert msg.get("Auth-Session-State") == 1
    assert msg.get("Origin-Host") == v.MME_HOST
    assert msg.get("Destination-Realm") == v.REALM
    assert msg.get("User-Name") == v.IMSI
    assert msg.get("Destination-Host", "absent") == "absent"
    terminal = msg.find(1401, TGPP)
    assert terminal is not None
    assert terminal.flags == AVP_FLAG_VENDOR | AVP_FLAG_MANDATORY
    imei = terminal.find(1402, TGPP)
    sv = terminal.find(1403, TGPP)
    assert imei is not None and imei.value == v.IMEI
    assert sv is not None and sv.value == v.SOFTWARE_VERSION
    assert terminal.find(1471, TGPP) is None
    (proxy,) = msg.find_all(284)
    assert [c.value for c in proxy.children] == ["dra.example.net", b"\x01\x02ps"]
    vsai_avp = msg.find(260)
    assert vsai_avp is not None
    assert [(c.code, c.value) for c in vsai_avp.value] == [(266, TGPP), (258, S13)]


def test_golden_answers_values() -> None:
    ok = decode_message(v.ECA_2001)
    assert not ok.is_request and ok.is_proxiable
    assert ok.get("Result-Code") == 2001
    assert ok.get("Equipment-Status") == 0
    assert ok.get("Experimental-Result") is None
    unknown = decode_message(v.ECA_5422)
    assert unknown.get("Result-Code") is None
    er = unknown.find(297)
    assert er is not None
    assert [(c.code, c.value) for c in er.children] == [(266, TGPP), (298, 5422)]


def test_golden_base_values() -> None:
    cer = decode_message(v.CER)
    assert [x.value for x in cer.find_all(257)] == [
        ipaddress.IPv4Address("127.0.0.1"),
        ipaddress.IPv6Address("::1"),
    ]
    assert cer.get("Product-Name") == "mme-sim"
    product = cer.find(269)
    assert product is not None and product.flags == 0  # M MUST NOT (RFC 6733 §4.5)
    assert cer.get("Firmware-Revision") == 1
    assert decode_message(v.DPR).get("Disconnect-Cause") == 0
    assert decode_message(v.DWR).get("Origin-State-Id") == 1700000000


# -- malformed vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (v.BAD_VERSION, 5011),
        (v.LENGTH_NOT_MULTIPLE_OF_4, 5015),
        (v.LENGTH_BELOW_HEADER, 5015),
        (v.DWR[:19], 5015),  # shorter than a header
        (v.DWR + b"\0\0\0\0", 5015),  # more bytes than the header's length
        (v.DWR[:-4], 5015),  # fewer bytes than the header's length
    ],
)
def test_unusable_header_raises(wire: bytes, code: int) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(wire)
    assert info.value.result_code == code


def test_avp_length_too_short_is_a_problem_not_an_exception() -> None:
    msg = decode_message(v.AVP_LENGTH_TOO_SHORT)
    assert msg.problem is not None
    assert msg.problem.result_code == 5014
    # RFC 6733 §7.1.5 (5014): the offending AVP header with a zero-filled payload of the minimum
    # length for its type (Origin-Realm, a DiameterIdentity: one octet).
    failed = msg.problem.failed_avp
    assert failed is not None
    assert (failed.code, failed.flags, failed.vendor, failed.data) == (296, 0x40, 0, b"\x00")
    assert [x.code for x in msg.avps] == [264]  # decoded up to the problem


def test_avp_running_past_the_end() -> None:
    msg = decode_message(v.AVP_PAST_END)
    assert msg.problem is not None and msg.problem.result_code == 5014
    failed = msg.problem.failed_avp
    assert failed is not None
    # Origin-State-Id is Unsigned32: a zero-filled 4-octet payload.
    assert failed.encode() == bytes.fromhex("00000116 4000000c 00000000")
    assert [x.code for x in msg.avps] == [264, 296]


def test_stray_bytes() -> None:
    msg = decode_message(v.STRAY_BYTES)
    assert msg.problem is not None
    assert msg.problem.result_code == 5015
    assert msg.problem.failed_avp is None
    assert [x.code for x in msg.avps] == [264, 296, 278]


def test_bad_padding_inside_grouped() -> None:
    msg = decode_message(v.BAD_PADDING_IN_GROUPED)
    assert msg.problem is None  # the top level is fine; the Grouped AVP is not
    terminal = msg.find(1401, TGPP)
    assert terminal is not None
    with pytest.raises(DecodeError) as info:
        terminal.children  # noqa: B018
    assert info.value.result_code == 5014
    with pytest.raises(DecodeError):
        terminal.value  # noqa: B018


def test_nonzero_padding_is_ignored() -> None:
    msg = decode_message(v.NONZERO_PADDING)
    assert msg.problem is None
    assert msg.avps == decode_message(v.DWR).avps
    assert msg.encode() == v.DWR  # re-encoded with zero padding


def test_vendor_flag_with_truncated_vendor_field() -> None:
    # V set, AVP length 8: the AVP header has no room for its Vendor-ID.
    wire = encode_message(0x80, 280, 0, 1, 2, bytes.fromhex("00000579 80000008"))
    msg = decode_message(wire)
    assert msg.problem is not None and msg.problem.result_code == 5014
    # and with fewer than 12 octets left in the message at all
    avps, problem = decode_avps(bytes.fromhex("00000579 8000000c 0000"), 0, 10)
    assert problem is not None and problem.result_code == 5014 and avps == []


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode_message(bytearray(v.ECR)).encode() == v.ECR
    assert decode_message(memoryview(v.ECR)).encode() == v.ECR


# -- header ---------------------------------------------------------------------------------------


def test_header_layout() -> None:
    wire = encode_message(0xF0, 0xABCDEF, 0x01020304, 0xAABBCCDD, 0x11223344, b"")
    assert wire == bytes.fromhex("01000014 f0abcdef 01020304 aabbccdd 11223344")
    msg = decode_message(wire)
    assert (msg.flags, msg.command_code, msg.application_id) == (0xF0, 0xABCDEF, 0x01020304)
    assert (msg.hop_by_hop, msg.end_to_end) == (0xAABBCCDD, 0x11223344)
    assert msg.is_request and msg.is_proxiable and msg.is_error and msg.is_retransmit
    assert msg.avps == [] and msg.problem is None
    assert len(wire) == HEADER_LENGTH


def test_message_too_long_to_encode() -> None:
    with pytest.raises(EncodeError):
        encode_message(0, 1, 0, 0, 0, bytes(0xFFFFFF))


# -- AVP header: flags, vendor, padding ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "flags", "vendor", "data", "wire"),
    [
        (263, 0x40, 0, b"x", "00000107 40000009 78000000"),
        (263, 0x00, 0, b"abcd", "00000107 0000000c 61626364"),
        (1402, 0xC0, TGPP, b"12", "0000057a c000000e 000028af 31320000"),
        (1402, 0xE0, TGPP, b"123", "0000057a e000000f 000028af 31323300"),  # V, M and P
        (9999, 0x20, 0, b"", "0000270f 20000008"),  # P only, empty data
        (9999, 0x80, 0, b"\xff", "0000270f 8000000d 00000000 ff000000"),  # V with vendor 0
    ],
)
def test_avp_header_and_padding(code: int, flags: int, vendor: int, data: bytes, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert encode_avp(code, flags, vendor, data) == raw
    assert Avp(code, flags, vendor, data).encode() == raw
    avps, problem = decode_avps(raw, 0, len(raw))
    assert problem is None
    (avp,) = avps
    assert (avp.code, avp.flags, avp.vendor, avp.data) == (code, flags, vendor, data)


def test_vendor_id_forces_the_v_flag_on_encode() -> None:
    assert Avp(1402, 0x40, TGPP, b"").encode() == bytes.fromhex("0000057a c000000c 000028af")


def test_avp_too_long_to_encode() -> None:
    with pytest.raises(EncodeError):
        encode_avp(1, 0, 0, bytes(0xFFFFFF))


def test_new_sets_flags_from_the_dictionary() -> None:
    assert a("Session-Id", "s").flags == AVP_FLAG_MANDATORY
    assert a("Product-Name", "p").flags == 0  # M MUST NOT
    assert a("IMEI", "1").flags == AVP_FLAG_VENDOR | AVP_FLAG_MANDATORY
    assert a("IMEI", "1").vendor == TGPP
    assert a("Feature-List", 1).flags == AVP_FLAG_VENDOR  # V must, M must not
    assert a("Supported-Features", []).flags == AVP_FLAG_VENDOR  # M may: off by default
    assert Avp.new("Supported-Features", [], mandatory=True).flags == 0xC0
    assert Avp.new("Session-Id", "s", mandatory=False).flags == 0
    assert a("Session-Id", "s").is_mandatory
    assert a("IMEI", "1").key == (1402, TGPP)
    assert a("IMEI", "1").definition() is DICTIONARY.avp("IMEI")
    assert Avp(9999, 0, 0, b"").definition() is None
    assert AVP_FLAG_PROTECTED == 0x20


def test_new_grouped_accepts_any_iterable() -> None:
    children = [a("IMEI", v.IMEI), a("Software-Version", "14")]
    from_list = a("Terminal-Information", children)
    from_iter = a("Terminal-Information", iter(children))
    from_gen = a("Terminal-Information", (c for c in children))
    assert from_list.data == from_iter.data == from_gen.data
    assert from_list.children == from_iter.children == from_gen.children == children


def test_zero_filled() -> None:
    ti = Avp.zero_filled(DICTIONARY.avp("Terminal-Information"))
    assert ti.encode() == bytes.fromhex("00000579 c000000c 000028af")
    oh = Avp.zero_filled(DICTIONARY.avp("Origin-Host"))
    assert oh.encode() == bytes.fromhex("00000108 40000009 00000000")  # one octet, padded
    rc = Avp.zero_filled(DICTIONARY.avp("Result-Code"))
    assert rc.encode() == bytes.fromhex("0000010c 4000000c 00000000")
    sub = Avp.zero_filled(DICTIONARY.avp("Accounting-Sub-Session-Id"))
    assert sub.data == bytes(8)
    # Address: AddressType and four octets (RFC 6733 §4.3.1); Grouped: its required AVPs.
    assert Avp.zero_filled(DICTIONARY.avp("Host-IP-Address")).data == bytes(6)
    er = Avp.zero_filled(DICTIONARY.avp("Experimental-Result"))
    assert [(c.code, c.data) for c in er.children] == [(266, bytes(4)), (298, bytes(4))]
    proxy = Avp.zero_filled(DICTIONARY.avp("Proxy-Info"))
    assert [(c.code, c.data) for c in proxy.children] == [(280, b"\x00"), (33, b"\x00")]


# -- unknown AVPs -----------------------------------------------------------------------------


def test_unknown_avps_are_kept_raw_and_reencode_byte_exact() -> None:
    # An unknown vendor AVP (V, P, odd length), an unknown IETF AVP with the M bit, and a known
    # Grouped AVP holding an unknown child: all re-encode to the same octets.
    body = (
        bytes.fromhex("00001234 a000000f 00000009 abcdef 00")
        + bytes.fromhex("00004321 40000009 7f 000000")
        + bytes.fromhex("00000579 c0000018 000028af  00000063 00000009 55 000000")
    )
    wire = encode_message(0xC0, 324, S13, 7, 8, body)
    msg = decode_message(wire)
    assert msg.problem is None
    first, second, terminal = msg.avps
    assert (first.code, first.flags, first.vendor, first.value) == (
        0x1234,
        0xA0,
        9,
        b"\xab\xcd\xef",
    )
    assert second.value == b"\x7f" and second.is_mandatory
    (child,) = terminal.children
    assert (child.code, child.value) == (99, b"\x55")
    assert msg.encode() == wire
    assert "AVP(4660, vendor=9)" in repr(first)


# -- every data type -------------------------------------------------------------------------


def _time(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (type, Python value, wire data, value decoded back)
VALUES: list[tuple[AvpType, Any, bytes | None, Any]] = [
    (AvpType.OCTET_STRING, b"\x00\xff", b"\x00\xff", b"\x00\xff"),
    (AvpType.OCTET_STRING, "é", b"\xc3\xa9", b"\xc3\xa9"),
    (AvpType.OCTET_STRING, b"", b"", b""),
    (AvpType.INTEGER32, -1, b"\xff\xff\xff\xff", -1),
    (AvpType.INTEGER32, 2**31 - 1, b"\x7f\xff\xff\xff", 2**31 - 1),
    (AvpType.INTEGER32, -(2**31), b"\x80\x00\x00\x00", -(2**31)),
    (AvpType.INTEGER64, -2, b"\xff" * 7 + b"\xfe", -2),
    (AvpType.INTEGER64, 2**63 - 1, b"\x7f" + b"\xff" * 7, 2**63 - 1),
    (AvpType.UNSIGNED32, 0xFFFFFFFF, b"\xff" * 4, 0xFFFFFFFF),
    (AvpType.UNSIGNED32, 2001, b"\x00\x00\x07\xd1", 2001),
    (AvpType.UNSIGNED64, 2**64 - 1, b"\xff" * 8, 2**64 - 1),
    (AvpType.UNSIGNED64, 1, b"\x00" * 7 + b"\x01", 1),
    (AvpType.FLOAT32, 1.5, b"\x3f\xc0\x00\x00", 1.5),
    (AvpType.FLOAT32, -0.0, b"\x80\x00\x00\x00", -0.0),
    (AvpType.FLOAT64, 0.1, bytes.fromhex("3fb999999999999a"), 0.1),
    (AvpType.FLOAT64, math.inf, bytes.fromhex("7ff0000000000000"), math.inf),
    (AvpType.ENUMERATED, 2, b"\x00\x00\x00\x02", 2),
    (AvpType.ENUMERATED, -5, b"\xff\xff\xff\xfb", -5),
    (
        AvpType.ADDRESS,
        "192.0.2.1",
        bytes.fromhex("0001 c0000201"),
        ipaddress.IPv4Address("192.0.2.1"),
    ),
    (
        AvpType.ADDRESS,
        ipaddress.IPv6Address("2001:db8::1"),
        bytes.fromhex("0002 20010db8000000000000000000000001"),
        ipaddress.IPv6Address("2001:db8::1"),
    ),
    # another address family (IANA 8 = E.164): kept as (family, raw octets)
    (AvpType.ADDRESS, (8, b"491701234"), b"\x00\x08491701234", (8, b"491701234")),
    # RFC 6733 §4.3.1 / RFC 5905: seconds since 1900; top bit clear = era 1 (from 2036-02-07)
    (AvpType.TIME, _time(1900, 1, 1) + dt.timedelta(seconds=2**31), b"\x80\x00\x00\x00", None),
    (AvpType.TIME, _time(2023, 11, 14, 22, 13, 20), bytes.fromhex("e8fe6f80"), None),
    (AvpType.TIME, _time(2036, 2, 7, 6, 28, 15), b"\xff\xff\xff\xff", None),
    (AvpType.TIME, _time(2036, 2, 7, 6, 28, 16), b"\x00\x00\x00\x00", None),
    (AvpType.TIME, _time(2040, 1, 1), bytes.fromhex("0754fd00"), None),
    (AvpType.TIME, 0x12345678, bytes.fromhex("12345678"), _time(2045, 10, 12, 5, 19, 52)),
    (AvpType.UTF8_STRING, "Grüße 🙂", "Grüße 🙂".encode(), "Grüße 🙂"),
    (AvpType.UTF8_STRING, "", b"", ""),
    (AvpType.DIAMETER_IDENTITY, "eir.example.net", b"eir.example.net", "eir.example.net"),
    (AvpType.DIAMETER_IDENTITY, "xn--bcher-kva.example", b"xn--bcher-kva.example", None),
    (AvpType.DIAMETER_URI, "aaa://eir.example.net:3868;transport=tcp", None, None),
    (AvpType.DIAMETER_URI, "aaas://eir.example.net", b"aaas://eir.example.net", None),
    (AvpType.IP_FILTER_RULE, "permit in ip from any to any", b"permit in ip from any to any", None),
]


@pytest.mark.parametrize(("avp_type", "value", "wire", "back"), VALUES)
def test_value_round_trip(avp_type: AvpType, value: Any, wire: bytes | None, back: Any) -> None:
    expected_back = value if back is None else back
    encoded = encode_value(avp_type, value)
    if wire is not None:
        assert encoded == wire
    decoded = decode_value(avp_type, encoded)
    assert decoded == expected_back
    if isinstance(expected_back, float):
        assert math.copysign(1, decoded) == math.copysign(1, expected_back)
    # and through a whole AVP on the wire
    avps, problem = decode_avps(encode_avp(1, 0, 0, encoded), 0, len(encode_avp(1, 0, 0, encoded)))
    assert problem is None and avps[0].data == encoded


def test_float_nan() -> None:
    assert math.isnan(decode_value(AvpType.FLOAT32, encode_value(AvpType.FLOAT32, math.nan)))
    assert math.isnan(decode_value(AvpType.FLOAT64, encode_value(AvpType.FLOAT64, math.nan)))


def test_time_era_wrap() -> None:
    """RFC 6733 §4.3.1: the Time format wraps on 7 February 2036; values with the top bit clear
    are in the next era (RFC 5905 / RFC 2030 rule)."""
    before = _time(2036, 2, 7, 6, 28, 15)
    after = _time(2036, 2, 7, 6, 28, 16)
    assert encode_value(AvpType.TIME, before) == b"\xff\xff\xff\xff"
    assert encode_value(AvpType.TIME, after) == b"\x00\x00\x00\x00"
    assert decode_value(AvpType.TIME, b"\xff\xff\xff\xff") == before
    assert decode_value(AvpType.TIME, b"\x00\x00\x00\x00") == after
    # the earliest representable instant is 1968-01-20T03:14:08Z (0x80000000)
    assert decode_value(AvpType.TIME, b"\x80\x00\x00\x00") == _time(1968, 1, 20, 3, 14, 8)
    assert decode_value(AvpType.TIME, b"\x7f\xff\xff\xff") == _time(2104, 2, 26, 9, 42, 23)


def test_grouped_values_and_nesting() -> None:
    inner = a("Experimental-Result", [a("Vendor-Id", TGPP), a("Experimental-Result-Code", 5422)])
    failed = a(
        "Failed-AVP",
        [a("Proxy-Info", [a("Proxy-Host", "p.example"), a("Proxy-State", b"s")]), inner],
    )
    wire = failed.encode()
    (decoded,), problem = decode_avps(wire, 0, len(wire))
    assert problem is None
    proxy, er = decoded.children
    assert [c.value for c in proxy.children] == ["p.example", b"s"]
    assert [c.value for c in er.children] == [TGPP, 5422]
    assert decode_value(AvpType.GROUPED, decoded.data) == [proxy, er]
    assert encode_value(AvpType.GROUPED, [proxy, er]) == decoded.data
    assert decoded.encode() == wire
    # empty Grouped
    assert decode_value(AvpType.GROUPED, b"") == []


def test_find_in_grouped_by_vendor() -> None:
    ti = a("Terminal-Information", [a("IMEI", v.IMEI)])
    assert ti.find(1402, TGPP) is not None
    assert ti.find(1402) is None  # IETF vendor: a different AVP


@pytest.mark.parametrize("avp_type", [t for t in AvpType if t in FIXED_SIZE])
@pytest.mark.parametrize("delta", [-1, 1])
def test_fixed_size_length_errors_are_5014(avp_type: AvpType, delta: int) -> None:
    size = FIXED_SIZE[avp_type]
    with pytest.raises(DecodeError) as info:
        decode_value(avp_type, bytes(size + delta))
    assert info.value.result_code == 5014


def test_fixed_sizes() -> None:
    assert {t.value: n for t, n in FIXED_SIZE.items()} == {
        "Integer32": 4,
        "Unsigned32": 4,
        "Enumerated": 4,
        "Float32": 4,
        "Time": 4,
        "Integer64": 8,
        "Unsigned64": 8,
        "Float64": 8,
    }


@pytest.mark.parametrize(
    ("avp_type", "data", "code"),
    [
        (AvpType.UTF8_STRING, b"\xff", 5004),
        (AvpType.UTF8_STRING, b"\xc3", 5004),  # truncated sequence
        (AvpType.UTF8_STRING, b"\xed\xa0\x80", 5004),  # encoded surrogate
        (AvpType.DIAMETER_URI, b"\xc3(", 5004),
        (AvpType.DIAMETER_URI, b"http://eir.example.net", 5004),
        (AvpType.DIAMETER_IDENTITY, b"", 5004),
        (AvpType.DIAMETER_IDENTITY, b"eir example", 5004),
        (AvpType.DIAMETER_IDENTITY, b"eir\x7f", 5004),
        (AvpType.DIAMETER_IDENTITY, "bücher.example".encode(), 5004),
        (AvpType.DIAMETER_IDENTITY, b"tab\there", 5004),
        (AvpType.IP_FILTER_RULE, b"permit \xff", 5004),
        (AvpType.ADDRESS, b"\x00", 5014),
        (AvpType.ADDRESS, b"\x00\x01\x7f\x00\x00", 5014),  # IPv4 with 3 octets
        (AvpType.ADDRESS, b"\x00\x02" + bytes(15), 5014),  # IPv6 with 15 octets
        (AvpType.GROUPED, b"\x00\x00\x00\x01\x00\x00\x00\x04", 5014),
        (AvpType.GROUPED, b"\x00\x00", 5014),  # stray bytes inside a Grouped AVP
    ],
)
def test_invalid_values(avp_type: AvpType, data: bytes, code: int) -> None:
    with pytest.raises(DecodeError) as info:
        decode_value(avp_type, data)
    assert info.value.result_code == code


@pytest.mark.parametrize(
    ("avp_type", "value"),
    [
        (AvpType.UNSIGNED32, -1),
        (AvpType.UNSIGNED32, 2**32),
        (AvpType.INTEGER32, 2**31),
        (AvpType.UNSIGNED64, -1),
        (AvpType.INTEGER64, 2**63),
        (AvpType.ENUMERATED, "WHITELISTED"),
        (AvpType.FLOAT32, "x"),
        (AvpType.TIME, -1),
        (AvpType.TIME, dt.datetime(1968, 1, 20, 3, 14, 7, tzinfo=UTC)),  # would read back as 2104
        (AvpType.TIME, dt.datetime(2104, 2, 26, 9, 42, 24, tzinfo=UTC)),  # would read back as 1968
        (AvpType.TIME, dt.datetime(2020, 1, 1)),  # naive: no UTC offset
        (AvpType.ADDRESS, "not-an-address"),
        (AvpType.ADDRESS, (1,)),
        (AvpType.UTF8_STRING, 5),
        (AvpType.DIAMETER_IDENTITY, ""),
        (AvpType.DIAMETER_IDENTITY, "has space"),
        (AvpType.DIAMETER_IDENTITY, "bücher.example"),
        (AvpType.DIAMETER_URI, "sip:eir.example.net"),
        (AvpType.GROUPED, [b"not an avp"]),
        (AvpType.OCTET_STRING, 3.5),
    ],
)
def test_encode_errors_are_encode_errors(avp_type: AvpType, value: Any) -> None:
    with pytest.raises(EncodeError):
        encode_value(avp_type, value)


def test_errors_share_one_root() -> None:
    assert issubclass(DecodeError, DiameterError) and issubclass(EncodeError, DiameterError)
    assert DiameterError("x").result_code == 5012
    assert DecodeError("x", 5014).result_code == 5014


# -- Avp.value by dictionary type -----------------------------------------------------------------


def test_value_uses_the_dictionary_type() -> None:
    cases: list[tuple[str, Any]] = [
        ("User-Name", v.IMSI),
        ("Origin-Host", v.EIR_HOST),
        ("Host-IP-Address", ipaddress.IPv4Address("127.0.0.1")),
        ("Event-Timestamp", _time(2024, 2, 29, 12, 0, 0)),
        ("Accounting-Sub-Session-Id", 2**40),
        ("Equipment-Status", 2),
        ("Redirect-Host", "aaa://eir.example.net"),
        ("3GPP2-MEID", b"\x12\x34"),
    ]
    for name, value in cases:
        avp = a(name, value)
        decoded = decode_avps(avp.encode(), 0, len(avp.encode()))[0][0]
        assert decoded.value == value, name


def test_value_errors_on_received_avps() -> None:
    bad_length = Avp(268, 0x40, 0, b"\x00\x00\x07")  # Result-Code with 3 octets
    with pytest.raises(DecodeError) as info:
        bad_length.value  # noqa: B018
    assert info.value.result_code == 5014
    bad_utf8 = Avp(1402, 0xC0, TGPP, b"35\xff")
    with pytest.raises(DecodeError) as info:
        bad_utf8.value  # noqa: B018
    assert info.value.result_code == 5004
    assert "IMEI" in repr(bad_utf8)  # repr never raises on bad data


def test_repr_of_deeply_nested_grouped_does_not_recurse_without_bound() -> None:
    data = b""
    for _ in range(5000):
        data = encode_avp(279, 0x40, 0, data)
    (avp,), problem = decode_avps(data, 0, len(data))
    assert problem is None
    text = repr(avp)
    assert text.startswith("<Failed-AVP") and "octets>" in text
    msg = decode_message(encode_message(0x80, 280, 0, 1, 2, data))
    assert "Failed-AVP" in repr(msg)


def test_message_helpers() -> None:
    msg = Message(324, S13, 0xC0).add("Session-Id", "s;1").add("Proxy-Info", [])
    msg.add("Proxy-Info", [a("Proxy-Host", "x")])
    assert msg.get("Session-Id") == "s;1"
    assert [len(p.children) for p in msg.find_all(284)] == [0, 1]
    assert msg.find(999) is None
    assert "ECR" in repr(msg)
    assert decode_message(msg.encode()).avps == msg.avps
    assert a("Result-Code", 2001) == Avp(268, 0x40, 0, b"\x00\x00\x07\xd1")
    assert hash(a("Result-Code", 2001)) == hash(Avp(268, 0x40, 0, b"\x00\x00\x07\xd1"))
    assert a("Result-Code", 2001) != a("Result-Code", 2002)
    assert a("Result-Code", 2001) != "Result-Code"
