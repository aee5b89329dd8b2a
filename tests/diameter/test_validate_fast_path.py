"""The validator's fast path (shapes already seen well formed) never accepts what the full walk
rejects: a differential property test over mutations of well-formed requests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from diameter.codec import Avp, Message, decode_message
from diameter.dictionary import DICTIONARY
from diameter.errors import DecodeError
from diameter.validate import _compile, _walk, check_request

ECR = DICTIONARY.commands[(16777252, 324)]
CER = DICTIONARY.commands[(0, 257)]


def ecr(imei: str = "35209900123456", realm: str = "localdomain") -> bytes:
    m = Message(324, 16777252, 0xC0, 1, 1)
    m.add("Session-Id", "mme.test;1;1")
    m.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", 10415), Avp.new("Auth-Application-Id", 16777252)],
    )
    m.add("Auth-Session-State", 1).add("Origin-Host", "mme.test").add("Origin-Realm", "test")
    m.add("Destination-Realm", realm)
    m.add("Terminal-Information", [Avp.new("IMEI", imei), Avp.new("Software-Version", "01")])
    m.add("User-Name", "001010123456789")
    return m.encode()


def cer() -> bytes:
    m = Message(257, 0, 0x80, 1, 1)
    m.add("Origin-Host", "mme.test").add("Origin-Realm", "test")
    m.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 0).add("Product-Name", "x")
    m.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", 10415), Avp.new("Auth-Application-Id", 16777252)],
    )
    return m.encode()


BASES = ((ecr(), ECR), (cer(), CER))


@settings(max_examples=600, deadline=None)
@given(
    base=st.sampled_from(BASES),
    edits=st.lists(st.tuples(st.integers(20, 400), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_fast_path_agrees_with_the_full_walk(
    base: tuple[bytes, object], edits: list[tuple[int, int]]
) -> None:
    raw, command = base
    assert check_request(decode_message(raw), command) is None  # learns the well-formed shape
    wire = bytearray(raw)
    for offset, value in edits:
        if offset < len(wire):
            wire[offset] = value
    try:
        message = decode_message(bytes(wire))
    except DecodeError:
        return  # not a message any more (length bytes hit): nothing to validate
    fast = check_request(message, command)
    fresh = decode_message(bytes(wire))
    if fresh.problem is not None:
        slow = fresh.problem
    else:
        slow = _walk(fresh.avps, _compile(command.request, DICTIONARY), DICTIONARY, ())
    assert (fast is None) == (slow is None), (fast, slow)
    if fast is not None and slow is not None:
        assert fast.result_code == slow.result_code
        assert (fast.failed_avp is None) == (slow.failed_avp is None)
        if fast.failed_avp is not None and slow.failed_avp is not None:
            assert fast.failed_avp.encode() == slow.failed_avp.encode()


def test_long_avp_lists_are_checked_but_never_learnt() -> None:
    # A 1 MB request may hold 125,000 AVPs: a checker written out AVP by AVP would take seconds
    # of exec and megabytes, blocking every peer. Such lists take the full walk and are not kept
    # (with diameter.max_avps raised to let them through at all).
    from diameter.validate import MAX_LEARNED_AVPS

    compiled = _compile(ECR.request, DICTIONARY)
    unknown = Avp(99999, 0, 0, b"")  # not mandatory: ignored, allowed by *[ AVP ]
    proxy = Avp.new("Proxy-Info", [Avp.new("Proxy-Host", "p.test"), Avp.new("Proxy-State", b"s")])
    for extra in (unknown, proxy):
        for count in (MAX_LEARNED_AVPS, 5_000, 5_001):
            message = decode_message(ecr())
            message.avps.extend([extra] * count)
            before = len(compiled[6])
            assert check_request(message, ECR, max_avps=10_000) is None
            assert len(compiled[6]) == before  # nothing learnt at this length
    # One Grouped AVP with thousands of children: checked, not learnt either.
    wide = Avp.new(
        "Proxy-Info",
        [Avp.new("Proxy-Host", "p.test"), Avp.new("Proxy-State", b"s"), *[unknown] * 3_000],
    )
    message = decode_message(ecr())
    message.avps.append(wide)
    assert check_request(message, ECR, max_avps=10_000) is None
    inner = _compile(DICTIONARY.avp("Proxy-Info").grammar, DICTIONARY)  # type: ignore[arg-type]
    assert all(len(shape) <= MAX_LEARNED_AVPS for shape in inner[6])


def test_never_seen_shapes_write_no_checker() -> None:
    # Hostile traffic sends a new shape with every message: each must cost the full walk only,
    # not an exec'd checker (~0.5 ms), and must not fill the table real traffic needs.
    from diameter import validate

    compiled = _compile(ECR.request, DICTIONARY)
    for _ in range(validate.LEARN_AFTER):  # the base request and its Grouped AVPs: learnt
        assert check_request(decode_message(ecr()), ECR) is None
    written: list[int] = []
    original = validate._checker

    def counting(*args: object) -> object:
        written.append(1)
        return original(*args)  # type: ignore[arg-type]

    validate._checker = counting  # type: ignore[assignment]
    try:
        before = len(compiled[6])
        for n in range(1, 41):  # 40 shapes, each seen once: n unknown optional AVPs appended
            message = decode_message(ecr())
            message.avps.extend([Avp(99999, 0, 0, b"")] * n)
            assert check_request(message, ECR) is None
        assert written == [] and len(compiled[6]) == before
        for _ in range(validate.LEARN_AFTER):  # one of them seen often enough: learnt
            message = decode_message(ecr())
            message.avps.extend([Avp(99999, 0, 0, b"")] * 41)
            assert check_request(message, ECR) is None
        assert len(compiled[6]) == before + 1 and written == [1]
    finally:
        validate._checker = original  # type: ignore[assignment]
