"""The lane (diameter.lane) takes only requests the full path finds well formed, and hands over
the fields ``Message.find`` / ``Avp.find`` would find: a differential property over mutations
of learnt shapes, and the peer's bookkeeping (duplicates, in-flight bound, routing, settings)."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from diameter.application import Application, Lane, PeerInfo
from diameter.codec import Avp, Message, decode_message
from diameter.events import LaneRequest, RequestReceived
from diameter.lane import LEARN_AFTER, MAX_PLANS, Lanes, answer
from diameter.node import Node
from diameter.peer import Peer, Role
from diameter.routing import first_problem
from diameter.settings import LocalIdentity, PeerSettings
from tests.diameter.builders import micr

S13, TGPP, ECR = 16777252, 10415, 324
TI, IMEI, SV = (1401, TGPP), (1402, TGPP), (1403, TGPP)
FIELDS = ((TI, IMEI), (TI, SV), ((1, 0),))
IDENTITY = LocalIdentity(origin_host="eir.test", origin_realm="test")
SETTINGS = PeerSettings(identity=IDENTITY)


def _handler(request: object, peer: object) -> bytes:
    return b""


LANE = Lane(_handler, FIELDS)
APP = Application(S13, {ECR: _handler}, vendor_id=TGPP, lanes={ECR: LANE})


def learnt(*bases: bytes) -> Lanes:
    lanes = Lanes()
    for base in bases:
        for _ in range(LEARN_AFTER):
            lanes.learn(decode_message(base), APP, LANE, SETTINGS, IDENTITY)
    return lanes


def found_fields(message: Message) -> list[bytes | None]:
    out: list[bytes | None] = []
    for path in FIELDS:
        avp = message.find(*path[0])
        for key in path[1:]:
            avp = None if avp is None else avp.find(*key)
        out.append(None if avp is None else avp.data)
    return out


BASES = (micr(), micr(user_name=None), micr(sv=None, destination_host="eir.test"))
NODE = Node(SETTINGS, [APP])


@settings(max_examples=800, deadline=None)
@given(
    base=st.sampled_from(BASES),
    # From the header's flags on: version and length are the framer's (diameter.framing).
    edits=st.lists(st.tuples(st.integers(4, 300), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_the_lane_takes_only_what_the_full_path_accepts(
    base: bytes, edits: list[tuple[int, int]]
) -> None:
    lanes = learnt(*BASES)
    wire = bytearray(base)
    for offset, value in edits:
        if offset < len(wire):
            wire[offset] = value
    raw = bytes(wire)
    found = lanes.match(raw, SETTINGS, IDENTITY)
    if found is None:
        return
    plan, fields = found
    message = decode_message(raw)
    # The full path's checks, as the peer runs them for this open connection.
    problem, app, _ = first_problem(message, NODE, frozenset({S13}), [])
    assert problem is None and app is APP, problem
    assert plan.application_id == message.application_id == S13
    assert fields[3:] == found_fields(message)
    origin = message.find(264)
    assert fields[0] == (None if origin is None else origin.data)


def test_every_learnt_base_takes_the_lane_and_other_shapes_do_not() -> None:
    lanes = learnt(*BASES)
    assert len(lanes.plans) == len(BASES)
    for base in BASES:
        assert lanes.match(base, SETTINGS, IDENTITY) is not None
    # A shape never learnt, Proxy-Info (echoed: never learnt), a T flag: the full path.
    other = micr(extra=(Avp.new("Route-Record", "relay.test"),))
    assert lanes.match(other, SETTINGS, IDENTITY) is None
    proxied = micr(extra=(Avp.new("Proxy-Info", [Avp.new("Proxy-Host", "p.test"),
                                                  Avp.new("Proxy-State", b"s")]),))
    assert learnt(proxied).plans == []
    # OC-Supported-Features (RFC 7683 §5.1.2: DOIC AVPs in the answer) is never learnt either:
    # Peer.send_answer does not look for one in a lane request.
    doic = micr(extra=(Avp.new("OC-Supported-Features", [Avp.new("OC-Feature-Vector", 1)]),))
    assert learnt(doic).plans == []
    assert learnt(micr(flags=0xD0)).plans == []
    assert lanes.match(micr(flags=0xD0), SETTINGS, IDENTITY) is None


def test_a_shape_is_learnt_at_its_fourth_sight_and_plans_are_bounded() -> None:
    lanes = Lanes()
    for _ in range(LEARN_AFTER - 1):
        lanes.learn(decode_message(micr()), APP, LANE, SETTINGS, IDENTITY)
    assert lanes.plans == []
    lanes.learn(decode_message(micr()), APP, LANE, SETTINGS, IDENTITY)
    assert len(lanes.plans) == 1
    for n in range(MAX_PLANS + 4):
        extra = tuple(Avp.new("Route-Record", f"r{i}.test") for i in range(n + 1))
        for _ in range(LEARN_AFTER):
            lanes.learn(decode_message(micr(extra=extra)), APP, LANE, SETTINGS, IDENTITY)
    assert len(lanes.plans) == MAX_PLANS


def test_shapes_of_a_hostile_peer_do_not_hold_the_plans_for_good() -> None:
    # A peer sends MAX_PLANS well-formed shapes of its own, four times each: the plans are
    # full. The MMEs' shape must still be learnt (it was not: on the full path for good,
    # after failed walks of every plan), and keep its plan while more shapes come and go.
    def hostile(n: int) -> Message:
        return decode_message(micr(extra=tuple(Avp.new("Route-Record", f"r{i}.test") for i in range(n + 1))))

    lanes = Lanes()
    for n in range(MAX_PLANS):
        for _ in range(LEARN_AFTER):
            lanes.learn(hostile(n), APP, LANE, SETTINGS, IDENTITY)
    assert len(lanes.plans) == MAX_PLANS
    real = micr(user_name=None)
    assert lanes.match(real, SETTINGS, IDENTITY) is None
    for _ in range(LEARN_AFTER):
        lanes.learn(decode_message(real), APP, LANE, SETTINGS, IDENTITY)
    assert lanes.match(real, SETTINGS, IDENTITY) is not None
    assert len(lanes.plans) == MAX_PLANS and lanes.evicted == 1
    for n in range(MAX_PLANS, 3 * MAX_PLANS):
        for _ in range(LEARN_AFTER):
            lanes.learn(hostile(n), APP, LANE, SETTINGS, IDENTITY)
        assert lanes.match(real, SETTINGS, IDENTITY) is not None
    assert len(lanes.plans) == MAX_PLANS and lanes.evicted == 2 * MAX_PLANS + 1


def test_values_are_checked_as_the_full_path_checks_them() -> None:
    lanes = learnt(micr())
    assert lanes.match(micr(imei="\u00e9" * 7), SETTINGS, IDENTITY) is not None  # UTF-8 text
    bad_utf8 = micr(imei="35209900123456").replace(b"35209900123456", b"3520990012345\xff")
    assert lanes.match(bad_utf8, SETTINGS, IDENTITY) is None
    bad_state = micr().replace(b"\x00\x00\x01\x15\x40\x00\x00\x0c\x00\x00\x00\x01",
                               b"\x00\x00\x01\x15\x40\x00\x00\x0c\x00\x00\x00\x07")
    assert bad_state != micr() and lanes.match(bad_state, SETTINGS, IDENTITY) is None  # 5004
    space = micr().replace(b"mme.test", b"mme test")
    assert lanes.match(space, SETTINGS, IDENTITY) is None  # not a DiameterIdentity


def test_other_settings_forget_the_plans() -> None:
    lanes = learnt(micr())
    assert lanes.learnt == 1 and lanes.forgotten == 0
    assert lanes.match(micr(), replace(SETTINGS, max_avps=4), IDENTITY) is None
    assert lanes.plans == []
    assert lanes.forgotten == 1 and lanes.no_plan == 1 and lanes.taken == 0


def test_answer_splices_header_and_session_id() -> None:
    raw = micr(e2e=77)
    body = Avp.new("Result-Code", 2001).encode()
    request = decode_message(raw)
    expected = Message(ECR, S13, 0x40, 77, 77, [request.avps[0]]).encode() + body
    expected = (len(expected)).to_bytes(4, "big")[1:]
    spliced = answer(raw, body)
    assert spliced[1:4] == expected
    message = decode_message(spliced)
    assert message.flags == 0x40 and message.hop_by_hop == message.end_to_end == 77
    assert [a.encode() for a in message.avps] == [request.avps[0].encode(), body]


# -- the peer ------------------------------------------------------------------------------------
def _cer() -> bytes:
    m = Message(257, 0, 0x80, 1, 1)
    m.add("Origin-Host", "mme.test").add("Origin-Realm", "test")
    m.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 0).add("Product-Name", "x")
    m.add("Vendor-Specific-Application-Id",
          [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13)])
    return m.encode()


def open_peer(settings: PeerSettings = SETTINGS) -> Peer:
    def full(request: Message, peer: PeerInfo) -> bytes:
        return answer(request.encode(), Avp.new("Error-Message", "full").encode())

    def lane(request: LaneRequest, peer: PeerInfo) -> bytes:
        return answer(request.raw, Avp.new("Error-Message", "lane").encode())

    app = Application(S13, {ECR: full}, vendor_id=TGPP, lanes={ECR: Lane(lane, FIELDS)})
    node = Node(settings, [app], rng=random.Random(1))
    peer = Peer(node, Role.RESPONDER, 0.0, remote_address=("127.0.0.1", 1))
    peer.receive_data(_cer(), 0.0)
    peer.data_to_send()
    assert peer.is_open
    return peer


def kinds(peer: Peer, raw: bytes, now: float = 1.0) -> list[str]:
    out = []
    for event in peer.receive_data(raw, now):
        if isinstance(event, (RequestReceived, LaneRequest)):
            out.append(type(event).__name__)
            peer.send_answer(event, event.call(), now)  # type: ignore[arg-type]
    return out


def test_the_peer_takes_the_lane_once_learnt_and_keeps_its_bookkeeping() -> None:
    peer = open_peer()
    seen = [kinds(peer, micr(e2e=n)) for n in range(1, LEARN_AFTER + 3)]
    assert seen[:LEARN_AFTER] == [["RequestReceived"]] * LEARN_AFTER
    assert seen[LEARN_AFTER:] == [["LaneRequest"]] * 2
    assert peer.in_flight == 0 and peer.node.in_flight_total == 0
    peer.data_to_send()
    # RFC 6733 §5.5.4: a duplicate on the lane gets the first copy's answer, no new event.
    assert kinds(peer, micr(e2e=LEARN_AFTER + 1)) == []
    replay = decode_message(peer.data_to_send())
    assert replay.get("Error-Message") == "lane" and replay.end_to_end == LEARN_AFTER + 1
    # The fields handed over are those of the request.
    events = peer.receive_data(micr(e2e=900, imei="35209900999999", user_name="00101"), 1.0)
    (event,) = events
    assert isinstance(event, LaneRequest)
    assert event.fields == [b"35209900999999", b"01", b"00101"]
    assert event.key == ("mme.test", 900)


def test_the_peer_counts_how_each_application_request_was_read() -> None:
    # The counters behind diameter_lane_requests_total{outcome} (gateway.metrics.LaneCollector).
    peer = open_peer()
    lanes = peer.node.lanes
    for n in range(LEARN_AFTER):
        assert kinds(peer, micr(e2e=n + 1)) == ["RequestReceived"]
    assert (lanes.no_plan, lanes.taken, lanes.learnt) == (LEARN_AFTER, 0, 1)
    for n in range(2):
        assert kinds(peer, micr(e2e=10 + n)) == ["LaneRequest"]
    assert lanes.taken == 2
    # A duplicate read on the lane (answered from the cache) was taken by it too.
    kinds(peer, micr(e2e=10))
    assert lanes.taken == 3
    route = micr(e2e=20, extra=(Avp.new("Route-Record", "relay.test"),))
    assert kinds(peer, route) == ["RequestReceived"]
    assert lanes.unmatched == 1
    assert kinds(peer, micr(e2e=21, destination_realm="elsewhere.test")) == []  # 3003
    assert lanes.destination == 1
    # The application the plan was learnt for is no longer the node's: the full path.
    node = peer.node
    node.add_application(replace(node.applications[S13]))
    assert kinds(peer, micr(e2e=22)) == ["RequestReceived"]
    assert lanes.application == 1
    assert (lanes.no_plan, lanes.taken, lanes.unmatched) == (LEARN_AFTER, 3, 1)


def test_routing_failures_and_the_in_flight_bound_take_the_full_path() -> None:
    peer = open_peer(replace(SETTINGS, max_in_flight_per_peer=1))
    for n in range(LEARN_AFTER):
        kinds(peer, micr(e2e=100 + n, destination_host="eir.test"))
    assert kinds(peer, micr(e2e=200, destination_host="eir.test")) == ["LaneRequest"]
    peer.data_to_send()
    # Destination-Host not ours: 3002 from the full path (no event).
    assert kinds(peer, micr(e2e=201, destination_host="other.test")) == []
    answer_3002 = decode_message(peer.data_to_send())
    assert answer_3002.get("Result-Code") == 3002
    # The in-flight bound: one request waiting, the next answered 3004 at once.
    events = peer.receive_data(micr(e2e=300, destination_host="eir.test"), 1.0)
    assert [type(e) for e in events] == [LaneRequest]
    assert peer.receive_data(micr(e2e=301, destination_host="eir.test"), 1.0) == []
    busy = decode_message(peer.data_to_send())
    assert busy.get("Result-Code") == 3004 and busy.end_to_end == 301


def test_lane_request_decodes_its_message_on_demand() -> None:
    peer = open_peer()
    for n in range(LEARN_AFTER):
        kinds(peer, micr(e2e=n + 1))
    (event,) = peer.receive_data(micr(e2e=50), 1.0)
    assert isinstance(event, LaneRequest)
    assert event.message.end_to_end == 50
    assert event.message.find(263).value == "mme.test;1700000000;50"


def _answer_of(message: Message) -> bytes:
    """A handler's answer that shows what it was given: every AVP of the request echoed."""
    return Message(ECR, S13, 0x40, message.hop_by_hop, message.end_to_end,
                   [Avp.new("Result-Code", 2001), *message.avps]).encode()


