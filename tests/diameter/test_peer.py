"""The sans-IO peer core (RFC 6733 §5.6), responder side, with a fake clock: capabilities
exchange, admission, watchdog, disconnect, request checks and duplicates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diameter.application import Application, vendor_specific_application_id
from diameter.codec import FLAG_ERROR, FLAG_PROXIABLE, FLAG_REQUEST, FLAG_RETRANSMIT, Avp, Message
from diameter.dictionary.base_rfc6733 import RELAY_APPLICATION_ID
from diameter.events import AnswerReceived, PeerDown, PeerUp, RequestReceived
from diameter.peer import TRANSITIONS, PeerEvent, PeerState, result_code_of
from tests.diameter.test_peer_helpers import (
    ECR,
    EIR_HOST,
    MME_HOST,
    REALM,
    S13,
    VENDOR_3GPP,
    Recorder,
    answers,
    base_request,
    cer,
    ecr,
    ecr_message,
    eir_node,
    open_responder,
    responder,
    serve,
)

# ---------------------------------------------------------------------------------------------
# The table


def test_states_named_as_rfc_6733() -> None:
    assert [s.name for s in PeerState] == [
        "CLOSED",
        "WAIT_CONN_ACK",
        "WAIT_I_CEA",
        "WAIT_CONN_ACK_ELECT",
        "WAIT_RETURNS",
        "R_OPEN",
        "I_OPEN",
        "CLOSING",
    ]


def test_responder_rows_of_standards_table_present() -> None:
    rows = {
        (PeerState.CLOSED, PeerEvent.R_CONN_CER): PeerState.R_OPEN,
        (PeerState.R_OPEN, PeerEvent.SEND_MESSAGE): PeerState.R_OPEN,
        (PeerState.R_OPEN, PeerEvent.R_RCV_MESSAGE): PeerState.R_OPEN,
        (PeerState.R_OPEN, PeerEvent.R_RCV_DWR): PeerState.R_OPEN,
        (PeerState.R_OPEN, PeerEvent.R_RCV_DWA): PeerState.R_OPEN,
        (PeerState.R_OPEN, PeerEvent.R_CONN_CER): PeerState.R_OPEN,
        (PeerState.R_OPEN, PeerEvent.STOP): PeerState.CLOSING,
        (PeerState.R_OPEN, PeerEvent.R_RCV_DPR): PeerState.CLOSING,
        (PeerState.R_OPEN, PeerEvent.R_PEER_DISC): PeerState.CLOSED,
        (PeerState.CLOSING, PeerEvent.R_RCV_DPA): PeerState.CLOSED,
        (PeerState.CLOSING, PeerEvent.TIMEOUT): PeerState.CLOSED,
        (PeerState.CLOSING, PeerEvent.R_PEER_DISC): PeerState.CLOSED,
    }
    for key, next_state in rows.items():
        assert TRANSITIONS[key][1] is next_state, key


# ---------------------------------------------------------------------------------------------
# CER / CEA (RFC 6733 §5.3)


def test_cer_accepted_cea_advertises_our_capabilities() -> None:
    node = eir_node()
    peer = responder(node, local_addresses=("127.0.0.1", "127.0.0.2"))
    events = peer.receive_data(cer(), 0.0)
    (cea,) = answers(peer)
    assert cea.command_code == 257 and not cea.is_request and not cea.is_error
    assert cea.hop_by_hop == 0x101 and cea.end_to_end == 0x5CA1AB1E
    assert cea.get("Result-Code") == 2001
    assert cea.get("Origin-Host") == EIR_HOST and cea.get("Origin-Realm") == REALM
    assert [str(a.value) for a in cea.find_all(257)] == ["127.0.0.1", "127.0.0.2"]
    assert cea.get("Vendor-Id") == VENDOR_3GPP
    assert cea.get("Product-Name") == "eir-test"
    assert cea.get("Firmware-Revision") == 7
    assert cea.get("Origin-State-Id") == 1234
    assert [a.value for a in cea.find_all(265)] == [VENDOR_3GPP]
    (vsai,) = cea.find_all(260)
    assert [(c.code, c.value) for c in vsai.children] == [(266, VENDOR_3GPP), (258, S13)]
    assert peer.state is PeerState.R_OPEN and not peer.should_close
    (up,) = events
    assert isinstance(up, PeerUp)
    assert up.info.origin_host == MME_HOST and up.info.applications == frozenset({S13})
    assert up.info.remote_address == ("127.0.0.1", 40000)
    assert node.peers[MME_HOST] is peer


def test_cea_advertises_apps_without_vendor_as_auth_application_id() -> None:
    node = eir_node()
    node.add_application(Application(4, {}))
    peer = responder(node)
    peer.receive_data(cer(), 0.0)
    (cea,) = answers(peer)
    assert [a.value for a in cea.find_all(258)] == [4]


@pytest.mark.parametrize(
    "apps",
    [
        [Avp.new("Auth-Application-Id", S13)],
        [Avp.new("Acct-Application-Id", S13)],
        # RFC 6733 §5.3: the VSAI's Vendor-Id is not used in the computation.
        [vendor_specific_application_id(9999, S13)],
        [Avp.new("Auth-Application-Id", RELAY_APPLICATION_ID)],
    ],
    ids=["auth", "acct", "vsai-other-vendor", "relay"],
)
def test_common_application_found(apps: list[Avp]) -> None:
    peer = responder()
    (up,) = peer.receive_data(cer(apps=apps), 0.0)
    assert isinstance(up, PeerUp) and S13 in up.info.applications
    assert answers(peer)[0].get("Result-Code") == 2001


def test_no_common_application_5010_and_close() -> None:
    peer = responder()
    events = peer.receive_data(cer(apps=[Avp.new("Auth-Application-Id", 16777251)]), 0.0)
    (cea,) = answers(peer)
    assert cea.get("Result-Code") == 5010 and not cea.is_error
    assert cea.get("Vendor-Id") == VENDOR_3GPP  # a full CEA
    assert peer.should_close and peer.state is PeerState.CLOSED
    assert [type(e) for e in events] == [PeerDown]


@pytest.mark.parametrize(
    ("offered", "result_code"),
    [([], 2001), ([0], 2001), ([1, 0], 2001), ([1], 5017)],
    ids=["none", "no-inband", "tls-or-none", "tls-only"],
)
def test_inband_security_id(offered: list[int], result_code: int) -> None:
    # RFC 6733 §6.10: only the RFC 3588 in-band TLS upgrade is refused (5017), then closed.
    apps = [vendor_specific_application_id(VENDOR_3GPP, S13)]
    apps += [Avp.new("Inband-Security-Id", value) for value in offered]
    peer = responder()
    peer.receive_data(cer(apps=apps), 0.0)
    (cea,) = answers(peer)
    assert cea.get("Result-Code") == result_code
    assert peer.should_close is (result_code != 2001)


@pytest.mark.parametrize(
    "settings",
    [
        {"allowed_hosts": ("hss.*",)},
        {"allowed_realms": ("other.net",)},
        {"allowed_networks": ("10.0.0.0/8",)},
    ],
    ids=["host", "realm", "address"],
)
def test_unknown_peer_3010_with_e_bit(settings: dict[str, Any]) -> None:
    peer = responder(eir_node(**settings))
    events = peer.receive_data(cer(), 0.0)
    (cea,) = answers(peer)
    assert cea.get("Result-Code") == 3010 and cea.is_error
    assert peer.should_close
    assert isinstance(events[-1], PeerDown) and "3010" in events[-1].reason


def test_admission_patterns_are_case_insensitive_fnmatch() -> None:
    node = eir_node(allowed_hosts=("MME*.Example.NET",), allowed_realms=("example.*",))
    peer = responder(node)
    peer.receive_data(cer(origin_host="mme1.EXAMPLE.net"), 0.0)
    assert answers(peer)[0].get("Result-Code") == 2001


def test_default_admits_only_loopback() -> None:
    peer = responder(remote_address=("192.0.2.1", 4000))
    peer.receive_data(cer(), 0.0)
    assert answers(peer)[0].get("Result-Code") == 3010
    peer = responder(remote_address=("::1", 4000))
    peer.receive_data(cer(), 0.0)
    assert answers(peer)[0].get("Result-Code") == 2001


def test_malformed_cer_answered_with_its_error_then_closed() -> None:
    peer = responder()
    peer.receive_data(cer(drop=["Origin-Realm"]), 0.0)
    (cea,) = answers(peer)
    assert cea.get("Result-Code") == 5005
    (failed,) = cea.find(279).children  # type: ignore[union-attr]
    assert failed.code == 296
    assert peer.should_close


def test_first_message_not_a_cer_closes_without_answer() -> None:
    peer = responder()
    events = peer.receive_data(base_request(280), 0.0)
    assert peer.data_to_send() == b""
    assert peer.should_close and isinstance(events[0], PeerDown)


def test_garbage_before_cer_closes_without_answer() -> None:
    peer = responder()
    peer.receive_data(b"\x02\x00\x00\x14" + bytes(16), 0.0)
    assert peer.data_to_send() == b""
    assert peer.should_close


def test_no_cer_within_timeout_closes() -> None:
    peer = responder(eir_node(cer_timeout=10.0), now=100.0)
    assert peer.next_deadline() == 110.0
    assert peer.handle_timeout(109.9) == [] and not peer.should_close
    events = peer.handle_timeout(110.0)
    assert peer.should_close and isinstance(events[0], PeerDown)


def test_cer_in_pieces_is_framed() -> None:
    peer = responder()
    data = cer()
    for i in range(len(data)):
        peer.receive_data(data[i : i + 1], 0.0)
    assert peer.is_open


# ---------------------------------------------------------------------------------------------
# A second connection from an open peer (RFC 6733 §5.6.4)


def test_second_connection_of_open_peer_is_rejected() -> None:
    node = eir_node()
    first = open_responder(node)
    second = responder(node)
    events = second.receive_data(cer(origin_host=MME_HOST.upper()), 0.0)
    # R-Open + R-Conn-CER -> R-Reject: the new connection closes, the open one stays.
    assert second.data_to_send() == b""
    assert second.should_close and isinstance(events[-1], PeerDown)
    assert first.is_open and node.peers[MME_HOST] is first


def test_new_connection_after_the_first_closed_is_accepted() -> None:
    node = eir_node()
    first = open_responder(node)
    first.connection_lost(1.0)
    assert MME_HOST not in node.peers
    second = open_responder(node, now=2.0)
    assert node.peers[MME_HOST] is second


# ---------------------------------------------------------------------------------------------
# DWR / DWA and the watchdog


def test_dwr_answered_with_dwa_2001_and_origin_state_id() -> None:
    peer = open_responder()
    assert peer.receive_data(base_request(280, 7), 1.0) == []
    (dwa,) = answers(peer)
    assert dwa.command_code == 280 and dwa.hop_by_hop == 7
    assert dwa.get("Result-Code") == 2001 and dwa.get("Origin-State-Id") == 1234


def test_malformed_dwr_gets_error() -> None:
    peer = open_responder()
    peer.receive_data(Message(280, 0, FLAG_REQUEST, 8, 8, [Avp.new("Origin-Host", MME_HOST)]).encode(), 1.0)
    (dwa,) = answers(peer)
    assert dwa.get("Result-Code") == 5005


def _tw(peer_deadline: float | None, now: float) -> float:
    assert peer_deadline is not None
    return peer_deadline - now


def test_watchdog_dwr_after_tw_and_close_after_two_unanswered_expiries() -> None:
    node = eir_node(watchdog_interval=30.0, watchdog_jitter=0.0)
    peer = open_responder(node)
    assert peer.next_deadline() == 30.0
    peer.handle_timeout(30.0)
    (dwr,) = answers(peer)
    assert dwr.command_code == 280 and dwr.is_request
    assert dwr.get("Origin-Host") == EIR_HOST and dwr.get("Origin-State-Id") == 1234
    assert peer.handle_timeout(60.0) == []  # SUSPECT, DWR not resent
    assert peer.data_to_send() == b"" and not peer.should_close
    events = peer.handle_timeout(90.0)
    assert peer.should_close and "watchdog" in events[-1].reason


def test_dwa_keeps_the_connection() -> None:
    node = eir_node(watchdog_interval=30.0, watchdog_jitter=0.0)
    peer = open_responder(node)
    peer.handle_timeout(30.0)
    (dwr,) = answers(peer)
    dwa = Message(280, 0, 0, dwr.hop_by_hop, dwr.end_to_end, [
        Avp.new("Result-Code", 2001), Avp.new("Origin-Host", MME_HOST), Avp.new("Origin-Realm", REALM)
    ])
    assert peer.receive_data(dwa.encode(), 31.0) == []
    assert peer.next_deadline() == 61.0
    peer.handle_timeout(61.0)
    assert answers(peer)[0].command_code == 280  # a new DWR, not a close
    assert not peer.should_close


def test_any_received_traffic_resets_tw() -> None:
    node = eir_node(watchdog_interval=30.0, watchdog_jitter=0.0)
    peer = open_responder(node)
    peer.receive_data(ecr(), 20.0)
    assert peer.next_deadline() == 50.0
    peer.handle_timeout(30.0)
    assert peer.data_to_send() == b""  # no DWR before the new Tw


def test_watchdog_interval_never_below_six_seconds() -> None:
    node = eir_node(watchdog_interval=1.0, watchdog_jitter=0.0)
    peer = open_responder(node, now=0.0)
    assert peer.next_deadline() == 6.0


def test_watchdog_jitter_within_two_seconds() -> None:
    node = eir_node(watchdog_interval=30.0, watchdog_jitter=2.0)
    for i in range(50):
        peer = open_responder(node, now=float(i))
        tw = _tw(peer.next_deadline(), float(i))
        assert 28.0 <= tw <= 32.0
        peer.connection_lost(float(i))


# ---------------------------------------------------------------------------------------------
# DPR / DPA (RFC 6733 §5.4)


def test_dpr_received_answered_then_closing_until_peer_closes() -> None:
    peer = open_responder(eir_node(disconnect_linger=1.0))
    events = peer.receive_data(base_request(282, 9, [Avp.new("Disconnect-Cause", 2)]), 5.0)
    assert events == []
    (dpa,) = answers(peer)
    assert dpa.command_code == 282 and dpa.get("Result-Code") == 2001
    assert peer.state is PeerState.CLOSING and not peer.should_close
    assert peer.disconnect_cause == 2
    events = peer.connection_lost(5.5)
    assert peer.state is PeerState.CLOSED
    assert "DPR" in events[-1].reason


def test_refused_dpr_leaves_the_connection_open() -> None:
    # RFC 6733 §5.4: an error DPA tells the peer its DPR failed; nothing else changes.
    peer = open_responder(eir_node(disconnect_linger=1.0))
    peer.receive_data(base_request(282, 9), 5.0)  # no Disconnect-Cause
    (dpa,) = answers(peer)
    assert dpa.get("Result-Code") == 5005 and dpa.hop_by_hop == 9
    assert peer.state is PeerState.R_OPEN and peer.disconnect_cause is None
    peer.handle_timeout(7.0)
    assert not peer.should_close
    peer.receive_data(base_request(282, 10, [Avp.new("Disconnect-Cause", 0)]), 8.0)
    (dpa,) = answers(peer)
    assert dpa.get("Result-Code") == 2001 and peer.state is PeerState.CLOSING


def test_cer_on_open_connection_answered_with_its_own_identifiers_and_checks() -> None:
    # RFC 6733 §5.6 R-Open R-Rcv-CER: R-Snd-CEA; §3: the answer copies this request's ids.
    peer = open_responder()
    peer.receive_data(cer(hop_by_hop=0x777), 1.0)
    (cea,) = answers(peer)
    assert cea.hop_by_hop == 0x777 and cea.get("Result-Code") == 2001
    peer.receive_data(cer(hop_by_hop=0x778, apps=[Avp.new("Auth-Application-Id", 4)]), 2.0)
    (cea,) = answers(peer)
    assert cea.hop_by_hop == 0x778 and cea.get("Result-Code") == 5010
    assert cea.get("Vendor-Id") == VENDOR_3GPP  # a full CEA
    assert peer.state is PeerState.R_OPEN and not peer.should_close
    assert peer.info is not None and peer.info.applications == frozenset({S13})  # unchanged


def test_dpr_received_then_linger_expires() -> None:
    peer = open_responder(eir_node(disconnect_linger=1.0))
    peer.receive_data(base_request(282, 9, [Avp.new("Disconnect-Cause", 0)]), 5.0)
    assert peer.next_deadline() == 6.0
    peer.handle_timeout(6.0)
    assert peer.should_close and peer.state is PeerState.CLOSED


def test_stop_sends_dpr_and_closes_on_dpa() -> None:
    peer = open_responder(eir_node(dpa_timeout=5.0))
    assert peer.stop(1, 10.0) == []
    (dpr,) = answers(peer)
    assert dpr.command_code == 282 and dpr.is_request and dpr.get("Disconnect-Cause") == 1
    assert peer.state is PeerState.CLOSING
    dpa = Message(282, 0, 0, dpr.hop_by_hop, dpr.end_to_end, [
        Avp.new("Result-Code", 2001), Avp.new("Origin-Host", MME_HOST), Avp.new("Origin-Realm", REALM)
    ])
    events = peer.receive_data(dpa.encode(), 10.1)
    # RFC 6733 §5.4: the receiver of the DPA closes the transport.
    assert peer.should_close and events[-1] == PeerDown("stopped: DPA received")


def test_stop_closes_after_dpa_timeout() -> None:
    peer = open_responder(eir_node(dpa_timeout=5.0))
    peer.stop(0, 10.0)
    peer.data_to_send()
    assert peer.next_deadline() == 15.0
    assert peer.handle_timeout(14.0) == []
    events = peer.handle_timeout(15.0)
    assert peer.should_close and "no DPA" in events[-1].reason  # type: ignore[union-attr]


def test_requests_in_flight_still_answered_while_closing() -> None:
    peer = open_responder()
    (request,) = peer.receive_data(ecr(), 1.0)
    assert isinstance(request, RequestReceived)
    peer.stop(0, 2.0)
    peer.data_to_send()
    serve(peer, request, 2.1)
    assert answers(peer)[0].get("Result-Code") == 2001


def test_requests_after_our_dpa_are_not_processed() -> None:
    # RFC 6733 §5.6: Closing has no Process row; answers to earlier requests still go out,
    # before the DPA (§5.4: its receiver closes the connection on it).
    peer = open_responder(eir_node(disconnect_linger=1.0))
    (before,) = peer.receive_data(ecr(hop_by_hop=0x10, end_to_end=0x10), 1.0)
    dpr = base_request(282, 9, [Avp.new("Disconnect-Cause", 0)])
    # The DPR and a request right behind it in the same read: only the DPR is acted on.
    assert peer.receive_data(dpr + ecr(hop_by_hop=0x11, end_to_end=0x11), 2.0) == []
    assert peer.data_to_send() == b""  # the DPA waits for the answer before it
    assert peer.state is PeerState.CLOSING and peer.in_flight == 1
    assert peer.receive_data(ecr(hop_by_hop=0x12, end_to_end=0x12), 2.1) == []
    assert peer.data_to_send() == b""
    serve(peer, before, 2.2)
    answer, dpa = answers(peer)
    assert answer.hop_by_hop == 0x10 and answer.get("Result-Code") == 2001
    assert (dpa.command_code, dpa.hop_by_hop, dpa.get("Result-Code")) == (282, 9, 2001)
    peer.handle_timeout(3.0)
    assert not peer.should_close  # the linger runs from the DPA
    peer.handle_timeout(3.2)  # then closed as before, after the linger
    assert peer.should_close


def test_requests_after_our_dpr_are_not_processed() -> None:
    node = eir_node(dpa_timeout=5.0)
    peer = open_responder(node)
    (before,) = peer.receive_data(ecr(hop_by_hop=0x20, end_to_end=0x20), 1.0)
    peer.stop(1, 2.0)
    (dpr,) = answers(peer)
    assert peer.state is PeerState.CLOSING
    assert peer.receive_data(ecr(hop_by_hop=0x21, end_to_end=0x21), 2.1) == []
    assert peer.data_to_send() == b"" and peer.in_flight == 1 and node.in_flight_total == 1
    serve(peer, before, 2.2)
    assert [a.hop_by_hop for a in answers(peer)] == [0x20]
    dpa = Message(282, 0, 0, dpr.hop_by_hop, dpr.end_to_end, [
        Avp.new("Result-Code", 2001), Avp.new("Origin-Host", MME_HOST), Avp.new("Origin-Realm", REALM)
    ])
    peer.receive_data(dpa.encode(), 2.3)
    assert peer.should_close


def test_stop_before_cer_just_closes() -> None:
    peer = responder()
    peer.stop(0, 1.0)
    assert peer.should_close and peer.data_to_send() == b""


# ---------------------------------------------------------------------------------------------
# Requests in the open state


def test_well_formed_request_reaches_application() -> None:
    peer = open_responder()
    (event,) = peer.receive_data(ecr(), 1.0)
    assert isinstance(event, RequestReceived)
    assert event.message.command_code == ECR and event.peer.origin_host == MME_HOST
    assert event.key == (MME_HOST, 0xE2E303)
    serve(peer, event, 1.0)
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == 2001 and answer.hop_by_hop == 0x303
    assert peer.in_flight == 0 and peer.node.in_flight_total == 0


def _error(peer_data: bytes, code: int, *, e_bit: bool) -> Message:
    peer = open_responder()
    assert peer.receive_data(peer_data, 1.0) == []
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == code
    assert answer.is_error is e_bit
    assert not answer.is_request
    return answer


def test_unknown_command_3001() -> None:
    _error(ecr(command_code=999), 3001, e_bit=True)


def test_unknown_base_command_3001() -> None:
    _error(base_request(258), 3001, e_bit=True)


def test_application_not_ours_3007() -> None:
    _error(ecr(application_id=16777251), 3007, e_bit=True)


def test_application_not_negotiated_3007() -> None:
    node = eir_node()
    node.add_application(Application(4, {}))
    peer = responder(node)
    peer.receive_data(cer(apps=[Avp.new("Auth-Application-Id", 4)]), 0.0)
    assert answers(peer)[0].get("Result-Code") == 2001
    peer.receive_data(ecr(), 1.0)
    assert answers(peer)[0].get("Result-Code") == 3007


def test_destination_host_not_ours_3002() -> None:
    _error(ecr(destination_host="other.example.net"), 3002, e_bit=True)


def test_destination_host_ours_in_other_case_accepted() -> None:
    peer = open_responder()
    (event,) = peer.receive_data(ecr(destination_host=EIR_HOST.upper()), 1.0)
    assert isinstance(event, RequestReceived)


def test_realm_not_served_3003() -> None:
    _error(ecr(destination_realm="other.net"), 3003, e_bit=True)


def test_served_realms_configurable() -> None:
    peer = open_responder(eir_node(served_realms=("other.net",)))
    (event,) = peer.receive_data(ecr(destination_realm="OTHER.net"), 1.0)
    assert isinstance(event, RequestReceived)
    peer.receive_data(ecr(destination_realm=REALM, end_to_end=5), 1.0)
    assert answers(peer)[0].get("Result-Code") == 3003


def test_missing_avp_5005_with_failed_avp_and_application_body() -> None:
    answer = _error(ecr(drop=["Terminal-Information"]), 5005, e_bit=False)
    (failed,) = answer.find(279).children  # type: ignore[union-attr]
    assert (failed.code, failed.vendor) == (1401, VENDOR_3GPP)
    # S13's ECA CCF needs Auth-Session-State; the error body supplies it (and the VSAI).
    assert answer.get("Auth-Session-State") == 1
    assert answer.find(260) is not None
    assert answer.get("Session-Id") is not None


def test_bad_avp_length_answered_with_message_problem_5014() -> None:
    raw = bytearray(ecr())
    # Corrupt the length of the last AVP (Terminal-Information) to run past the message.
    offset = 20
    last = offset
    while offset < len(raw):
        last = offset
        length = int.from_bytes(raw[offset + 5 : offset + 8], "big")
        offset += (length + 3) & ~3
    raw[last + 5 : last + 8] = (200).to_bytes(3, "big")
    _error(bytes(raw), 5014, e_bit=False)


def test_e_bit_in_request_3008() -> None:
    _error(ecr(flags=FLAG_REQUEST | FLAG_PROXIABLE | FLAG_ERROR), 3008, e_bit=True)


def test_invalid_enumerated_value_5004() -> None:
    message = ecr_message()
    message.avps = [
        Avp.new("Auth-Session-State", 7) if a.code == 277 else a for a in message.avps
    ]
    _error(message.encode(), 5004, e_bit=False)


def test_bad_version_in_open_state_5011_then_close() -> None:
    peer = open_responder()
    raw = bytearray(ecr())
    raw[0] = 2
    events = peer.receive_data(bytes(raw), 1.0)
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == 5011 and answer.hop_by_hop == 0x303
    assert peer.should_close and isinstance(events[-1], PeerDown)


def test_bad_message_length_5015_then_close() -> None:
    peer = open_responder()
    raw = bytearray(ecr())
    raw[1:4] = (len(raw) + 2).to_bytes(3, "big")
    peer.receive_data(bytes(raw), 1.0)
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == 5015
    assert peer.should_close


def test_unframeable_answer_just_closes() -> None:
    peer = open_responder()
    raw = bytearray(ecr())
    raw[0] = 2
    raw[4] = 0  # an answer: nothing to answer
    peer.receive_data(bytes(raw), 1.0)
    assert peer.data_to_send() == b"" and peer.should_close


def test_answer_with_unknown_hop_by_hop_discarded() -> None:
    peer = open_responder()
    answer = Message(ECR, S13, FLAG_PROXIABLE, 0xDEAD, 1, [Avp.new("Result-Code", 2001)])
    assert peer.receive_data(answer.encode(), 1.0) == []
    # An E-bit answer never answers an answer.
    assert peer.data_to_send() == b"" and not peer.should_close


def test_answer_to_our_request_delivered() -> None:
    peer = open_responder()
    hop_by_hop = peer.send_request(ecr_message(), 1.0)
    (sent,) = answers(peer)
    assert sent.hop_by_hop == hop_by_hop and sent.end_to_end != 0
    assert peer.outstanding == 1
    answer = Message(ECR, S13, FLAG_PROXIABLE, hop_by_hop, sent.end_to_end, [Avp.new("Result-Code", 2001)])
    (event,) = peer.receive_data(answer.encode(), 2.0)
    assert isinstance(event, AnswerReceived) and event.hop_by_hop == hop_by_hop
    assert event.message.get("Result-Code") == 2001
    assert peer.outstanding == 0


def test_send_request_when_not_open_raises() -> None:
    from diameter.errors import DiameterError

    peer = responder()
    with pytest.raises(DiameterError):
        peer.send_request(ecr_message(), 0.0)


def test_handler_failure_answers_5012_with_application_body() -> None:
    peer = open_responder()
    (event,) = peer.receive_data(ecr(), 1.0)
    assert isinstance(event, RequestReceived)
    peer.fail_request(event, 1.0, "boom")
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == 5012 and not answer.is_error
    assert answer.get("Auth-Session-State") == 1
    assert peer.in_flight == 0


# ---------------------------------------------------------------------------------------------
# In-flight bounds: 3004 at once


def test_too_busy_per_peer_3004() -> None:
    peer = open_responder(eir_node(max_in_flight_per_peer=2))
    events = []
    for i in range(3):
        events += peer.receive_data(ecr(hop_by_hop=i, end_to_end=i), 1.0)
    assert len(events) == 2
    (busy,) = answers(peer)
    assert busy.get("Result-Code") == 3004 and busy.is_error and busy.hop_by_hop == 2
    # The busy request was not remembered: its retransmission is processed once there is room.
    first = events[0]
    assert isinstance(first, RequestReceived)
    serve(peer, first, 1.1)
    peer.data_to_send()
    (retry,) = peer.receive_data(ecr(hop_by_hop=2, end_to_end=2), 1.2)
    assert isinstance(retry, RequestReceived)


def test_too_busy_total_over_connections() -> None:
    node = eir_node()
    node.max_in_flight_total = 1
    a = open_responder(node)
    b = open_responder(node, origin_host="mme2.example.net")
    assert len(a.receive_data(ecr(end_to_end=1), 1.0)) == 1
    assert b.receive_data(ecr(end_to_end=2, origin_host="mme2.example.net"), 1.0) == []
    assert answers(b)[0].get("Result-Code") == 3004


# ---------------------------------------------------------------------------------------------
# Duplicates (RFC 6733 §5.5.4)


def test_duplicate_after_answer_gets_same_answer_not_processed_twice() -> None:
    peer = open_responder()
    (event,) = peer.receive_data(ecr(hop_by_hop=1, end_to_end=77), 1.0)
    assert isinstance(event, RequestReceived)
    serve(peer, event, 1.0)
    first = peer.data_to_send()
    events = peer.receive_data(
        ecr(hop_by_hop=2, end_to_end=77, flags=FLAG_REQUEST | FLAG_PROXIABLE | FLAG_RETRANSMIT), 2.0
    )
    assert events == []
    again = peer.data_to_send()
    assert again[:12] == first[:12] and again[16:] == first[16:]
    assert int.from_bytes(again[12:16], "big") == 2  # the duplicate's own Hop-by-Hop


def test_duplicate_without_t_flag_also_detected() -> None:
    peer = open_responder()
    (event,) = peer.receive_data(ecr(end_to_end=78), 1.0)
    serve(peer, event, 1.0)
    peer.data_to_send()
    assert peer.receive_data(ecr(end_to_end=78), 2.0) == []
    assert answers(peer)[0].get("Result-Code") == 2001


def test_duplicate_in_flight_answered_when_first_completes() -> None:
    peer = open_responder()
    (event,) = peer.receive_data(ecr(hop_by_hop=1, end_to_end=79), 1.0)
    assert peer.receive_data(ecr(hop_by_hop=2, end_to_end=79), 1.5) == []
    assert peer.data_to_send() == b""
    serve(peer, event, 2.0)
    got = answers(peer)
    assert sorted(a.hop_by_hop for a in got) == [1, 2]


def test_duplicate_on_another_connection_caught() -> None:
    node = eir_node()
    a = open_responder(node)
    (event,) = a.receive_data(ecr(end_to_end=80), 1.0)
    serve(a, event, 1.0)
    a.connection_lost(2.0)
    b = open_responder(node, now=3.0)
    assert b.receive_data(ecr(end_to_end=80, hop_by_hop=9), 3.0) == []
    assert answers(b)[0].hop_by_hop == 9


def test_same_end_to_end_from_other_host_is_not_a_duplicate() -> None:
    peer = open_responder()
    (event,) = peer.receive_data(ecr(end_to_end=81), 1.0)
    serve(peer, event, 1.0)
    (other,) = peer.receive_data(ecr(end_to_end=81, origin_host="mme2.example.net"), 2.0)
    assert isinstance(other, RequestReceived)


def test_duplicate_window_expires() -> None:
    peer = open_responder(eir_node(duplicate_window=60.0))
    (event,) = peer.receive_data(ecr(end_to_end=82), 1.0)
    serve(peer, event, 1.0)
    assert peer.receive_data(ecr(end_to_end=82), 60.0) == []
    (again,) = peer.receive_data(ecr(end_to_end=82), 61.5)
    assert isinstance(again, RequestReceived)


def test_duplicate_cache_bounded_oldest_evicted() -> None:
    node = eir_node(duplicate_cache_size=3)
    peer = open_responder(node)
    for e2e in range(5):
        (event,) = peer.receive_data(ecr(end_to_end=e2e), 1.0)
        serve(peer, event, 1.0)
    assert len(node.duplicates) == 3
    assert (MME_HOST, 0) not in node.duplicates and (MME_HOST, 4) in node.duplicates
    (again,) = peer.receive_data(ecr(end_to_end=0), 2.0)
    assert isinstance(again, RequestReceived)
    assert peer.receive_data(ecr(end_to_end=4), 2.0) == []


def test_error_answers_are_remembered_too() -> None:
    peer = open_responder()
    peer.receive_data(ecr(end_to_end=90, destination_realm="x.net"), 1.0)
    first = peer.data_to_send()
    peer.receive_data(ecr(end_to_end=90, destination_realm="x.net"), 1.0)
    assert peer.data_to_send() == first


# ---------------------------------------------------------------------------------------------
# Observer and helpers


def test_observer_sees_messages_and_states() -> None:
    node = eir_node()
    recorder = node.observer
    assert isinstance(recorder, Recorder)
    peer = open_responder(node)
    peer.receive_data(ecr(destination_realm="x.net"), 1.0)
    peer.data_to_send()
    assert ("in", "CER", None) in recorder.messages
    assert ("out", "CEA", 2001) in recorder.messages
    assert ("in", "ECR", None) in recorder.messages
    assert ("out", "ECA", 3003) in recorder.messages
    assert (peer, PeerState.CLOSED, PeerState.R_OPEN) in recorder.states
    assert recorder.states[0] == (peer, None, PeerState.CLOSED)
    peer.connection_lost(2.0)
    assert recorder.states[-2:] == [
        (peer, PeerState.R_OPEN, PeerState.CLOSED),
        (peer, PeerState.CLOSED, None),
    ]
    live: dict[object, int] = {}
    for _, old, new in recorder.states:
        if old is not None:
            live[old] = live.get(old, 0) - 1
        if new is not None:
            live[new] = live.get(new, 0) + 1
    assert set(live.values()) == {0}  # gauges per state return to zero


def test_result_code_of_reads_result_and_experimental_result() -> None:
    plain = Message(ECR, S13, 0, 1, 1, [Avp.new("Session-Id", "x"), Avp.new("Result-Code", 2001)])
    assert result_code_of(plain.encode()) == 2001
    experimental = Message(ECR, S13, 0, 1, 1, [
        Avp.new("Experimental-Result", [Avp.new("Vendor-Id", VENDOR_3GPP), Avp.new("Experimental-Result-Code", 5422)])
    ])
    assert result_code_of(experimental.encode()) == 5422
    assert result_code_of(Message(ECR, S13, 0, 1, 1, []).encode()) is None


# ---------------------------------------------------------------------------------------------
# Nothing malformed raises out of the core (hypothesis)

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([0, 1, 2]))
def test_arbitrary_bytes_never_raise(data: bytes, when: int) -> None:
    peer = responder() if when == 0 else open_responder()
    if when == 2:
        # A well-framed header (request, S13 or base) followed by arbitrary AVP bytes.
        body = data + bytes(-len(data) % 4)
        code = (ECR, S13) if data[:1] < b"\x80" else (257, 0)
        header = Message(code[0], code[1], FLAG_REQUEST | FLAG_PROXIABLE, 1, 1).encode()
        data = bytes([1]) + (20 + len(body)).to_bytes(3, "big") + header[4:20] + body
    peer.receive_data(data, 1.0)
    peer.data_to_send()
    peer.handle_timeout(100.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=40)), max_size=6))
def test_arbitrary_avps_in_requests_never_raise(avps: list[tuple[int, bytes]]) -> None:
    peer = open_responder()
    message = ecr_message()
    message.avps.extend(Avp(code, 0x40 if code % 2 else 0, 0, data) for code, data in avps)
    peer.receive_data(message.encode(), 1.0)
    for answer in answers(peer):
        assert not answer.is_request
    cer_peer = responder()
    bad_cer = Message(257, 0, FLAG_REQUEST, 1, 1, [Avp(code, 0, 0, data) for code, data in avps])
    cer_peer.receive_data(bad_cer.encode(), 1.0)
    cer_peer.data_to_send()


def test_peer_closing_before_our_dpa_arrives_reason() -> None:
    peer = open_responder()
    peer.stop(0, 1.0)
    events = peer.connection_lost(1.5)
    assert events[-1] == PeerDown("stopped: DPR sent")


# The steps an application answer (Process) and Send-Message (Snd-Message) take in R-Open/I-Open
# without the table are the table's: the same events, bytes, outstanding requests, watchdog and
# observer calls as a peer made to go through it. Operations: send a request; receive the answer
# to the k-th request sent (again: a duplicate); receive an answer with a Hop-by-Hop never sent.
_OPERATIONS = st.lists(
    st.one_of(st.just(("send", 0)), st.tuples(st.just("answer"), st.integers(0, 7)),
              st.just(("unknown", 0))),
    max_size=25,
)


@given(_OPERATIONS)
def test_open_state_answers_and_sends_are_the_table_rows(operations: list[tuple[str, int]]) -> None:
    def run(through_table: bool) -> list[object]:
        node = eir_node()
        peer = open_responder(node)
        if through_table:
            peer._direct = False
            peer._direct_send = False
        seen: list[object] = []
        sent: list[tuple[int, int]] = []
        now = 1.0
        for operation, k in operations:
            now += 0.5
            if operation == "send":
                raw = ecr_message().encode()
                hop_by_hop = peer.send_raw_request(raw, now)
                sent.append((hop_by_hop, int.from_bytes(raw[16:20], "big")))
                seen.append(peer.data_to_send())
                continue
            if operation == "answer" and sent:
                hop_by_hop, end_to_end = sent[k % len(sent)]
            else:
                hop_by_hop, end_to_end = 0xDEAD0000 + k, 1
            answer = Message(ECR, S13, FLAG_PROXIABLE, hop_by_hop, end_to_end,
                             [Avp.new("Result-Code", 2001)]).encode()
            events = peer.receive_data(answer, now)
            seen.append([(type(e).__name__, getattr(e, "hop_by_hop", None),
                          getattr(e, "raw", None)) for e in events])
            seen.append(peer.data_to_send())
        assert isinstance(node.observer, Recorder)
        return [seen, peer.outstanding, peer.state, peer.watchdog.deadline,
                peer.next_deadline(), node.observer.messages]

    assert run(through_table=False) == run(through_table=True)
