"""M bits set against RFC 6733 §4.5 on AVPs of the dictionary (issue 15): accepted and reported by
default, refused with 5016 DIAMETER_INVALID_AVP_BIT_COMBO when ``strict_avp_flags`` is on.
Unknown AVPs with M set get 5001 either way."""

from __future__ import annotations

import logging

import pytest

from diameter.codec import AVP_FLAG_MANDATORY, Avp, decode_message
from diameter.dictionary import DICTIONARY
from diameter.events import RequestReceived
from diameter.peer import PeerState
from diameter.validate import check_request
from tests.diameter.test_peer_helpers import (
    S13,
    Recorder,
    answers,
    base_request,
    cer,
    ecr_message,
    eir_node,
    open_responder,
    responder,
)

M = AVP_FLAG_MANDATORY
# Product-Name and Firmware-Revision: "MUST NOT" M (RFC 6733 §4.5), set by real clients.
PRODUCT_NAME_M = Avp(269, M, 0, b"mme-test")
FIRMWARE_REVISION_M = Avp(267, M, 0, (3).to_bytes(4, "big"))
ECR = DICTIONARY.command(S13, 324)


def cer_with_m_bits() -> bytes:
    """A CER whose Product-Name and Firmware-Revision carry the M bit."""
    message = decode_message(cer(drop=("Product-Name",)))
    message.avps += [PRODUCT_NAME_M, FIRMWARE_REVISION_M]
    return message.encode()


def ecr_with_m_bits(hop_by_hop: int = 0x303, end_to_end: int = 0xE2E303) -> bytes:
    message = ecr_message(hop_by_hop=hop_by_hop, end_to_end=end_to_end)
    message.avps += [PRODUCT_NAME_M, FIRMWARE_REVISION_M]
    return message.encode()


def deviations(peer_node: object) -> list[str]:
    observer = peer_node.observer  # type: ignore[attr-defined]
    assert isinstance(observer, Recorder)
    return observer.flag_deviations


def test_cer_with_m_on_product_name_and_firmware_revision_accepted_by_default() -> None:
    node = eir_node()
    peer = responder(node)
    peer.receive_data(cer_with_m_bits(), 0.0)
    (cea,) = answers(peer)
    assert cea.get("Result-Code") == 2001
    assert peer.state is PeerState.R_OPEN and not peer.should_close
    assert peer.info is not None and peer.info.product_name == "mme-test"
    assert peer.info.firmware_revision == 3
    assert deviations(node) == ["Product-Name", "Firmware-Revision"]


def test_cer_with_m_bits_refused_5016_when_strict() -> None:
    node = eir_node(strict_avp_flags=True)
    peer = responder(node)
    peer.receive_data(cer_with_m_bits(), 0.0)
    (cea,) = answers(peer)
    # RFC 6733 §7.1.5: 5016, Failed-AVP holding the first offending AVP as received.
    assert cea.get("Result-Code") == 5016 and not cea.is_error
    (failed,) = cea.find_all(279)
    assert [(c.code, c.flags, c.data) for c in failed.children] == [(269, M, b"mme-test")]
    assert peer.should_close and peer.state is PeerState.CLOSED
    assert deviations(node) == []


def test_micr_with_m_bits_reaches_the_application_and_is_counted_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = eir_node()
    peer = open_responder(node)
    caplog.set_level(logging.WARNING, logger="diameter.peer")
    for n in range(3):
        (event,) = peer.receive_data(ecr_with_m_bits(0x400 + n, 0xE00 + n), 1.0 + n)
        assert isinstance(event, RequestReceived)
        assert [a.code for a in event.message.avps[-2:]] == [269, 267]
    # Counted on each request (the deviating shape is never learnt by the fast path) ...
    assert deviations(node) == ["Product-Name", "Firmware-Revision"] * 3
    # ... and logged once per AVP on this connection.
    lines = [r.getMessage() for r in caplog.records if "M bit set" in r.getMessage()]
    assert len(lines) == 2
    assert "Product-Name" in lines[0] and "Firmware-Revision" in lines[1]


def test_micr_with_m_bits_refused_5016_when_strict() -> None:
    node = eir_node(strict_avp_flags=True)
    peer = open_responder(node)
    assert peer.receive_data(ecr_with_m_bits(), 1.0) == []
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == 5016 and answer.hop_by_hop == 0x303
    assert answer.get("Auth-Session-State") == 1  # the S13 error body
    (failed,) = answer.find_all(279)
    assert [c.code for c in failed.children] == [269]
    assert peer.is_open


def test_m_bit_inside_a_grouped_avp_accepted_and_named() -> None:
    # Proxy-Info ends in *[ AVP ]: an Error-Reporting-Host (MUST NOT M) with M inside it.
    node = eir_node()
    peer = open_responder(node)
    message = ecr_message()
    message.avps.append(
        Avp.new(
            "Proxy-Info",
            [Avp.new("Proxy-Host", "dra.example.net"), Avp.new("Proxy-State", b"s"),
             Avp(294, M, 0, b"x.example.net")],
        )
    )
    (event,) = peer.receive_data(message.encode(), 1.0)
    assert isinstance(event, RequestReceived)
    assert deviations(node) == ["Error-Reporting-Host"]


def test_unknown_avp_with_m_bit_is_still_5001() -> None:
    node = eir_node()
    peer = open_responder(node)
    message = ecr_message()
    message.avps.append(Avp(4242, M, 0, b"zz"))
    assert peer.receive_data(message.encode(), 1.0) == []
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == 5001
    assert deviations(node) == []


def test_m_bits_on_dwr_and_dpr_accepted() -> None:
    node = eir_node()
    peer = open_responder(node)
    peer.receive_data(base_request(280, 0x50, [PRODUCT_NAME_M]), 1.0)  # DWR ends in *[ AVP ]
    (dwa,) = answers(peer)
    assert dwa.get("Result-Code") == 2001
    dpr = base_request(282, 0x51, [Avp.new("Disconnect-Cause", 0), FIRMWARE_REVISION_M])
    peer.receive_data(dpr, 2.0)
    (dpa,) = answers(peer)
    assert dpa.get("Result-Code") == 2001 and peer.state is PeerState.CLOSING
    assert deviations(node) == ["Product-Name", "Firmware-Revision"]


def test_lenient_check_does_not_teach_the_strict_check_a_deviating_shape() -> None:
    # The fast path learns shapes that passed the walk; one with a tolerated deviation must not
    # be learnt, or a later strict check of the same octets would skip the 5016.
    raw = ecr_with_m_bits(0x600, 0xE600)
    assert ECR is not None
    found: list[object] = []
    for _ in range(3):
        assert check_request(decode_message(raw), ECR, DICTIONARY, found) is None  # type: ignore[arg-type]
    assert len(found) == 6
    problem = check_request(decode_message(raw), ECR)
    assert problem is not None and problem.result_code == 5016