def differential_peer(lanes: bool) -> Peer:
    def full(request: Message, peer: PeerInfo) -> bytes:
        return _answer_of(request)

    def lane(request: LaneRequest, peer: PeerInfo) -> bytes:
        return _answer_of(request.message)

    app = Application(S13, {ECR: full}, vendor_id=TGPP,
                      lanes={ECR: Lane(lane, FIELDS)} if lanes else {})
    peer = Peer(Node(SETTINGS, [app], rng=random.Random(1)), Role.RESPONDER, 0.0)
    peer.receive_data(_cer(), 0.0)
    peer.data_to_send()
    return peer


def serve(peer: Peer, raw: bytes, now: float) -> tuple[bytes, int]:
    taken = 0
    for event in peer.receive_data(raw, now):
        if isinstance(event, (RequestReceived, LaneRequest)):
            taken += isinstance(event, LaneRequest)
            peer.send_answer(event, event.call(), now)  # type: ignore[arg-type]
    return peer.data_to_send(), taken


@settings(max_examples=300, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            st.sampled_from(BASES),
            st.integers(1, 40),  # End-to-End: some repeat (duplicates)
            st.lists(st.tuples(st.integers(4, 300), st.integers(0, 255)), max_size=3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_the_peer_answers_the_same_with_and_without_the_lane(
    requests: list[tuple[bytes, int, list[tuple[int, int]]]],
) -> None:
    with_lane, without = differential_peer(True), differential_peer(False)
    warm = [base for base in BASES for _ in range(LEARN_AFTER)]
    for n, raw in enumerate(warm):
        e2e = (1000 + n).to_bytes(4, "big")
        raw = raw[:12] + e2e + e2e + raw[20:]
        assert serve(with_lane, raw, 0.5)[0] == serve(without, raw, 0.5)[0]
    taken = 0
    for base, e2e, edits in requests:
        wire = bytearray(base[:12] + e2e.to_bytes(4, "big") * 2 + base[20:])
        for offset, value in edits:
            if offset < len(wire):
                wire[offset] = value
        if with_lane.closed:
            break
        raw = bytes(wire)
        ours, lane_taken = serve(with_lane, raw, 1.0)
        theirs, _ = serve(without, raw, 1.0)
        assert ours == theirs
        assert with_lane.closed == without.closed
        taken += lane_taken
        if not edits and e2e not in {r[1] for r in requests[: requests.index((base, e2e, edits))]}:
            assert lane_taken == 1  # a learnt shape, unchanged, not a duplicate: the lane
