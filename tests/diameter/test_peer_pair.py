"""Two sans-IO cores wired together (initiator + responder) with a fake clock, the initiator rows
of RFC 6733 §5.6 and the election (§5.6.4)."""

from __future__ import annotations

from diameter.application import Application
from diameter.codec import FLAG_REQUEST, Avp, Message, decode_message
from diameter.events import AnswerReceived, PeerDown, PeerUp, RequestReceived
from diameter.node import Node
from diameter.peer import Peer, PeerState, Role
from tests.diameter.test_peer_helpers import (
    EIR_HOST,
    MME_HOST,
    REMOTE,
    S13,
    answers,
    cer,
    connected_pair,
    ecr_message,
    eir_node,
    mme_node,
    pump,
    responder,
    serve,
)


def test_initiator_start_connect_cer_cea_open() -> None:
    client = mme_node()
    peer = Peer(client, Role.INITIATOR, 0.0, peer_host=EIR_HOST)
    assert peer.start(0.0) == []
    assert peer.state is PeerState.WAIT_CONN_ACK
    assert client.peers[EIR_HOST] is peer
    peer.connection_made(0.1)
    assert peer.state is PeerState.WAIT_I_CEA
    (sent,) = answers(peer)
    assert sent.command_code == 257 and sent.is_request
    assert sent.get("Origin-Host") == MME_HOST
    server_peer = responder(eir_node())
    server_peer.receive_data(sent.encode(), 0.2)
    events = peer.receive_data(server_peer.data_to_send(), 0.3)
    assert peer.state is PeerState.I_OPEN
    (up,) = events
    assert isinstance(up, PeerUp) and up.info.origin_host == EIR_HOST
    assert up.info.applications == frozenset({S13})


def test_connection_nack_and_connect_timeout() -> None:
    peer = Peer(mme_node(), Role.INITIATOR, 0.0)
    peer.start(0.0)
    events = peer.connection_failed(1.0)
    assert peer.state is PeerState.CLOSED and isinstance(events[-1], PeerDown)
    peer = Peer(mme_node(cea_timeout=10.0), Role.INITIATOR, 0.0)
    peer.start(0.0)
    assert peer.next_deadline() == 10.0
    peer.handle_timeout(10.0)
    assert peer.should_close


def test_cea_timeout_closes_initiator() -> None:
    peer = Peer(mme_node(cea_timeout=10.0), Role.INITIATOR, 0.0)
    peer.start(0.0)
    peer.connection_made(0.0)
    events = peer.handle_timeout(10.0)
    assert peer.should_close and events[-1] == PeerDown("no CEA in time")


def test_cea_with_failure_closes_initiator() -> None:
    peer = Peer(mme_node([Application(16777251, {})]), Role.INITIATOR, 0.0)
    peer.start(0.0)
    peer.connection_made(0.0)
    server_peer = responder()
    server_peer.receive_data(peer.data_to_send(), 0.0)
    events = peer.receive_data(server_peer.data_to_send(), 0.0)
    assert peer.should_close and events[-1] == PeerDown("CEA Result-Code 5010")


def test_non_cea_first_closes_initiator() -> None:
    peer = Peer(mme_node(), Role.INITIATOR, 0.0)
    peer.start(0.0)
    peer.connection_made(0.0)
    peer.data_to_send()
    dwr = Message(280, 0, FLAG_REQUEST, 1, 1, [Avp.new("Origin-Host", EIR_HOST), Avp.new("Origin-Realm", "x")])
    events = peer.receive_data(dwr.encode(), 0.0)
    assert peer.should_close and isinstance(events[-1], PeerDown)


def test_request_and_answer_between_two_cores() -> None:
    i, r = connected_pair()
    hop_by_hop = i.send_request(ecr_message(end_to_end=0), 1.0)
    events_i, events_r = pump(i, r, 1.0)
    (request,) = events_r
    assert isinstance(request, RequestReceived)
    serve(r, request, 1.0)
    events_i, _ = pump(i, r, 1.0)
    (answer,) = events_i
    assert isinstance(answer, AnswerReceived) and answer.hop_by_hop == hop_by_hop
    assert answer.message.get("Result-Code") == 2001


