"""Grammar-driven validation: every RFC 6733 result code check_request / check_header produce."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diameter.codec import (
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    Avp,
    Message,
    Problem,
    decode_message,
    encode_avp,
    encode_message,
)
from diameter.dictionary import DICTIONARY, CommandDef
from diameter.settings import MAX_AVPS
from diameter.validate import MAX_GROUPED_DEPTH, check_avps, check_header, check_request
from tests.diameter import vectors as v
from tests.diameter.builders import S13, TGPP, command

ECR = command(S13, 324)
CER = command(0, 257)
DWR = command(0, 280)
DPR = command(0, 282)


def a(name: str, value: object, mandatory: bool | None = None) -> Avp:
    return Avp.new(name, value, mandatory=mandatory)


def ecr_avps() -> list[Avp]:
    return [
        a("Session-Id", v.SESSION_ID),
        a(
            "Vendor-Specific-Application-Id",
            [a("Vendor-Id", TGPP), a("Auth-Application-Id", S13)],
        ),
        a("Auth-Session-State", 1),
        a("Origin-Host", v.MME_HOST),
        a("Origin-Realm", v.REALM),
        a("Destination-Realm", v.REALM),
        a("Terminal-Information", [a("IMEI", v.IMEI), a("Software-Version", "14")]),
        a("User-Name", v.IMSI),
        a("Proxy-Info", [a("Proxy-Host", "dra.example.net"), a("Proxy-State", b"ps")]),
    ]


def check_ecr(
    avps: list[Avp], flags: int = FLAG_REQUEST | FLAG_PROXIABLE, command: CommandDef = ECR
) -> Problem | None:
    """Encode, decode (as received) and check: the path every request takes."""
    wire = Message(command.code, command.application_id, flags, 1, 2, avps).encode()
    return check_request(decode_message(wire), command)


def replace(avps: list[Avp], code: int, new: Avp | None, vendor: int = 0) -> list[Avp]:
    out = []
    for avp in avps:
        if (avp.code, avp.vendor) == (code, vendor):
            if new is not None:
                out.append(new)
        else:
            out.append(avp)
    return out


def expect(problem: Problem | None, code: int, failed_hex: str | None) -> None:
    assert problem is not None, "expected a problem"
    assert problem.result_code == code, problem
    if failed_hex is None:
        assert problem.failed_avp is None
    else:
        assert problem.failed_avp is not None
        assert problem.failed_avp.encode() == bytes.fromhex(failed_hex)
    assert problem.error_message


# -- well-formed ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CER", "DWR", "DPR", "ECR"])
def test_golden_requests_are_valid(name: str) -> None:
    msg = decode_message(v.WELL_FORMED[name])
    command = DICTIONARY.command(msg.application_id, msg.command_code)
    assert command is not None
    assert check_request(msg, command) is None


@pytest.mark.parametrize("name", ["ECA_2001", "ECA_5422"])
def test_golden_answers_match_the_eca_grammar(name: str) -> None:
    msg = decode_message(v.WELL_FORMED[name])
    assert ECR is not None
    assert check_avps(msg.avps, ECR.answer, DICTIONARY, ()) is None


def test_minimal_ecr_without_optional_avps_is_valid() -> None:
    # User-Name is optional in TS 29.272 (standards.md §1.2), VSAI and Proxy-Info too.
    avps = [x for x in ecr_avps() if x.code not in (1, 260, 284)]
    assert check_ecr(avps) is None


def test_repeated_optional_avps_and_route_records_are_valid() -> None:
    avps = [
        *ecr_avps(),
        a("Proxy-Info", [a("Proxy-Host", "dra2.example.net"), a("Proxy-State", b"2")]),
        a("Route-Record", "dra.example.net"),
        a("Route-Record", "dra2.example.net"),
    ]
    assert check_ecr(avps) is None


def test_unknown_non_mandatory_avps_are_ignored() -> None:
    unknown_top = Avp(9999, 0x00, 0, b"whatever")
    unknown_vendor = Avp(9999, 0x80, 4242, b"x")
    unknown_in_group = Avp(7777, 0x80, TGPP, b"y")
    avps = ecr_avps()
    avps[6] = a(
        "Terminal-Information", [a("IMEI", v.IMEI), unknown_in_group, a("Software-Version", "14")]
    )
    assert check_ecr([*avps, unknown_top, unknown_vendor]) is None
    # and also with the P bit (RFC 6733 §4.1: P is not a reason to reject)
    assert check_ecr([*avps, Avp(9999, 0x20, 0, b"")]) is None


def test_supported_features_through_the_avp_wildcard() -> None:
    sf = a(
        "Supported-Features",
        [a("Vendor-Id", TGPP), a("Feature-List-ID", 1), a("Feature-List", 3)],
    )
    assert check_ecr([*ecr_avps(), sf]) is None


def test_answer_message_grammar_for_an_e_bit_answer() -> None:
    avps = [
        a("Session-Id", "s;1"),
        a("Origin-Host", v.EIR_HOST),
        a("Origin-Realm", v.REALM),
        a("Result-Code", 3001),
        a("Failed-AVP", [Avp(9999, 0x40, 0, b"")]),
    ]
    assert check_avps(avps, DICTIONARY.answer_message, DICTIONARY, ()) is None
    # Session-Id is 0*1 in answer-message
    assert check_avps(avps[1:], DICTIONARY.answer_message, DICTIONARY, ()) is None


# -- 5001 DIAMETER_AVP_UNSUPPORTED ----------------------------------------------------------


def test_5001_unknown_mandatory_avp_at_top_level() -> None:
    problem = check_ecr([*ecr_avps(), Avp(9999, 0x40, 0, b"zz")])
    expect(problem, 5001, "0000270f 4000000a 7a7a0000")


def test_5001_unknown_mandatory_vendor_avp() -> None:
    problem = check_ecr([*ecr_avps(), Avp(1402, 0xC0, 4242, b"1")])  # IMEI code, other vendor
    expect(problem, 5001, "0000057a c000000d 00001092 31000000")


def test_5001_inside_a_known_grouped_avp_wraps_the_parent() -> None:
    avps = ecr_avps()
    avps[6] = a("Terminal-Information", [a("IMEI", v.IMEI), Avp(7777, 0xC0, TGPP, b"q")])
    expect(
        check_ecr(avps),
        5001,
        # Failed-AVP content: Terminal-Information { the offending AVP } (RFC 6733 §7.5)
        "00000579 c000001c 000028af  00001e61 c000000d 000028af 71000000",
    )


def test_5001_two_levels_deep_wraps_every_parent() -> None:
    # Terminal-Information is extensible; inside it, a Proxy-Info holding an unknown M-bit AVP.
    inner = a("Proxy-Info", [a("Proxy-Host", "p"), a("Proxy-State", b""), Avp(8888, 0x40, 0, b"")])
    avps = ecr_avps()
    avps[6] = a("Terminal-Information", [a("IMEI", v.IMEI), inner])
    problem = check_ecr(avps)
    assert problem is not None and problem.result_code == 5001
    failed = problem.failed_avp
    assert failed is not None and failed.key == (1401, TGPP)
    (proxy,) = failed.children
    assert proxy.code == 284
    (offender,) = proxy.children  # only the offender, not its siblings
    assert (offender.code, offender.flags) == (8888, 0x40)


# -- 5004 DIAMETER_INVALID_AVP_VALUE ------------------------------------------------------------


def test_5004_unknown_enumerated_value_with_m_bit() -> None:
    avps = replace(ecr_avps(), 277, Avp(277, 0x40, 0, b"\x00\x00\x00\x07"))
    expect(check_ecr(avps), 5004, "00000115 4000000c 00000007")


def test_unknown_enumerated_value_without_m_bit_is_accepted() -> None:
    avps = replace(ecr_avps(), 277, Avp(277, 0x00, 0, b"\x00\x00\x00\x07"))
    assert check_ecr(avps) is None


def test_5004_bad_diameter_identity() -> None:
    avps = replace(ecr_avps(), 264, Avp(264, 0x40, 0, b"mme host"))
    expect(check_ecr(avps), 5004, "00000108 40000010 6d6d6520686f7374")


def test_5004_invalid_utf8_inside_terminal_information() -> None:
    avps = ecr_avps()
    avps[6] = a("Terminal-Information", [Avp(1402, 0xC0, TGPP, b"35\xff")])
    expect(
        check_ecr(avps),
        5004,
        "00000579 c000001c 000028af  0000057a c000000f 000028af 3335ff00",
    )


def test_5004_bad_address_family_length_is_5014() -> None:
    cer = decode_message(v.CER)
    cer.avps[2] = Avp(257, 0x40, 0, b"\x00\x01\x7f\x00\x00")
    expect(
        check_request(decode_message(cer.encode()), CER),
        5014,
        "00000101 4000000d 00017f0000 000000",
    )


# -- 5005 DIAMETER_MISSING_AVP ----------------------------------------------------------------


def test_5005_missing_terminal_information() -> None:
    avps = replace(ecr_avps(), 1401, None, TGPP)
    # zero-filled Terminal-Information with its code and vendor (RFC 6733 §7.5)
    expect(check_ecr(avps), 5005, "00000579 c000000c 000028af")


def test_5005_missing_origin_host() -> None:
    expect(check_ecr(replace(ecr_avps(), 264, None)), 5005, "00000108 40000009 00000000")


def test_5005_missing_session_id() -> None:
    expect(check_ecr(ecr_avps()[1:]), 5005, "00000107 40000009 00000000")


def test_5005_missing_disconnect_cause_is_zero_filled_enumerated() -> None:
    dpr = decode_message(v.DPR)
    dpr.avps = dpr.avps[:2]
    expect(check_request(dpr, DPR), 5005, "00000111 4000000c 00000000")


def test_5005_first_missing_in_ccf_order() -> None:
    # Both Origin-Realm and Destination-Realm missing: Origin-Realm comes first in the CCF.
    avps = replace(replace(ecr_avps(), 283, None), 296, None)
    expect(check_ecr(avps), 5005, "00000128 40000009 00000000")


def test_5005_vsai_without_either_application_id() -> None:
    avps = replace(ecr_avps(), 260, a("Vendor-Specific-Application-Id", [a("Vendor-Id", TGPP)]))
    # RFC 6733 §6.11: neither id -> 5005; the zero-filled Auth-Application-Id inside the VSAI
    expect(check_ecr(avps), 5005, "00000104 40000014  00000102 4000000c 00000000")


def test_5005_inside_experimental_result_in_cea_style_grammar() -> None:
    er = a("Experimental-Result", [a("Vendor-Id", TGPP)])
    problem = check_avps([er], DICTIONARY.answer_message, DICTIONARY, ())
    # Experimental-Result-Code missing, shown inside its parent
    expect(problem, 5005, "00000129 40000014  0000012a 4000000c 00000000")


# -- 5008 DIAMETER_AVP_NOT_ALLOWED --------------------------------------------------------------


def test_5008_misplaced_session_id() -> None:
    avps = ecr_avps()
    avps[0], avps[2] = avps[2], avps[0]
    session_id = a("Session-Id", v.SESSION_ID).encode().hex()
    expect(check_ecr(avps), 5008, session_id)


def test_5008_session_id_after_an_unknown_avp() -> None:
    avps = [Avp(9999, 0, 0, b""), *ecr_avps()]
    problem = check_ecr(avps)
    assert problem is not None and problem.result_code == 5008
    assert problem.failed_avp is not None and problem.failed_avp.code == 263


def test_5008_avp_not_in_a_closed_grouped_grammar() -> None:
    # Vendor-Specific-Application-Id has no *[ AVP ]: a known AVP that is not in it is refused.
    vsai = a(
        "Vendor-Specific-Application-Id",
        [a("Vendor-Id", TGPP), a("Auth-Application-Id", S13), a("Origin-State-Id", 1)],
    )
    expect(
        check_ecr(replace(ecr_avps(), 260, vsai)),
        5008,
        "00000104 40000014  00000116 4000000c 00000001",
    )


# -- 5009 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES ------------------------------------------------------


def test_5009_second_origin_host_is_the_failed_avp() -> None:
    avps = ecr_avps()
    second = a("Origin-Host", "other.example.net")
    avps.insert(5, second)
    expect(check_ecr(avps), 5009, second.encode().hex())


def test_5009_first_excess_instance_of_terminal_information() -> None:
    extra = a("Terminal-Information", [a("IMEI", "49015420323751")])
    third = a("Terminal-Information", [a("IMEI", "00000000000000")])
    problem = check_ecr([*ecr_avps(), extra, third])
    assert problem is not None and problem.result_code == 5009
    assert problem.failed_avp == extra


def test_5009_vsai_with_both_application_ids() -> None:
    # RFC 6733 §6.11: both Auth- and Acct-Application-Id -> 5009.
    vsai = a(
        "Vendor-Specific-Application-Id",
        [a("Vendor-Id", TGPP), a("Auth-Application-Id", S13), a("Acct-Application-Id", S13)],
    )
    expect(
        check_ecr(replace(ecr_avps(), 260, vsai)),
        5009,
        "00000104 40000014  00000103 4000000c 01000024",
    )


def test_5009_two_imeis_inside_terminal_information() -> None:
    avps = ecr_avps()
    avps[6] = a("Terminal-Information", [a("IMEI", v.IMEI), a("IMEI", "49015420323751")])
    expect(
        check_ecr(avps),
        5009,
        "00000579 c0000028 000028af  0000057a c000001a 000028af 3439303135343230333233373531 0000",
    )


# -- 5014 DIAMETER_INVALID_AVP_LENGTH ------------------------------------------------------------


def test_5014_fixed_size_value_with_wrong_length() -> None:
    avps = replace(ecr_avps(), 277, Avp(277, 0x40, 0, b"\x00\x01"))
    expect(check_ecr(avps), 5014, "00000115 4000000a 00010000")


def test_5014_unsigned32_inside_grouped() -> None:
    vsai = a(
        "Vendor-Specific-Application-Id",
        [Avp(266, 0x40, 0, b"\x00\x00\x28\xaf\x00"), a("Auth-Application-Id", S13)],
    )
    problem = check_ecr(replace(ecr_avps(), 260, vsai))
    assert problem is not None and problem.result_code == 5014
    assert problem.failed_avp is not None and problem.failed_avp.code == 260
    assert problem.failed_avp.children[0].data == b"\x00\x00\x28\xaf\x00"


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (v.AVP_LENGTH_TOO_SHORT, 5014),
        (v.AVP_PAST_END, 5014),
        (v.STRAY_BYTES, 5015),
        (v.BAD_PADDING_IN_GROUPED, 5014),
    ],
)
def test_malformed_vectors(wire: bytes, code: int) -> None:
    msg = decode_message(wire)
    command = DICTIONARY.command(msg.application_id, msg.command_code)
    assert command is not None
    problem = check_request(msg, command)
    assert problem is not None and problem.result_code == code


def test_bad_padding_in_grouped_reports_the_grouped_avp() -> None:
    problem = check_request(decode_message(v.BAD_PADDING_IN_GROUPED), ECR)
    assert problem is not None and problem.failed_avp is not None
    assert problem.failed_avp.key == (1401, TGPP)


# -- 3008 / 3009 / 5016 header and flag bits ----------------------------------------------------


def test_3008_e_bit_in_a_request() -> None:
    expect(check_ecr(ecr_avps(), FLAG_REQUEST | FLAG_PROXIABLE | FLAG_ERROR), 3008, None)


def test_3008_p_bit_on_cer() -> None:
    cer = decode_message(v.CER)
    cer.flags |= FLAG_PROXIABLE
    expect(check_request(cer, CER), 3008, None)
    expect(check_header(cer, CER), 3008, None)


def test_t_bit_accepted_and_missing_p_bit_is_3008() -> None:
    assert check_ecr(ecr_avps(), FLAG_REQUEST | FLAG_PROXIABLE | FLAG_RETRANSMIT) is None
    # TS 29.272 §7.2.19 < Diameter Header: 324, REQ, PXY, 16777252 >: P clear contradicts it.
    problem = check_ecr(ecr_avps(), FLAG_REQUEST)
    assert problem is not None and problem.result_code == 3008
    assert problem.error_message == "P bit clear on ECR"
    assert check_header(decode_message(v.ECR), None) is None


def test_3009_reserved_avp_flag_bits() -> None:
    avps = replace(ecr_avps(), 264, Avp(264, 0x41, 0, v.MME_HOST.encode()))
    problem = check_ecr(avps)
    assert problem is not None and problem.result_code == 3009
    assert problem.failed_avp is not None and problem.failed_avp.flags == 0x41


def test_3009_reserved_bits_on_an_unknown_avp_come_before_5001() -> None:
    problem = check_ecr([*ecr_avps(), Avp(9999, 0x48, 0, b"")])
    assert problem is not None and problem.result_code == 3009


def test_3009_reserved_bits_inside_grouped() -> None:
    avps = ecr_avps()
    avps[6] = a("Terminal-Information", [Avp(1402, 0xC2, TGPP, v.IMEI.encode())])
    problem = check_ecr(avps)
    assert problem is not None and problem.result_code == 3009
    assert problem.failed_avp is not None and problem.failed_avp.code == 1401


def test_5016_m_bit_where_the_rule_says_must_not() -> None:
    cer = decode_message(v.CER)
    product = cer.find(269)
    assert product is not None
    product.flags |= 0x40  # Product-Name: M MUST NOT (RFC 6733 §4.5)
    expect(
        check_request(decode_message(cer.encode()), CER), 5016, "0000010d 4000000f 6d6d652d73696d00"
    )


def test_5016_inside_supported_features() -> None:
    sf = a(
        "Supported-Features",
        [a("Vendor-Id", TGPP), a("Feature-List-ID", 1, mandatory=True), a("Feature-List", 3)],
    )
    problem = check_ecr([*ecr_avps(), sf])
    assert problem is not None and problem.result_code == 5016
    assert problem.failed_avp is not None
    assert [c.code for c in problem.failed_avp.children] == [629]


# -- ordering and first error only -------------------------------------------------------------


def test_only_the_first_error_is_reported() -> None:
    # An unknown M-bit AVP (5001) before a bad enumerated value (5004), Terminal-Information
    # missing (5005, found only after the walk).
    avps = [x for x in ecr_avps() if x.code not in (277, 1401)]
    avps.insert(3, Avp(9999, 0x40, 0, b""))
    avps.insert(4, Avp(277, 0x40, 0, b"\x00\x00\x00\x09"))
    problem = check_ecr(avps)
    assert problem is not None and problem.result_code == 5001


def test_structural_problem_of_the_decoder_comes_first() -> None:
    msg = decode_message(v.AVP_PAST_END)
    msg.flags |= FLAG_ERROR  # also a header error: the decoder's problem still wins
    problem = check_request(msg, DWR)
    assert problem is msg.problem


def test_header_error_before_avp_errors() -> None:
    problem = check_ecr([Avp(9999, 0x40, 0, b"")], FLAG_REQUEST | FLAG_PROXIABLE | FLAG_ERROR)
    assert problem is not None and problem.result_code == 3008


# -- hostile nesting -----------------------------------------------------------------------------


def test_failed_avp_content_is_not_validated() -> None:
    # RFC 6733 §7.5: Failed-AVP holds the offending AVPs as they were (unknown M-bit AVPs,
    # invalid values, reserved bits); a message carrying one is not rejected for them.
    failed = a(
        "Failed-AVP",
        [
            Avp(9999, 0x40, 0, b""),
            Avp(277, 0x40, 0, b"\x00\x00\x00\x09"),
            Avp(264, 0x5F, 0, b"bad host"),
            Avp(268, 0x40, 0, b"\x00"),
        ],
    )
    answer = [
        a("Origin-Host", v.EIR_HOST),
        a("Origin-Realm", v.REALM),
        a("Result-Code", 5001),
        failed,
    ]
    assert check_avps(answer, DICTIONARY.answer_message, DICTIONARY, ()) is None
    # even when its content would not parse as AVPs
    broken = Avp(279, 0x40, 0, b"\x00\x00\x01\x08\x40\x00\x00\xff")
    assert check_avps([*answer[:3], broken], DICTIONARY.answer_message, DICTIONARY, ()) is None
    assert check_ecr([*ecr_avps(), failed]) is None


def test_deep_grouped_nesting_is_refused_not_a_recursion_error() -> None:
    inner = b""
    for _ in range(3000):
        inner = encode_avp(1401, 0xC0, TGPP, inner)
    others = replace(ecr_avps(), 1401, None, TGPP)
    wire = encode_message(0xC0, 324, S13, 1, 2, b"".join(x.encode() for x in others) + inner)
    problem = check_request(decode_message(wire), ECR)
    assert problem is not None and problem.result_code == 5012
    # Failed-AVP: the Terminal-Information one level too deep, inside its 16 parents (§7.5).
    failed, depth = problem.failed_avp, 0
    while failed is not None and failed.children:
        assert failed.code == 1401
        failed, depth = failed.children[0], depth + 1
    assert failed is not None and failed.code == 1401 and depth == MAX_GROUPED_DEPTH


def test_nesting_up_to_the_limit_is_walked() -> None:
    def nest(levels: int) -> Avp:
        inner = Avp(8888, 0x40, 0, b"")  # unknown M-bit AVP at the bottom
        for _ in range(levels):
            inner = a("Terminal-Information", [inner])
        return inner

    # the innermost Grouped AVP is walked at MAX_GROUPED_DEPTH - 1 parents: its error is found
    avps = replace(ecr_avps(), 1401, nest(MAX_GROUPED_DEPTH), TGPP)
    problem = check_ecr(avps)
    assert problem is not None and problem.result_code == 5001
    avps = replace(ecr_avps(), 1401, nest(MAX_GROUPED_DEPTH + 1), TGPP)
    problem = check_ecr(avps)
    assert problem is not None and problem.result_code == 5012


# -- property: the results do not depend on caches -------------------------------------------------


@pytest.mark.parametrize("mutate", [lambda avps: avps, lambda avps: avps[::-1]])
def test_repeatable(mutate: Callable[[list[Avp]], list[Avp]]) -> None:
    first = check_ecr(mutate(ecr_avps()))
    second = check_ecr(mutate(ecr_avps()))
    assert (first and first.result_code) == (second and second.result_code)


# -- the AVP count limit (5009) -------------------------------------------------------------------


def _unknown(n: int) -> Avp:
    return Avp(9000 + n, 0, 0, n.to_bytes(4, "big"))  # unknown, M clear: ignored by the grammar


def check_ecr_with_limit(avps: list[Avp], max_avps: int) -> Problem | None:
    wire = Message(ECR.code, ECR.application_id, FLAG_REQUEST | FLAG_PROXIABLE, 1, 2, avps).encode()
    return check_request(decode_message(wire), ECR, max_avps=max_avps)


def test_5009_more_avps_than_the_limit_names_the_first_past_it() -> None:
    base = ecr_avps()
    extra = [_unknown(n) for n in range(300 - len(base))]
    problem = check_ecr(base + extra)  # 300 AVPs, the default limit is 256
    assert problem is not None and problem.result_code == 5009
    assert problem.failed_avp is not None
    assert problem.failed_avp.encode() == (base + extra)[MAX_AVPS].encode()
    assert check_ecr(base + extra[: MAX_AVPS - len(base)]) is None  # exactly at the limit


def test_5009_inside_a_grouped_avp_wraps_the_parent() -> None:
    # Proxy-Info ends in *[ AVP ] (RFC 6733 §6.7.2): an unbounded list inside a Grouped AVP.
    members = [a("Proxy-Host", "dra.example.net"), a("Proxy-State", b"ps")]
    members += [_unknown(n) for n in range(20)]
    avps = replace(ecr_avps(), 284, a("Proxy-Info", members))
    assert check_ecr_with_limit(avps, 22) is None
    problem = check_ecr_with_limit(avps, 21)
    assert problem is not None and problem.result_code == 5009
    failed = problem.failed_avp
    assert failed is not None and failed.code == 284  # a copy of the Proxy-Info ...
    assert [c.encode() for c in failed.children] == [members[21].encode()]  # ... with the AVP


def test_a_limit_below_the_learnt_shapes_is_still_enforced() -> None:
    # Shapes learnt under a high limit (the fast path) do not let a longer list pass a lower one.
    avps = ecr_avps()
    for _ in range(8):
        assert check_ecr_with_limit(avps, MAX_AVPS) is None
    problem = check_ecr_with_limit(avps, 16)
    assert problem is None  # 9 AVPs: under 16
    members = [a("Proxy-Host", "dra.example.net"), a("Proxy-State", b"ps")]
    members += [_unknown(n) for n in range(18)]
    grouped = replace(ecr_avps(), 284, a("Proxy-Info", members))
    for _ in range(8):
        assert check_ecr_with_limit(grouped, MAX_AVPS) is None
    problem = check_ecr_with_limit(grouped, 16)
    assert problem is not None and problem.result_code == 5009


@settings(max_examples=60, deadline=None)
@given(
    extra=st.integers(0, 80),
    inside=st.integers(0, 40),
    limit=st.integers(16, 64),
)
def test_property_5009_exactly_when_a_list_passes_the_limit(
    extra: int, inside: int, limit: int
) -> None:
    """Well formed but for its length: 5009 iff the message or the Proxy-Info holds more than
    ``limit`` AVPs, the top level first, with the first AVP past the limit in Failed-AVP."""
    members = [a("Proxy-Host", "dra.example.net"), a("Proxy-State", b"ps")]
    members += [_unknown(n) for n in range(inside)]
    avps = replace(ecr_avps(), 284, a("Proxy-Info", members)) + [_unknown(n) for n in range(extra)]
    problem = check_ecr_with_limit(avps, limit)
    if len(avps) > limit:
        assert problem is not None and problem.result_code == 5009
        assert problem.failed_avp is not None
        assert problem.failed_avp.encode() == avps[limit].encode()
    elif len(members) > limit:
        assert problem is not None and problem.result_code == 5009
        assert problem.failed_avp is not None and problem.failed_avp.code == 284
        assert problem.failed_avp.children[0].encode() == members[limit].encode()
    else:
        assert problem is None
