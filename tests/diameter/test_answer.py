"""Answers (RFC 6733 §6.2, §7.2, §7.5): identifiers, P bit, Session-Id, Proxy-Info, E bit, Failed-AVP."""

from __future__ import annotations

import pytest

from diameter.answer import answer_to, error_answer, is_protocol_error
from diameter.codec import (
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    Avp,
    Message,
    Problem,
    decode_message,
)
from diameter.dictionary import DICTIONARY
from diameter.validate import check_avps, check_request
from tests.diameter import vectors as v
from tests.diameter.builders import EIR, S13, TGPP, command

ECR = command(S13, 324)


def ecr_with_two_proxies() -> Message:
    msg = decode_message(v.ECR)
    msg.avps.append(
        Avp.new(
            "Proxy-Info", [Avp.new("Proxy-Host", "dra2.example.net"), Avp.new("Proxy-State", b"2")]
        )
    )
    msg.avps.append(Avp.new("Route-Record", "dra.example.net"))
    return decode_message(msg.encode())


def codes(msg: Message) -> list[int]:
    return [a.code for a in msg.avps]


def test_success_answer_shape() -> None:
    request = ecr_with_two_proxies()
    body = [Avp.new("Auth-Session-State", 1), Avp.new("Equipment-Status", 1)]
    answer = answer_to(request, EIR, 2001, body=body)
    assert (answer.hop_by_hop, answer.end_to_end) == (request.hop_by_hop, request.end_to_end)
    assert (answer.command_code, answer.application_id) == (324, S13)
    assert answer.flags == FLAG_PROXIABLE  # R cleared, P copied, no E
    assert answer.avps[0] == request.avps[0]  # Session-Id first, byte for byte
    assert answer.get("Result-Code") == 2001
    assert answer.get("Origin-Host") == v.EIR_HOST
    assert answer.get("Origin-Realm") == v.REALM
    assert answer.get("Equipment-Status") == 1
    # every Proxy-Info, in order, unchanged; no Route-Record, no Destination-*
    assert list(answer.find_all(284)) == list(request.find_all(284))
    assert len(list(answer.find_all(284))) == 2
    assert not {282, 283, 293} & set(codes(answer))
    # the answer is a valid ECA (TS 29.272 §7.2.20) and survives the wire
    wire = answer.encode()
    again = decode_message(wire)
    assert check_avps(again.avps, ECR.answer, DICTIONARY, ()) is None
    assert again.encode() == wire


def test_p_bit_copied_only_when_set() -> None:
    request = decode_message(v.ECR)
    request.flags = FLAG_REQUEST | FLAG_RETRANSMIT  # no P; T never copied into an answer
    assert answer_to(request, EIR, 2001).flags == 0
    request.flags = FLAG_REQUEST | FLAG_PROXIABLE | FLAG_RETRANSMIT
    assert answer_to(request, EIR, 2001).flags == FLAG_PROXIABLE


def test_no_session_id_no_proxy_info() -> None:
    dwr = decode_message(v.DWR)
    answer = answer_to(dwr, EIR, 2001)
    assert codes(answer) == [268, 264, 296]
    assert answer.flags == 0
    assert check_avps(answer.avps, command(0, 280).answer, DICTIONARY, ()) is None


def test_experimental_result_answer_has_no_result_code() -> None:
    request = decode_message(v.ECR)
    er = Avp.new(
        "Experimental-Result",
        [Avp.new("Vendor-Id", TGPP), Avp.new("Experimental-Result-Code", 5422)],
    )
    vsai = Avp.new(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13)],
    )
    answer = answer_to(request, EIR, None, body=[vsai, er, Avp.new("Auth-Session-State", 1)])
    assert answer.get("Result-Code") is None
    assert not answer.is_error
    assert check_avps(answer.avps, ECR.answer, DICTIONARY, ()) is None
    # same AVPs as the golden ECA 5422 vector, in the order answer_to puts them
    golden = decode_message(v.ECA_5422)
    assert sorted(a.encode() for a in answer.avps) == sorted(a.encode() for a in golden.avps)