def test_raw_request_gets_new_hop_by_hop() -> None:
    i, r = connected_pair()
    raw = ecr_message(hop_by_hop=0xFFFF).encode()
    hop_by_hop = i.send_raw_request(raw, 1.0)
    _, events_r = pump(i, r, 1.0)
    (request,) = events_r
    assert isinstance(request, RequestReceived)
    assert request.message.hop_by_hop == hop_by_hop != 0xFFFF
    assert request.raw[16:] == raw[16:]


def test_watchdog_exchange_between_two_cores() -> None:
    client = mme_node(watchdog_interval=30.0, watchdog_jitter=0.0)
    server = eir_node(watchdog_interval=60.0, watchdog_jitter=0.0)
    i, r = connected_pair(server, client)
    i.handle_timeout(30.0)  # client's Tw: DWR
    events_i, events_r = pump(i, r, 30.0)
    assert events_i == [] and events_r == []
    assert not i.watchdog.pending and i.next_deadline() == 60.0
    # The server saw traffic at 30 s: its Tw moved to 90 s.
    assert r.next_deadline() == 90.0
    assert client.observer.messages[-1] == ("in", "DWA", None)  # type: ignore[attr-defined]


def test_watchdog_closes_when_peer_silent() -> None:
    client = mme_node(watchdog_interval=6.0, watchdog_jitter=0.0)
    i, _r = connected_pair(eir_node(), client)
    i.handle_timeout(6.0)
    i.data_to_send()  # the DWR is lost
    i.handle_timeout(12.0)
    assert not i.should_close
    events = i.handle_timeout(18.0)
    assert i.should_close and isinstance(events[-1], PeerDown)


def test_initiator_stop_dpr_dpa_both_close() -> None:
    i, r = connected_pair()
    i.stop(2, 5.0)
    events_i, events_r = pump(i, r, 5.0)
    assert i.should_close and events_i[-1] == PeerDown("stopped: DPA received")
    assert r.state is PeerState.CLOSING and r.disconnect_cause == 2
    events_r = r.connection_lost(5.1)
    assert r.state is PeerState.CLOSED and isinstance(events_r[-1], PeerDown)


def test_responder_stop_initiator_answers_dpa() -> None:
    i, r = connected_pair()
    r.stop(0, 5.0)
    _events_i, _events_r = pump(i, r, 5.0)
    assert r.should_close
    assert i.state is PeerState.CLOSING


def test_initiator_answers_server_dwr() -> None:
    server = eir_node(watchdog_interval=30.0, watchdog_jitter=0.0)
    i, r = connected_pair(server)
    r.handle_timeout(30.0)
    pump(i, r, 30.0)
    assert not r.watchdog.pending


def test_request_from_server_to_initiator_without_handler_3001() -> None:
    # The simulator registers S13 without handlers: the command is not supported there.
    i, r = connected_pair()
    hop_by_hop = r.send_request(ecr_message(), 1.0)
    _events_i, events_r = pump(i, r, 1.0)
    (answer,) = events_r
    assert isinstance(answer, AnswerReceived) and answer.hop_by_hop == hop_by_hop
    assert answer.message.get("Result-Code") == 3001


# ---------------------------------------------------------------------------------------------
# Election (RFC 6733 §5.6.4): a node that both initiates and accepts towards one peer


def _won_setup() -> tuple[Node, Peer, Peer, list[object]]:
    """Our node ("zzz..." > "mme...") has an initiator connection to MME_HOST in Wait-I-CEA when
    the peer connects to us and sends its CER on a second (responder) connection."""
    from dataclasses import replace

    node = eir_node()
    node.identity = replace(node.identity, origin_host="zzz.example.net")
    outgoing = Peer(node, Role.INITIATOR, 0.0, peer_host=MME_HOST)
    outgoing.start(0.0)
    outgoing.connection_made(0.0)
    outgoing.data_to_send()
    incoming = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
    events: list[object] = list(incoming.receive_data(cer(), 0.1))
    return node, outgoing, incoming, events


