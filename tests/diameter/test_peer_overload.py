"""The peer core under overload and abuse (sans-IO, fake clock): requests refused with 3004
before decoding, base messages never refused, DOIC AVPs on answers to DOIC requests only, and
a peer sending malformed requests past the limit disconnected with DPR."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from diameter.codec import Avp, Message
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.dictionary.rfc7683_doic import OLR_DEFAULT_ALGO
from diameter.events import PeerDown, RequestReceived
from diameter.overload import OverloadControl, OverloadSettings
from diameter.peer import PeerState
from diameter.reads import DEFERRED, ReadServer
from tests.diameter.test_peer_helpers import (
    MME_HOST,
    REALM,
    Recorder,
    answers,
    base_request,
    cer,
    ecr,
    ecr_message,
    eir_node,
    open_responder,
    serve,
)

DWR, DPR = 280, 282


def overloaded_node(reduction: int, **settings: object):  # type: ignore[no-untyped-def]
    node = eir_node(**settings)
    node.overload = OverloadControl(OverloadSettings(target_delay=0.1), node.identity, 1)
    node.overload.reduction = reduction
    return node


def doic_ecr(hop_by_hop: int) -> bytes:
    message = ecr_message(hop_by_hop=hop_by_hop, end_to_end=hop_by_hop)
    message.avps.append(
        Avp.new("OC-Supported-Features", [Avp.new("OC-Feature-Vector", OLR_DEFAULT_ALGO)])
    )
    return message.encode()


def test_overloaded_node_refuses_requests_in_proportion_without_handing_them_over() -> None:
    peer = open_responder(overloaded_node(50))
    events = []
    for i in range(10):
        events += peer.receive_data(ecr(hop_by_hop=i, end_to_end=i), 1.0)
    assert len(events) == 5  # the loss algorithm: every other request
    refused = answers(peer)
    assert len(refused) == 5
    assert {a.get("Result-Code") for a in refused} == {3004}
    assert all(a.is_error for a in refused)
    assert peer.node.overload.refused == 5


@given(reduction=st.integers(0, 100), n=st.integers(1, 300), per_read=st.integers(1, 40))
def test_the_loss_algorithm_refuses_the_share_evenly_whatever_the_reads(
    reduction: int, n: int, per_read: int
) -> None:
    peer = open_responder(overloaded_node(reduction))
    requests = [ecr(hop_by_hop=i, end_to_end=i) for i in range(n)]
    handed_over = 0
    for i in range(0, n, per_read):
        handed_over += len(peer.receive_data(b"".join(requests[i : i + per_read]), 1.0))
    refused = answers(peer)
    # A credit counter per connection: never more than one request off the exact share.
    assert abs(len(refused) - n * reduction / 100) <= 1
    assert handed_over + len(refused) == n
    assert all(a.get("Result-Code") == 3004 and a.is_error for a in refused)
    assert peer.node.overload.refused == len(refused)
    # Each refused request got its own answer: identifiers copied, none twice.
    assert len({a.hop_by_hop for a in refused}) == len(refused)


def test_refusals_are_counted_like_any_answer() -> None:
    recorder = Recorder()
    node = overloaded_node(100)
    node.observer = recorder
    peer = open_responder(node)
    recorder.messages.clear()
    peer.receive_data(b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(7)), 1.0)
    assert len(answers(peer)) == 7
    assert sorted(set(recorder.messages)) == [("in", "ECR", None), ("out", "ECA", 3004)]
    assert len(recorder.messages) == 14


def test_each_peer_is_refused_its_own_share() -> None:
    node = overloaded_node(50)
    flood = open_responder(node, origin_host="flood.test")
    modest = open_responder(node, origin_host="modest.test")
    node.overload.apportion({flood: 90_000, modest: 10_000})
    for i in range(20):
        assert modest.receive_data(ecr(hop_by_hop=i, end_to_end=i), 1.0)  # handed over
    assert answers(modest) == []
    flood.receive_data(b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(100)), 1.0)
    assert len(answers(flood)) == 56
    # A connection the last apportioning did not know gets the node's reduction.
    newcomer = open_responder(node, origin_host="new.test")
    newcomer.receive_data(b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(10)), 1.0)
    assert len(answers(newcomer)) == 5


def test_a_watchdog_request_in_a_refused_read_is_answered_and_a_dpr_ends_refusals() -> None:
    peer = open_responder(overloaded_node(100))
    data = b"".join(
        [
            ecr(hop_by_hop=1, end_to_end=1),
            base_request(DWR, hop_by_hop=2),
            ecr(hop_by_hop=3, end_to_end=3),
            base_request(DPR, hop_by_hop=4, extra=[Avp.new("Disconnect-Cause", 0)]),
            ecr(hop_by_hop=5, end_to_end=5),
        ]
    )
    assert peer.receive_data(data, 1.0) == []
    out = {a.hop_by_hop: a for a in answers(peer)}
    assert out[1].get("Result-Code") == 3004 and out[3].get("Result-Code") == 3004
    assert out[2].command_code == DWR and out[2].get("Result-Code") == 2001
    assert out[4].command_code == DPR and out[4].get("Result-Code") == 2001
    assert 5 not in out  # after the DPA: Closing, dropped (RFC 6733 §5.6), not refused
    assert peer.state is PeerState.CLOSING


def test_base_messages_are_never_refused() -> None:
    peer = open_responder(overloaded_node(100))
    peer.receive_data(base_request(DWR), 1.0)
    (dwa,) = answers(peer)
    assert dwa.command_code == DWR and dwa.get("Result-Code") == 2001
    peer.receive_data(base_request(DPR, extra=[Avp.new("Disconnect-Cause", 0)]), 1.0)
    (dpa,) = answers(peer)
    assert dpa.command_code == DPR and dpa.get("Result-Code") == 2001


def test_answers_to_doic_requests_carry_doic_avps_and_others_none() -> None:
    node = overloaded_node(0)
    peer = open_responder(node)
    node.overload.update(0.5, 1.0)  # overloaded now; requests below are admitted by the credit
    node.overload.reduction = 1
    (plain,) = peer.receive_data(ecr(hop_by_hop=1, end_to_end=1), 1.0)
    serve(peer, plain, 1.0)
    (answer,) = answers(peer)
    assert answer.get("Result-Code") == 2001
    assert answer.find(621) is None and answer.find(623) is None
    (doic,) = peer.receive_data(doic_ecr(2), 1.0)
    assert isinstance(doic, RequestReceived)
    serve(peer, doic, 1.0)
    (answer,) = answers(peer)
    assert answer.problem is None and answer.get("Result-Code") == 2001
    assert answer.find(621) is not None
    olr = answer.find(623)
    assert olr is not None and olr.find(627).value == 1  # type: ignore[union-attr]


def with_features(message: Message) -> bytes:
    message.avps.append(
        Avp.new("OC-Supported-Features", [Avp.new("OC-Feature-Vector", OLR_DEFAULT_ALGO)])
    )
    return message.encode()


def test_error_answers_to_doic_requests_carry_doic_avps_and_others_none() -> None:
    # RFC 7683 §5.1.2: OC-Supported-Features in the answer of the transaction, whatever the
    # answer: a 5005 of the Diameter layer, a 3004 of the in-flight bound (none without it).
    node = overloaded_node(0, max_in_flight_per_peer=1)
    node.overload.update(0.5, 1.0)
    node.overload.update(0.5, 1.0)  # a report in force
    peer = open_responder(node)
    node.overload.shares = {peer: 0}  # within its fair share: nothing refused by the loss algorithm
    peer.receive_data(with_features(ecr_message(hop_by_hop=1, end_to_end=1, destination_realm=None)), 1.0)
    peer.receive_data(ecr(hop_by_hop=2, end_to_end=2, destination_realm=None), 1.0)
    (held,) = peer.receive_data(ecr(hop_by_hop=3, end_to_end=3), 1.0)  # in flight, unanswered
    assert isinstance(held, RequestReceived)
    peer.receive_data(with_features(ecr_message(hop_by_hop=4, end_to_end=4)), 1.0)
    peer.receive_data(ecr(hop_by_hop=5, end_to_end=5), 1.0)
    error, plain_error, busy, plain_busy = answers(peer)
    assert [a.get("Result-Code") for a in (error, plain_error, busy, plain_busy)] == [
        5005, 5005, 3004, 3004
    ]
    for answer in (error, busy):
        assert answer.problem is None and answer.find(621) is not None
        assert answer.find(623) is not None and answer.find(621).flags == 0  # type: ignore[union-attr]
    for answer in (plain_error, plain_busy):
        assert answer.find(621) is None and answer.find(623) is None


def test_doic_avps_only_for_the_peers_trusted_for_doic() -> None:
    # RFC 7683 §10.4: an operator chooses the peers that receive overload reports; another's
    # OC-Supported-Features is taken as stripped: no DOIC AVP in its MICAs or 3004s.
    node = eir_node()
    settings = OverloadSettings(target_delay=0.1, doic_peers=("DRA*.example.net",))
    node.overload = OverloadControl(settings, node.identity, 1)
    node.overload.update(0.5, 1.0)
    node.overload.update(0.5, 1.0)  # 50 % refused
    untrusted = open_responder(node)
    trusted = open_responder(node, origin_host="dra1.example.net")
    out: dict[str, list[Message]] = {}
    for name, peer, first in (("untrusted", untrusted, 10), ("trusted", trusted, 20)):
        node.overload.shares = {peer: 0}
        (event,) = peer.receive_data(doic_ecr(first), 1.0)
        serve(peer, event, 1.0)
        node.overload.shares = {}
        events = peer.receive_data(doic_ecr(first + 1) + doic_ecr(first + 2), 1.0)
        for event in events:
            serve(peer, event, 1.0)
        out[name] = answers(peer)
    for name, expected in (("untrusted", False), ("trusted", True)):
        codes = sorted(a.get("Result-Code") for a in out[name])
        assert codes == [2001, 2001, 3004]
        for answer in out[name]:
            assert (answer.find(621) is not None) is expected
            assert (answer.find(623) is not None) is expected


def malformed(i: int) -> bytes:
    # Destination-Realm missing: 5005, answered by the Diameter layer.
    return ecr(hop_by_hop=i, end_to_end=i, destination_realm=None)


def test_malformed_requests_past_the_limit_end_in_dpr_then_close() -> None:
    peer = open_responder(eir_node(malformed_limit=3, malformed_window=10.0))
    for i in range(3):
        peer.receive_data(malformed(i), 1.0)
    assert [a.get("Result-Code") for a in answers(peer)] == [5005] * 3
    assert peer.state is PeerState.R_OPEN  # within the limit: errors only
    peer.receive_data(malformed(3), 1.1)
    out = answers(peer)
    assert out[0].get("Result-Code") == 5005  # its error first, then the DPR
    assert out[1].command_code == DPR and out[1].is_request
    assert out[1].get("Disconnect-Cause") == DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU
    assert peer.state is PeerState.CLOSING
    assert peer.node.malformed_disconnects == 1
    # What it sends while Closing is discarded (RFC 6733 §5.6 has no processing there).
    assert peer.receive_data(ecr(hop_by_hop=9, end_to_end=9), 1.2) == []
    assert peer.data_to_send() == b""
    # Its DPA ends the connection.
    dpr = out[1]
    dpa = Message(DPR, 0, 0, dpr.hop_by_hop, dpr.end_to_end)
    dpa.add("Result-Code", 2001).add("Origin-Host", MME_HOST).add("Origin-Realm", REALM)
    events = peer.receive_data(dpa.encode(), 1.3)
    assert any(isinstance(e, PeerDown) for e in events)
    assert peer.should_close


def test_malformed_base_requests_count_toward_the_limit() -> None:
    # A DWR, DPR or CER of an open connection refused by its checks is a malformed request
    # like any: a peer sending nothing else was never disconnected.
    peer = open_responder(eir_node(malformed_limit=3, malformed_window=10.0))
    dwr = base_request(DWR, 1)
    bad_dwr = Message(DWR, 0, 0x80, 2, 2, [Avp.new("Origin-Realm", REALM)]).encode()  # 5005
    bad_dpr = base_request(DPR, 3)  # no Disconnect-Cause: 5005
    bad_cer = cer(MME_HOST, hop_by_hop=4, drop=("Origin-Realm",))  # 5005
    for raw in (dwr, bad_dwr, bad_dpr, bad_cer):
        peer.receive_data(raw, 1.0)
    assert [a.get("Result-Code") for a in answers(peer)] == [2001, 5005, 5005, 5005]
    assert peer.state is PeerState.R_OPEN  # within the limit: errors only
    peer.receive_data(Message(DWR, 0, 0x80, 5, 5, [Avp.new("Origin-Realm", REALM)]).encode(), 1.1)
    error, dpr = answers(peer)
    assert error.get("Result-Code") == 5005
    assert dpr.command_code == DPR and dpr.is_request
    assert dpr.get("Disconnect-Cause") == DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU
    assert peer.state is PeerState.CLOSING and peer.node.malformed_disconnects == 1


def test_malformed_requests_spread_over_windows_are_tolerated() -> None:
    peer = open_responder(eir_node(malformed_limit=3, malformed_window=10.0))
    for i in range(12):
        peer.receive_data(malformed(i), 1.0 + 4.0 * i)  # at most 3 per 10 s
    assert peer.state is PeerState.R_OPEN
    assert len(answers(peer)) == 12


def test_malformed_limit_zero_is_off() -> None:
    peer = open_responder(eir_node(malformed_limit=0))
    for i in range(500):
        peer.receive_data(malformed(i), 1.0)
    assert peer.state is PeerState.R_OPEN
    assert [a.get("Result-Code") for a in answers(peer)] == [5005] * 500


def test_messages_that_make_no_event_count_against_the_read_budget() -> None:
    # In Closing (our DPR sent) the requests a peer keeps sending are discarded: no event each.
    # receive_each yielded events only, so ReadServer's budget never applied to them: a
    # flooding peer's whole read was served at once (libuv reads up to 32 x 64 kB per
    # callback), holding the loop; under load a stop's DPR deadline ran seconds late.
    peer = open_responder(eir_node())
    peer.stop(DisconnectCause.REBOOTING, 1.0)
    assert peer.state is PeerState.CLOSING
    peer.data_to_send()
    reads = ReadServer(peer, 64, lambda data: None, lambda event: None, lambda r, a: None)
    flood = b"".join(ecr(hop_by_hop=i, end_to_end=i) for i in range(1000))
    each = peer.receive_each(flood, 1.0)
    assert reads.serve(each, 1.0) == DEFERRED
    assert peer.processed_bytes == 64 * len(ecr(hop_by_hop=1, end_to_end=1))
    while reads.serve(each, 1.0) == DEFERRED:
        pass
    assert peer.processed_bytes == len(flood) and peer.data_to_send() == b""