@pytest.mark.parametrize("code", [3001, 3002, 3004, 3007, 3008, 3009, 3010])
def test_protocol_errors_set_the_e_bit_and_use_answer_message(code: int) -> None:
    request = ecr_with_two_proxies()
    body = [Avp.new("Auth-Session-State", 1), Avp.new("Equipment-Status", 0)]
    answer = answer_to(request, EIR, code, body=body, error_message="no")
    assert answer.flags == FLAG_PROXIABLE | FLAG_ERROR
    assert answer.is_error and not answer.is_request
    assert answer.get("Result-Code") == code
    # the command's body is not part of the answer-message CCF (RFC 6733 §7.2)
    assert 277 not in codes(answer) and (1445, TGPP) not in [a.key for a in answer.avps]
    assert codes(answer)[0] == 263
    assert len(list(answer.find_all(284))) == 2
    assert check_avps(answer.avps, DICTIONARY.answer_message, DICTIONARY, ()) is None


def test_e_bit_answer_to_a_non_proxiable_request() -> None:
    cer = decode_message(v.CER)
    answer = answer_to(cer, EIR, 3010)
    assert answer.flags == FLAG_ERROR
    assert codes(answer) == [268, 264, 296]


@pytest.mark.parametrize(
    ("code", "expected"),
    [(2001, False), (2999, False), (3000, True), (3999, True), (4001, False), (5001, False)],
)
def test_is_protocol_error(code: int, expected: bool) -> None:
    assert is_protocol_error(code) is expected


def test_failed_avp_error_message_and_error_reporting_host() -> None:
    request = decode_message(v.ECR)
    offender = Avp(9999, 0x40, 0, b"zz")
    answer = answer_to(
        request,
        EIR,
        5001,
        body=[Avp.new("Auth-Session-State", 1)],
        error_message="AVP 9999 not supported",
        failed_avp=offender,
        error_reporting_host="relay.example.net",
    )
    assert not answer.is_error  # 5xxx: E bit clear, the command's own CCF (RFC 6733 §7.1.5)
    assert answer.get("Error-Message") == "AVP 9999 not supported"
    assert answer.get("Error-Reporting-Host") == "relay.example.net"
    failed = answer.find(279)
    assert failed is not None
    assert failed.children == [offender]
    assert failed.encode().hex() == "00000117400000140000270f 4000000a 7a7a0000".replace(" ", "")
    again = decode_message(answer.encode())
    assert again.find(279) == failed


def test_error_answer_from_check_request_5005() -> None:
    request = decode_message(v.ECR)
    request.avps = [a for a in request.avps if a.code != 1401]
    request = decode_message(request.encode())
    problem = check_request(request, ECR)
    assert problem is not None and problem.result_code == 5005
    answer = error_answer(request, EIR, problem, body=[Avp.new("Auth-Session-State", 1)])
    assert answer.get("Result-Code") == 5005
    assert not answer.is_error
    assert answer.get("Error-Message") == problem.error_message
    failed = answer.find(279)
    assert failed is not None
    (missing,) = failed.children
    assert missing.encode().hex() == "00000579c000000c000028af"  # zero-filled Terminal-Information
    assert answer.get("Auth-Session-State") == 1
    assert check_avps(answer.avps, ECR.answer, DICTIONARY, ()) is None


def test_error_answer_for_3008_uses_the_e_bit() -> None:
    request = decode_message(v.ECR)
    request.flags |= FLAG_ERROR
    problem = check_request(request, ECR)
    assert problem is not None and problem.result_code == 3008
    answer = error_answer(request, EIR, problem, body=[Avp.new("Auth-Session-State", 1)])
    assert answer.flags == FLAG_PROXIABLE | FLAG_ERROR
    assert answer.get("Auth-Session-State") is None
    assert answer.find(279) is None
    assert check_avps(answer.avps, DICTIONARY.answer_message, DICTIONARY, ()) is None


def test_error_answer_without_message_or_failed_avp() -> None:
    answer = error_answer(decode_message(v.DWR), EIR, Problem(5012))
    assert codes(answer) == [268, 264, 296]