def test_election_won_keeps_the_incoming_connection() -> None:
    node, outgoing, incoming, events = _won_setup()
    # Wait-I-CEA + R-Conn-CER -> Elect -> Win-Election -> I-Disc, R-Snd-CEA -> R-Open
    assert outgoing.should_close
    assert isinstance(outgoing.next_events()[-1], PeerDown)
    assert incoming.state is PeerState.R_OPEN
    (cea,) = answers(incoming)
    assert cea.get("Result-Code") == 2001 and cea.get("Origin-Host") == "zzz.example.net"
    assert node.peers[MME_HOST] is incoming
    assert isinstance(events[-1], PeerUp)


def _cea_for(hop_by_hop: int) -> bytes:
    return Message(257, 0, 0, hop_by_hop, 1, [
        Avp.new("Result-Code", 2001), Avp.new("Origin-Host", MME_HOST), Avp.new("Origin-Realm", "example.net"),
        Avp.new("Host-IP-Address", "127.0.0.1"), Avp.new("Vendor-Id", 0), Avp.new("Product-Name", "mme"),
        Avp.new("Auth-Application-Id", S13),
    ]).encode()


def _lost_setup() -> tuple[Node, Peer, Peer, int]:
    from dataclasses import replace

    node = eir_node()
    node.identity = replace(node.identity, origin_host="aaa.example.net")
    outgoing = Peer(node, Role.INITIATOR, 0.0, peer_host=MME_HOST)
    outgoing.start(0.0)
    outgoing.connection_made(0.0)
    hop_by_hop = decode_message(outgoing.data_to_send()).hop_by_hop
    incoming = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
    incoming.receive_data(cer(), 0.1)
    return node, outgoing, incoming, hop_by_hop


def test_election_lost_waits_then_keeps_our_connection_on_cea() -> None:
    node, outgoing, incoming, hop_by_hop = _lost_setup()
    assert outgoing.state is PeerState.WAIT_RETURNS
    assert incoming.data_to_send() == b"" and not incoming.should_close
    events = outgoing.receive_data(_cea_for(hop_by_hop), 0.2)
    # Wait-Returns + I-Rcv-CEA -> R-Disc -> I-Open
    assert outgoing.state is PeerState.I_OPEN and isinstance(events[-1], PeerUp)
    assert incoming.should_close
    assert node.peers[MME_HOST] is outgoing


def test_election_lost_then_our_connection_drops_incoming_answered() -> None:
    node, outgoing, incoming, _ = _lost_setup()
    outgoing.connection_lost(0.3)
    # Wait-Returns + I-Peer-Disc -> I-Disc, R-Snd-CEA -> R-Open
    assert incoming.state is PeerState.R_OPEN
    assert answers(incoming)[0].get("Result-Code") == 2001
    assert node.peers[MME_HOST] is incoming


def test_election_incoming_drops_while_waiting() -> None:
    _node, outgoing, incoming, hop_by_hop = _lost_setup()
    incoming.connection_lost(0.3)
    # Wait-Returns + R-Peer-Disc -> R-Disc -> Wait-I-CEA
    assert outgoing.state is PeerState.WAIT_I_CEA
    outgoing.receive_data(_cea_for(hop_by_hop), 0.4)
    assert outgoing.state is PeerState.I_OPEN


