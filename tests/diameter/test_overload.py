"""Overload control, sans-IO (diameter.overload): the controller, the loss algorithm, the
pre-built 3004 and the RFC 7683 DOIC AVPs, with time passed in."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from diameter.answer import answer_to
from diameter.codec import FLAG_ERROR, FLAG_PROXIABLE, FLAG_REQUEST, Avp, Message, decode_message
from diameter.dictionary import DICTIONARY
from diameter.dictionary.rfc7683_doic import OLR_DEFAULT_ALGO, OcReportType
from diameter.overload import (
    OverloadControl,
    OverloadSettings,
    ReactingNode,
    append_avps,
)
from diameter.settings import LocalIdentity
from diameter.validate import check_request
from tests.diameter.test_peer_helpers import ecr_message

IDENTITY = LocalIdentity(origin_host="eir.test", origin_realm="test")
ECR_COMMAND = DICTIONARY.commands[(16777252, 324)]


def control(**settings: object) -> OverloadControl:
    values: dict[str, object] = {"target_delay": 0.1}
    values.update(settings)
    return OverloadControl(OverloadSettings(**values), IDENTITY, sequence_base=7)  # type: ignore[arg-type]


def oc_supported_features(vector: int | None = OLR_DEFAULT_ALGO) -> Avp:
    children = [] if vector is None else [Avp.new("OC-Feature-Vector", vector)]
    return Avp.new("OC-Supported-Features", children)


def request(*extra: Avp) -> Message:
    message = ecr_message()
    message.avps.extend(extra)
    return message


# -- the controller -----------------------------------------------------------------------------
def test_shedding_starts_past_the_target_twice_in_a_row_and_rises_while_it_lasts() -> None:
    c = control()
    c.update(0.05, 0.0)
    assert c.reduction == 0 and not c.overloaded
    c.update(0.15, 0.1)  # past the target once: a hiccup, nothing yet
    assert c.reduction == 0
    c.update(0.05, 0.15)
    c.update(0.15, 0.2)  # not twice in a row either
    assert c.reduction == 0
    c.update(0.15, 0.25)  # twice in a row, 1.5 x target: 10
    assert c.reduction == 10 and c.overloaded
    c.update(0.45, 0.3)  # 4.5 x target: +40
    assert c.reduction == 50
    c.update(10.0, 0.4)  # far past: the rise is capped, the total at 100
    c.update(10.0, 0.5)
    assert c.reduction == 100


def test_shedding_ends_at_the_first_measurement_under_the_target() -> None:
    # A stall: the delay measured right after it is far past the target, the next one is
    # back under it. Nothing is refused once the delay is under the target (no average, no
    # slow step-down: the refusals a stall costs are those while requests really wait).
    c = control()
    c.update(0.5, 0.0)
    c.update(0.4, 0.1)  # 4 x the target
    assert c.reduction == 40
    c.update(0.09, 0.2)
    assert c.reduction == 0 and not c.overloaded


def test_a_sustained_overload_resumes_at_the_share_that_held_it() -> None:
    c = control()
    for step in range(4):
        c.update(0.25, step / 10)
    assert c.reduction == 60
    c.update(0.05, 0.4)  # the share held the delay: shedding stops
    assert c.reduction == 0
    c.update(0.15, 0.5)  # past the target again at once: resumed a step lower, no re-climb
    assert c.reduction == 55
    for step in range(3):  # under the target three times: still the same overload
        c.update(0.05, 0.6 + step / 10)
    c.update(0.15, 0.9)
    assert c.reduction == 50
    for step in range(4):  # four times: forgotten, a separate event
        c.update(0.05, 1.1 + step / 10)
    assert c.reduction == 0
    c.update(0.15, 2.0)  # a new overload: past the target twice in a row again
    assert c.reduction == 0
    c.update(0.15, 2.1)
    assert c.reduction == 10


@given(delays=st.lists(st.floats(0.0, 2.0), max_size=60))
def test_nothing_is_refused_while_the_delay_is_under_the_target(delays: list[float]) -> None:
    c = control()
    for step, delay in enumerate(delays):
        c.update(delay, step / 10)
        assert 0 <= c.reduction <= 100
        if delay <= 0.1:
            assert c.reduction == 0
        if step and delays[step - 1] <= 0.1 and c.reduction:
            # One measurement past the target starts shedding only within a running overload.
            assert any(d > 0.1 for d in delays[:step - 1])


def test_off_when_the_target_is_zero() -> None:
    c = control(target_delay=0.0)
    assert not c.enabled
    c.update(100.0, 0.0)
    c.update(100.0, 0.1)
    assert c.reduction == 0


# -- fairness between peers ---------------------------------------------------------------------
def test_a_peer_within_its_fair_share_is_not_refused() -> None:
    c = control()
    c.reduction = 50
    c.apportion({"flood": 90_000, "modest": 10_000})
    # Half of 100,000 octets admitted: 10,000 of the modest peer, 40,000 of the flooding one.
    assert c.shares == {"modest": 0, "flood": 56}


def test_peers_alike_share_the_reduction_alike() -> None:
    c = control()
    c.reduction = 30
    c.apportion({"a": 1_000, "b": 1_000, "c": 1_000})
    assert c.shares == {"a": 30, "b": 30, "c": 30}


def test_shares_are_dropped_when_shedding_ends() -> None:
    c = control()
    c.update(1.0, 0.0)
    c.update(1.0, 0.1)
    c.apportion({"a": 1_000})
    assert c.shares == {"a": 50}
    c.update(0.0, 0.2)
    assert c.shares == {}


def test_well_behaved_peers_share_a_tenth_of_the_capacity_even_at_100_percent() -> None:
    c = control()
    c.reduction = 100  # the flood alone calls for refusing everything
    c.apportion({"flood": 900_000, "modest": 1_000}, capacity=100_000)
    # 10,000 octets admitted: the modest peer's 1,000, 9,000 of the flood's 900,000.
    assert c.shares == {"modest": 0, "flood": 99}
    c.apportion({"flood": 900_000, "modest": 1_000})  # capacity unknown: nothing admitted
    assert c.shares == {"modest": 100, "flood": 100}


@given(
    demands=st.dictionaries(st.integers(0, 50), st.integers(0, 1_000_000), max_size=12),
    reduction=st.integers(1, 100),
    capacity=st.sampled_from([0.0, 1_000.0, 100_000.0, 1e7]),
)
@example(demands={0: 2055}, reduction=58, capacity=0.0)  # float error once refused 59 %
def test_fair_shares_admit_the_reduction_and_spare_the_smaller_peers(
    demands: dict[int, int], reduction: int, capacity: float
) -> None:
    c = control()
    c.reduction = reduction
    c.apportion(demands, capacity)
    total = sum(demands.values())
    if not total:
        assert c.shares == {}
        return
    shares = c.shares
    assert set(shares) == set(demands) and all(0 <= v <= 100 for v in shares.values())
    if len(demands) == 1 and not capacity:
        assert shares == dict.fromkeys(demands, reduction)  # a lone connection: the reduction
    admitted = sum(d * (100 - shares[k]) / 100 for k, d in demands.items())
    # The node's share is admitted (at least a tenth of the capacity), within the rounding up
    # of the refused shares.
    budget = max(total * (100 - reduction) / 100, capacity / 10)
    assert admitted <= budget + 1e-6 * total
    assert admitted >= min(total, budget) - len(demands) * max(demands.values()) / 100
    # Max-min fairness: a peer offering more is never refused a smaller share, and one
    # offering no more than an equal part of what is admitted is not refused at all.
    ordered = sorted(demands, key=demands.__getitem__)
    for smaller, larger in itertools.pairwise(ordered):
        if demands[smaller] < demands[larger]:
            assert shares[smaller] <= shares[larger]
    equal_part = budget / len(demands)
    assert all(shares[k] == 0 for k, d in demands.items() if d <= equal_part)


# -- the pre-built 3004 -------------------------------------------------------------------------
def test_too_busy_answer_copies_ids_session_and_proxy_info() -> None:
    c = control()
    proxy = Avp.new("Proxy-Info", [Avp.new("Proxy-Host", "dra.test"), Avp.new("Proxy-State", b"s")])
    raw = request(proxy).encode()
    answer = decode_message(c.too_busy(raw, 0.0))
    original = decode_message(raw)
    assert answer.problem is None
    assert not answer.is_request
    assert answer.flags == FLAG_PROXIABLE | FLAG_ERROR  # RFC 6733 §7.1.3: 3xxx carry the E bit
    assert (answer.command_code, answer.application_id) == (324, 16777252)
    assert (answer.hop_by_hop, answer.end_to_end) == (original.hop_by_hop, original.end_to_end)
    assert [a.code for a in answer.avps] == [263, 268, 264, 296, 284]
    assert answer.get("Session-Id") == original.get("Session-Id")
    assert answer.get("Result-Code") == 3004
    assert answer.get("Origin-Host") == "eir.test"
    assert answer.avps[-1].encode() == proxy.encode()
    # The generic answer-message CCF of RFC 6733 §7.2 holds.
    assert check_request(answer, _answer_message_command()) is None


def _answer_message_command() -> object:
    # check_request on an answer: the answer-message grammar as the request side of a command.
    from dataclasses import replace

    return replace(ECR_COMMAND, request=DICTIONARY.answer_message, proxiable=True)


@given(
    session=st.one_of(st.none(), st.text(min_size=0, max_size=40)),
    session_first=st.booleans(),
    proxies=st.integers(0, 2),
    proxiable=st.booleans(),
    extra=st.binary(max_size=12),
)
def test_too_busy_is_the_answer_rfc_6733_builds(
    session: str | None, session_first: bool, proxies: int, proxiable: bool, extra: bytes
) -> None:
    # Cross-check against diameter.answer.answer_to, which builds answers from decoded
    # messages (RFC 6733 §6.2, §7.2): the same octets, through the template or the AVP walk.
    avps = [Avp.new("Origin-Host", "mme.test"), Avp.new("Origin-Realm", "test")]
    if extra:
        avps.append(Avp.new("User-Name", extra.hex()))
    if session is not None:
        avps.insert(0 if session_first else len(avps), Avp.new("Session-Id", session))
    for n in range(proxies):
        avps.append(
            Avp.new("Proxy-Info", [Avp.new("Proxy-Host", f"dra{n}.test"), Avp.new("Proxy-State", b"s")])
        )
    flags = FLAG_REQUEST | (FLAG_PROXIABLE if proxiable else 0)
    raw = Message(324, 16777252, flags, 0xA1B2C3D4, 0x01020304, avps).encode()
    c = control()
    expected = answer_to(decode_message(raw), IDENTITY, 3004).encode()
    assert c.too_busy(raw, 0.0) == expected
    assert c.too_busy(raw, 0.0) == expected  # the cached header start too


def test_too_busy_without_oc_supported_features_has_no_doic_avp() -> None:
    c = control()
    c.update(1.0, 0.0)
    c.update(1.0, 0.0)
    raw = request().encode()
    answer = decode_message(c.too_busy(raw, 0.0))
    assert not {621, 623} & {a.code for a in answer.avps}
    # No Proxy-Info either (the walk is skipped): the Session-Id is still copied first.
    assert answer.problem is None and [a.code for a in answer.avps] == [263, 268, 264, 296]
    assert answer.get("Session-Id") == decode_message(raw).get("Session-Id")


def test_too_busy_to_a_doic_peer_carries_the_overload_report() -> None:
    c = control()
    c.update(0.35, 0.0)
    c.update(0.35, 0.0)  # 3.5 x target, twice: 30 %
    answer = decode_message(c.too_busy(request(oc_supported_features()).encode(), 0.0))
    features = answer.find(621)
    assert features is not None and features.find(622).value == OLR_DEFAULT_ALGO  # type: ignore[union-attr]
    olr = answer.find(623)
    assert olr is not None
    assert [child.code for child in olr.children] == [624, 626, 627, 625]
    assert olr.find(624).value == (7 << 32) + 1  # type: ignore[union-attr]
    assert olr.find(626).value == OcReportType.HOST_REPORT  # type: ignore[union-attr]
    assert olr.find(627).value == 30  # type: ignore[union-attr]
    assert olr.find(625).value == 30  # type: ignore[union-attr]


# -- DOIC on ordinary answers --------------------------------------------------------------------
def test_doic_peer_not_overloaded_gets_supported_features_only() -> None:
    c = control()
    avps = c.doic_avps(0.0)
    decoded = decode_message(append_avps(ecr_message().encode(), avps))
    assert decoded.problem is None
    assert [a.code for a in decoded.avps[-1:]] == [621]
    assert decoded.find(623) is None


@pytest.mark.parametrize("vector", [None, OLR_DEFAULT_ALGO, 0x3, 0x2, 0x0])
def test_any_oc_supported_features_gets_it_back_with_the_loss_algorithm(vector: int | None) -> None:
    # RFC 7683 §5.1.2: a request with OC-Supported-Features MUST have it in its answer. No
    # OC-Feature-Vector means the loss algorithm only (§7.2); one without the loss bit breaks
    # §5.1.1, but every DOIC node supports loss (§6.1), the only algorithm we can select.
    c = control()
    c.update(0.35, 0.0)
    c.update(0.35, 0.0)
    answer = decode_message(c.too_busy(request(oc_supported_features(vector)).encode(), 0.0))
    features = answer.find(621)
    assert features is not None and features.find(622).value == OLR_DEFAULT_ALGO  # type: ignore[union-attr]
    assert answer.find(623).find(627).value == 30  # type: ignore[union-attr]


def test_doic_can_be_turned_off() -> None:
    c = control(doic=False)
    c.update(1.0, 0.0)
    c.update(1.0, 0.0)
    assert c.doic_avps(0.0) == b""


def test_sequence_number_grows_with_each_new_report_and_the_end_is_rescinded() -> None:
    c = control(validity_duration=30)

    def olr(now: float) -> Avp | None:
        raw = append_avps(ecr_message().encode(), c.doic_avps(now))
        return decode_message(raw).find(623)

    c.update(0.2, 0.0)
    c.update(0.2, 0.0)
    first = olr(0.0)
    assert first is not None and first.find(627).value == 20  # type: ignore[union-attr]
    c.update(0.2, 0.1)
    second = olr(0.1)
    assert second is not None
    assert second.find(624).value > first.find(624).value  # type: ignore[union-attr]
    assert olr(0.15).encode() == second.encode()  # unchanged content: same sequence number
    for step in range(8):  # falls back to 0
        c.update(0.0, 1.0 + step)
    ended = olr(9.0)
    # RFC 7683 §5.5.2: the end of the overload: a report with OC-Validity-Duration 0.
    assert ended is not None
    assert ended.find(625).value == 0 and ended.find(627).value == 0  # type: ignore[union-attr]
    assert ended.find(624).value > second.find(624).value  # type: ignore[union-attr]
    assert olr(8.0 + 30.5) is None  # once a validity period has passed, no report at all


def test_doic_avps_are_valid_in_an_s13_request_and_answer() -> None:
    # TS 29.272's grammars end in *[ AVP ]: OC-Supported-Features is accepted in a MICR.
    c = control()
    c.update(1.0, 0.0)
    c.update(1.0, 0.0)
    message = request(oc_supported_features())
    assert check_request(decode_message(message.encode()), ECR_COMMAND) is None
    olr = decode_message(c.too_busy(message.encode(), 0.0)).find(623)
    assert olr is not None and olr.flags == 0  # M and V clear (RFC 7683 §7.7)


# -- the reacting node ---------------------------------------------------------------------------
def olr(
    sequence: int,
    reduction: int,
    validity: int | None = 30,
    report_type: OcReportType = OcReportType.HOST_REPORT,
) -> Avp:
    children = [
        Avp.new("OC-Sequence-Number", sequence),
        Avp.new("OC-Report-Type", report_type),
        Avp.new("OC-Reduction-Percentage", reduction),
    ]
    if validity is not None:
        children.append(Avp.new("OC-Validity-Duration", validity))
    return Avp.new("OC-OLR", children)


def answer_with(*olrs: Avp) -> bytes:
    message = Message(324, 16777252, FLAG_PROXIABLE, 1, 1)
    message.add("Session-Id", "s").add("Result-Code", 2001)
    message.add("Origin-Host", "EIR.test").add("Origin-Realm", "test")
    message.avps.extend(olrs)
    return message.encode()


def answer_with_olr(sequence: int, reduction: int, validity: int | None = 30) -> bytes:
    return answer_with(olr(sequence, reduction, validity))


def test_reacting_node_abates_the_reported_share_until_the_report_ends() -> None:
    node = ReactingNode()
    assert all(node.admit("eir.test", 0.0) for _ in range(10))
    node.on_answer(answer_with_olr(5, 40), 1.0)
    assert sum(not node.admit("eir.test", 1.0) for _ in range(100)) == 40
    assert all(node.admit("other.test", 1.0) for _ in range(10))  # a host report: that host only
    node.on_answer(answer_with_olr(4, 100), 2.0)  # older sequence number: ignored
    assert node.reports["eir.test"].reduction == 40
    node.on_answer(answer_with_olr(6, 0, validity=0), 3.0)  # rescinded (§5.5.3)
    assert "eir.test" not in node.reports
    node.on_answer(answer_with_olr(7, 100, validity=None), 4.0)  # validity absent: 30 s
    assert not node.admit("eir.test", 33.9)
    assert node.admit("eir.test", 34.0) and "eir.test" not in node.reports  # expired
    assert node.throttled == 41


def test_reacting_node_follows_our_reporting_node() -> None:
    reporting = control()
    reacting = ReactingNode()
    reporting.update(0.35, 0.0)
    reporting.update(0.35, 0.0)
    raw = reporting.too_busy(request(oc_supported_features()).encode(), 0.0)
    reacting.on_answer(raw, 0.0)
    assert reacting.reports["eir.test"].reduction == 30
    for step in range(6):
        reporting.update(0.0, 1.0 + step)
    reacting.on_answer(reporting.too_busy(request(oc_supported_features()).encode(), 7.0), 7.0)
    assert reacting.reports == {}


def test_reports_of_two_workers_are_ordered_by_when_they_were_made() -> None:
    # --workers N: each worker reports its own load under the host's Origin-Host. A peer whose
    # connection moves to another worker must take that worker's later report as newer
    # (RFC 7683 §5.5.3 keeps the highest sequence number), however many reports the first
    # worker made before.
    first, second = control(), control()  # one host: the same start time
    reacting = ReactingNode()
    for step in range(20):  # the first worker's report changes often
        first.update(0.15 if step % 2 else 0.5, 1.0 + step / 10)
    first.update(0.5, 3.0)
    first.update(0.5, 3.1)
    reacting.on_answer(first.too_busy(request(oc_supported_features()).encode(), 3.1), 3.1)
    assert reacting.reports["eir.test"].reduction == 100
    second.update(0.0, 0.5)  # its first measurement
    second.update(0.25, 4.0)
    second.update(0.25, 4.1)  # a report made later, the second worker's first
    reacting.on_answer(second.too_busy(request(oc_supported_features()).encode(), 4.1), 4.1)
    assert reacting.reports["eir.test"].reduction == 20


def test_a_late_older_report_does_not_reinstate_an_ended_overload() -> None:
    # Answers over several connections arrive out of order: the rescinding report (newer) may
    # come before an answer still carrying the report it ends (RFC 7683 §5.5.3).
    node = ReactingNode()
    node.on_answer(answer_with_olr(5, 90), 1.0)
    node.on_answer(answer_with_olr(6, 0, validity=0), 1.1)
    assert node.reports == {}
    node.on_answer(answer_with_olr(5, 90), 1.2)  # late, older
    assert node.reports == {} and node.admit("eir.test", 1.2)
    node.on_answer(answer_with_olr(7, 30), 1.3)  # a new overload
    assert node.reports["eir.test"].reduction == 30


def test_reacting_node_reads_reports_to_the_letter() -> None:
    node = ReactingNode()
    node.on_answer(answer_with_olr(1, 50, validity=86_401), 0.0)
    assert node.reports["eir.test"].expires == 30.0  # §7.5: past the maximum, the default
    node.on_answer(answer_with_olr(2, 101), 1.0)  # §7.7: over 100 is ignored
    assert node.reports["eir.test"].sequence_number == 1
    realm = olr(3, 100, report_type=OcReportType.REALM_REPORT)
    node.on_answer(answer_with(realm), 1.0)  # §7.6: a realm report concerns realm routing
    assert node.reports["eir.test"].reduction == 50
    node.on_answer(answer_with(realm, olr(4, 70)), 1.0)  # §5.2.1.3: each OLR processed
    assert node.reports["eir.test"].reduction == 70
    node.on_answer(answer_with_olr(2**64 - 9, 20), 2.0)
    node.on_answer(answer_with_olr(5, 60), 2.0)  # §5.2.1.3: rolled over, newer
    assert node.reports["eir.test"].reduction == 60
    node.on_answer(answer_with_olr(4, 90), 2.0)  # older than 5: ignored
    assert node.reports["eir.test"].reduction == 60
