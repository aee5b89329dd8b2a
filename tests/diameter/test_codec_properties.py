"""Property tests (hypothesis): round trips for every data type and whole messages; decoding any
bytes raises nothing but DiameterError subclasses."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diameter.codec import (
    HEADER_LENGTH,
    Avp,
    Message,
    _decode_avps_checked,
    decode_avps,
    decode_message,
    decode_value,
    encode_avp,
    encode_message,
    encode_value,
    utf8_value,
)
from diameter.dictionary import DICTIONARY, AvpType
from diameter.errors import DecodeError, DiameterError
from diameter.framing import Framer
from diameter.validate import check_avps, check_request
from tests.diameter import vectors as v

UTC = dt.UTC
# Time round-trips over the two eras RFC 6733 §4.3.1 can express with the RFC 5905 rule.
TIME_MIN = dt.datetime(1968, 1, 20, 3, 14, 8, tzinfo=UTC)
TIME_MAX = dt.datetime(2104, 2, 26, 9, 42, 23, tzinfo=UTC)

identity_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)

VALUE_STRATEGIES: dict[AvpType, st.SearchStrategy[Any]] = {
    AvpType.OCTET_STRING: st.binary(max_size=64),
    AvpType.INTEGER32: st.integers(-(2**31), 2**31 - 1),
    AvpType.INTEGER64: st.integers(-(2**63), 2**63 - 1),
    AvpType.UNSIGNED32: st.integers(0, 2**32 - 1),
    AvpType.UNSIGNED64: st.integers(0, 2**64 - 1),
    AvpType.ENUMERATED: st.integers(-(2**31), 2**31 - 1),
    AvpType.FLOAT32: st.floats(width=32, allow_nan=False),
    AvpType.FLOAT64: st.floats(allow_nan=False),
    AvpType.ADDRESS: st.one_of(
        st.ip_addresses(),
        st.tuples(st.integers(0, 65535).filter(lambda f: f not in (1, 2)), st.binary(max_size=20)),
    ),
    AvpType.TIME: st.datetimes(
        min_value=TIME_MIN.replace(tzinfo=None),
        max_value=TIME_MAX.replace(tzinfo=None),
        timezones=st.just(UTC),
    ).map(lambda d: d.replace(microsecond=0)),
    AvpType.UTF8_STRING: st.text(max_size=40),
    AvpType.DIAMETER_IDENTITY: identity_text,
    AvpType.DIAMETER_URI: st.tuples(st.sampled_from(["aaa://", "aaas://"]), identity_text).map(
        "".join
    ),
    AvpType.IP_FILTER_RULE: st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
    ),
}


def test_every_non_grouped_type_has_a_strategy() -> None:
    assert set(VALUE_STRATEGIES) == set(AvpType) - {AvpType.GROUPED}


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[AvpType, Any]:
    avp_type = draw(st.sampled_from(sorted(VALUE_STRATEGIES, key=lambda t: str(t.value))))
    return avp_type, draw(VALUE_STRATEGIES[avp_type])


@settings(max_examples=600)
@given(typed_values())
def test_value_round_trip(typed: tuple[AvpType, Any]) -> None:
    avp_type, value = typed
    data = encode_value(avp_type, value)
    back = decode_value(avp_type, data)
    if avp_type is AvpType.ADDRESS and not isinstance(value, tuple):
        assert back == value
    elif isinstance(value, float):
        assert back == value and math.copysign(1, back) == math.copysign(1, value)
    else:
        assert back == value
    assert encode_value(avp_type, back) == data


# -- AVP trees and whole messages ---------------------------------------------------------------

KNOWN_LEAVES = [
    d
    for d in DICTIONARY.avps.values()
    if d.type is not AvpType.GROUPED and d.type in VALUE_STRATEGIES
]


@st.composite
def known_leaf(draw: st.DrawFn) -> Avp:
    defn = draw(st.sampled_from(KNOWN_LEAVES))
    value = draw(VALUE_STRATEGIES[defn.type])
    mandatory = draw(st.one_of(st.none(), st.booleans()))
    return Avp.new(defn.name, value, mandatory=mandatory)


@st.composite
def raw_leaf(draw: st.DrawFn) -> Avp:
    vendor = draw(st.sampled_from([0, 0, 10415, 4242, 0xFFFFFFFF]))
    flags = draw(st.sampled_from([0x00, 0x40, 0x20, 0x60, 0x1F, 0xFF]))
    if vendor:
        flags |= 0x80
    # V with vendor 0 is malformed (RFC 6733 §4.1) but must still re-encode byte-exact
    code = draw(st.integers(0, 2**32 - 1))
    return Avp(code, flags, vendor, draw(st.binary(max_size=24)))


GROUPED_NAMES = [d.name for d in DICTIONARY.avps.values() if d.type is AvpType.GROUPED]

avp_trees = st.recursive(
    st.one_of(known_leaf(), raw_leaf()),
    lambda children: st.builds(
        lambda name, kids: Avp.new(name, kids),
        st.sampled_from(GROUPED_NAMES),
        st.lists(children, max_size=4),
    ),
    max_leaves=12,
)


def same_tree(a: Avp, b: Avp) -> None:
    assert (a.code, a.flags, a.vendor, a.data) == (b.code, b.flags, b.vendor, b.data)
    defn = a.definition()
    if defn is not None and defn.type is AvpType.GROUPED:
        try:
            kids_a = a.children
        except DiameterError as exc:
            # a raw AVP whose random code hit a known Grouped AVP, with data that are not AVPs
            with pytest.raises(type(exc)):
                b.children  # noqa: B018
            return
        kids_b = b.children
        assert len(kids_a) == len(kids_b)
        for x, y in zip(kids_a, kids_b, strict=True):
            same_tree(x, y)
    elif defn is not None:
        try:
            va = a.value
        except DiameterError as exc:
            # a raw AVP whose random code hit a known one with data that is not its type
            with pytest.raises(type(exc)):
                b.value  # noqa: B018
            return
        vb = b.value
        if isinstance(va, float) and math.isnan(va):
            assert math.isnan(vb)
        else:
            assert va == vb


messages = st.builds(
    Message,
    command_code=st.integers(0, 2**24 - 1),
    application_id=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 255),
    hop_by_hop=st.integers(0, 2**32 - 1),
    end_to_end=st.integers(0, 2**32 - 1),
    avps=st.lists(avp_trees, max_size=8),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_message_round_trip(msg: Message) -> None:
    wire = msg.encode()
    assert len(wire) % 4 == 0
    assert int.from_bytes(wire[1:4], "big") == len(wire)
    back = decode_message(wire)
    assert back.problem is None
    assert (back.flags, back.command_code, back.application_id) == (
        msg.flags,
        msg.command_code,
        msg.application_id,
    )
    assert (back.hop_by_hop, back.end_to_end) == (msg.hop_by_hop, msg.end_to_end)
    assert len(back.avps) == len(msg.avps)
    for x, y in zip(msg.avps, back.avps, strict=True):
        same_tree(x, y)
    assert back.encode() == wire
    # and through the framer, in two pieces
    framer = Framer()
    cut = len(wire) // 3
    assert framer.feed(wire[:cut]) + framer.feed(wire[cut:]) == [wire]


@settings(max_examples=200)
@given(st.lists(avp_trees, max_size=6))
def test_grouped_round_trip(children: list[Avp]) -> None:
    data = encode_value(AvpType.GROUPED, children)
    back = decode_value(AvpType.GROUPED, data)
    assert len(back) == len(children)
    for x, y in zip(children, back, strict=True):
        same_tree(x, y)


# -- hostile input ---------------------------------------------------------------------------------


def exercise(msg: Message) -> None:
    """Everything a server may do with a decoded message: read every value, walk every Grouped
    AVP, validate it against every grammar, print it."""

    def walk(avps: list[Avp]) -> None:
        for avp in avps:
            try:
                avp.value  # noqa: B018
            except DiameterError:
                pass
            try:
                walk(avp.children)
            except DiameterError:
                pass

    walk(msg.avps)
    repr(msg)
    for command in DICTIONARY.commands.values():
        check_request(msg, command)
        for grammar in (command.request, command.answer, DICTIONARY.answer_message):
            check_avps(msg.avps, grammar, DICTIONARY, ())


def decode_and_exercise(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except DiameterError:
        return
    exercise(msg)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_and_exercise(data)
    try:
        Framer().feed(data)
    except DiameterError:
        pass


@st.composite
def framed_garbage(draw: st.DrawFn) -> bytes:
    """A valid header around arbitrary AVP bytes: gets past the header checks into the AVPs."""
    body = draw(st.binary(max_size=400))
    body += bytes(-len(body) & 3)
    flags = draw(st.integers(0, 255))
    command = draw(st.sampled_from([257, 280, 282, 324, 999]))
    app = 16777252 if command == 324 else draw(st.sampled_from([0, 16777252]))
    return encode_message(flags, command, app, 1, 2, body)


@settings(max_examples=800)
@given(framed_garbage())
def test_arbitrary_avp_bytes(data: bytes) -> None:
    decode_and_exercise(data)


@st.composite
def mutated_vectors(draw: st.DrawFn) -> bytes:
    wire = bytearray(draw(st.sampled_from(list(v.WELL_FORMED.values()))))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(HEADER_LENGTH, len(wire) - 1))
        wire[i] = draw(st.integers(0, 255))
    return bytes(wire)


@settings(max_examples=1500)
@given(mutated_vectors())
def test_mutated_golden_vectors(data: bytes) -> None:
    decode_and_exercise(data)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.sampled_from(list(AvpType)))
def test_decode_value_of_arbitrary_bytes(data: bytes, avp_type: AvpType) -> None:
    try:
        decode_value(avp_type, data)
    except DiameterError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_decode_avps_of_arbitrary_bytes(data: bytes) -> None:
    avps, problem = decode_avps(data, 0, len(data))
    consumed = sum(len(encode_avp(a.code, a.flags, a.vendor, a.data)) for a in avps)
    if problem is None:
        assert consumed == len(data)  # every octet belongs to an AVP or its padding
    else:
        assert consumed < len(data)
    for avp in avps:
        try:
            avp.children  # noqa: B018
        except DiameterError:
            pass


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=24), st.text(max_size=12).map(str.encode)))
def test_utf8_value_is_decode_value_of_a_utf8string(data: bytes) -> None:
    # The S13 handler's shortcut: the same value, or the same error (5004, same text).
    try:
        expected: Any = decode_value(AvpType.UTF8_STRING, data)
    except DecodeError as exc:
        expected = (exc.result_code, str(exc))
    try:
        got: Any = utf8_value(data)
    except DecodeError as exc:
        got = (exc.result_code, str(exc))
    assert got == expected


def _fields(avps: list[Avp]) -> list[tuple[int, int, int, bytes]]:
    return [(a.code, a.flags, a.vendor, bytes(a.data)) for a in avps]


@settings(max_examples=800)
@given(st.one_of(st.binary(max_size=120), mutated_vectors().map(lambda w: w[HEADER_LENGTH:])))
def test_decode_avps_fast_loop_matches_the_checked_loop(data: bytes) -> None:
    # decode_avps splits well-formed AVPs with fewer checks per AVP and hands any problem to
    # the checked loop: same AVPs and the same first problem either way.
    avps, problem = decode_avps(data, 0, len(data))
    expected, expected_problem = _decode_avps_checked(data, 0, len(data), [])
    assert _fields(avps) == _fields(expected)
    assert problem == expected_problem


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_framer_on_arbitrary_chunks(chunks: list[bytes]) -> None:
    framer = Framer()
    try:
        for chunk in chunks:
            for message in framer.feed(chunk):
                decode_and_exercise(message)
    except DiameterError:
        pass