def test_cer_while_connecting_elects_on_connection_ack() -> None:
    from dataclasses import replace

    node = eir_node()
    node.identity = replace(node.identity, origin_host="zzz.example.net")
    outgoing = Peer(node, Role.INITIATOR, 0.0, peer_host=MME_HOST)
    outgoing.start(0.0)
    incoming = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
    incoming.receive_data(cer(), 0.1)
    assert outgoing.state is PeerState.WAIT_CONN_ACK_ELECT
    outgoing.connection_made(0.2)
    # I-Snd-CER, Elect -> Wait-Returns, we win -> I-Disc, R-Snd-CEA -> R-Open
    assert outgoing.should_close and incoming.state is PeerState.R_OPEN


def test_cer_while_connecting_then_connection_fails() -> None:
    node = eir_node()
    outgoing = Peer(node, Role.INITIATOR, 0.0, peer_host=MME_HOST)
    outgoing.start(0.0)
    incoming = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
    incoming.receive_data(cer(), 0.1)
    outgoing.connection_failed(0.2)
    assert incoming.state is PeerState.R_OPEN
    assert answers(incoming)[0].get("Result-Code") == 2001


def test_open_initiator_rejects_second_connection() -> None:
    client = mme_node()
    i, _r = connected_pair(eir_node(), client)
    extra = Peer(client, Role.RESPONDER, 0.0, remote_address=REMOTE)
    extra.receive_data(cer(EIR_HOST), 0.0)
    assert extra.should_close and i.is_open  # I-Open + R-Conn-CER -> R-Reject


def test_stop_during_election_closes_both_connections() -> None:
    _node, outgoing, incoming, _ = _lost_setup()
    outgoing.stop(0, 0.5)
    assert outgoing.should_close and incoming.should_close


def test_garbage_on_initiator_during_election_closes_both() -> None:
    _node, outgoing, incoming, _ = _lost_setup()
    outgoing.receive_data(b"\x07" * 40, 0.5)
    assert outgoing.should_close and incoming.should_close


# ---------------------------------------------------------------------------------------------
# The remaining rows, one scenario each


def test_closed_peer_disc_before_cer() -> None:
    peer = responder()
    events = peer.connection_lost(1.0)  # local: Closed + R-Peer-Disc -> Cleanup
    assert peer.state is PeerState.CLOSED and events == [PeerDown("peer disconnected")]


def test_wait_conn_ack_stop() -> None:
    peer = Peer(mme_node(), Role.INITIATOR, 0.0)
    peer.start(0.0)
    peer.stop(0, 0.1)
    assert peer.should_close and peer.data_to_send() == b""


def test_wait_i_cea_peer_disc_and_stop() -> None:
    for action in ("lost", "stop"):
        peer = Peer(mme_node(), Role.INITIATOR, 0.0)
        peer.start(0.0)
        peer.connection_made(0.0)
        peer.data_to_send()
        events = peer.connection_lost(1.0) if action == "lost" else peer.stop(0, 1.0)
        assert peer.state is PeerState.CLOSED and isinstance(events[-1], PeerDown)
        assert peer.data_to_send() == b""  # no DPR before I-Open


def _electing() -> tuple[Node, Peer, Peer]:
    """Our initiator connection is still connecting when the peer's CER arrives."""
    node = eir_node()
    outgoing = Peer(node, Role.INITIATOR, 0.0, peer_host=MME_HOST)
    outgoing.start(0.0)
    incoming = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
    incoming.receive_data(cer(), 0.1)
    assert outgoing.state is PeerState.WAIT_CONN_ACK_ELECT
    return node, outgoing, incoming


def test_wait_conn_ack_elect_responder_drops() -> None:
    _, outgoing, incoming = _electing()
    incoming.connection_lost(0.2)
    assert outgoing.state is PeerState.WAIT_CONN_ACK and not outgoing.should_close


def test_wait_conn_ack_elect_third_connection_rejected() -> None:
    node, outgoing, incoming = _electing()
    third = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
    third.receive_data(cer(), 0.2)
    assert third.should_close and not incoming.should_close
    assert outgoing.state is PeerState.WAIT_CONN_ACK_ELECT


def test_wait_conn_ack_elect_timeout_closes_both() -> None:
    _, outgoing, incoming = _electing()
    outgoing.handle_timeout(100.0)
    assert outgoing.should_close and incoming.should_close


def test_wait_returns_failed_cea_keeps_the_incoming_connection() -> None:
    _, outgoing, incoming, hop_by_hop = _lost_setup()
    failed = Message(257, 0, 0, hop_by_hop, 1, [
        Avp.new("Result-Code", 5010), Avp.new("Origin-Host", MME_HOST), Avp.new("Origin-Realm", "example.net"),
    ])
    outgoing.receive_data(failed.encode(), 0.2)
    assert outgoing.should_close
    assert incoming.state is PeerState.R_OPEN
    assert answers(incoming)[0].get("Result-Code") == 2001


def test_wait_returns_third_connection_rejected_and_timeout() -> None:
    node, outgoing, incoming, _ = _lost_setup()
    third = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
    third.receive_data(cer(), 0.2)
    assert third.should_close and outgoing.state is PeerState.WAIT_RETURNS
    outgoing.handle_timeout(100.0)
    assert outgoing.should_close and incoming.should_close


def test_i_open_peer_disc() -> None:
    i, _r = connected_pair()
    events = i.connection_lost(1.0)
    assert i.state is PeerState.CLOSED and events == [PeerDown("peer disconnected")]


def test_i_open_rcv_cer_answered_with_cea() -> None:
    i, _r = connected_pair()
    assert i.receive_data(cer(EIR_HOST, hop_by_hop=55), 1.0) == []
    (cea,) = answers(i)
    assert cea.command_code == 257 and cea.hop_by_hop == 55 and cea.get("Result-Code") == 2001
    assert i.is_open


def test_unsolicited_cea_in_open_states_changes_nothing() -> None:
    # R-Open/I-Open + Rcv-CEA -> Process-CEA -> stay open; a CEA we did not ask for is already
    # discarded by its unknown Hop-by-Hop (§3), with the same outcome.
    i, r = connected_pair()
    for peer in (i, r):
        assert peer.receive_data(_cea_for(999), 1.0) == []
        assert peer.is_open and peer.data_to_send() == b""


def test_closing_discards_requests_but_processes_answers_and_dwr() -> None:
    i, r = connected_pair()
    hop_by_hop = i.send_request(ecr_message(end_to_end=1), 1.0)
    pump(i, r, 1.0)  # the request is at the responder, not answered yet
    (request,) = r.receive_data(ecr_message(end_to_end=2, hop_by_hop=7).encode(), 1.0)
    i.stop(0, 2.0)
    r.stop(0, 2.0)
    dprs = i.data_to_send(), r.data_to_send()
    assert i.state is r.state is PeerState.CLOSING
    # Closing + R-Rcv-Message, a request: not processed, not answered (no Process in Closing)
    assert r.receive_data(ecr_message(end_to_end=3, hop_by_hop=8).encode(), 2.1) == []
    assert r.data_to_send() == b"" and r.in_flight == 2  # the two received before the DPR
    # ... while the request received before the DPR is still answered
    serve(r, request, 2.15)
    assert [a.hop_by_hop for a in answers(r)] == [7]
    # Closing + R/I-Rcv-DWR -> DWA
    for peer in (i, r):
        peer.receive_data(Message(280, 0, FLAG_REQUEST, 9, 9, [
            Avp.new("Origin-Host", "x.example.net"), Avp.new("Origin-Realm", "example.net"),
        ]).encode(), 2.2)
        assert answers(peer)[0].get("Result-Code") == 2001
    # Closing + I-Rcv-Message -> Process: the answer to the earlier request still arrives
    answer = Message(324, S13, 0x40, hop_by_hop, 1, [Avp.new("Result-Code", 2001)])
    (got,) = i.receive_data(answer.encode(), 2.3)
    assert isinstance(got, AnswerReceived) and got.hop_by_hop == hop_by_hop
    assert all(d for d in dprs) and isinstance(request, RequestReceived)
