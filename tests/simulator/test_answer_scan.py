"""The simulator's cheap answer check (``scan_answer``, ``AnswerScanner``) against the full
decode (``diameter.codec.decode_message``): the same Session-Id, Result-Code,
Experimental-Result-Code and Equipment-Status, so the same outcome, for answers with their AVPs
in any order, grouped AVPs, Experimental-Result instead of Result-Code, repeated AVPs, AVPs of
the same code under another vendor, and unknown AVPs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from diameter.codec import Avp, Message, decode_avps, decode_message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID
from diameter.dictionary.ts29272_s13 import VENDOR as VENDOR_3GPP
from gateway.simulator.traffic import AnswerScanner, outcome_of, scan_answer

SESSION_ID, RESULT_CODE, VENDOR_ID, FAILED_AVP = 263, 268, 266, 279
EXPERIMENTAL_RESULT, EXPERIMENTAL_RESULT_CODE, EQUIPMENT_STATUS = 297, 298, 1445
M, V = 0x40, 0x80

Scan = tuple[bytes | None, int | None, int | None, int | None]


def decoded(raw: bytes) -> Scan:
    """What the full decode says: the first AVP of each (code, vendor), as Message.find."""
    message = decode_message(raw)
    assert message.problem is None
    return first_of_each(message.avps)


def first_of_each(avps: list[Avp]) -> Scan:
    """Message.find's answer for each field (the first AVP of its code and vendor); an
    Unsigned32 of another length than 4 is no value, and a Grouped AVP's children are those
    that decode before any problem (a malformed one stops there)."""

    def first(among: list[Avp], code: int, vendor: int = 0) -> Avp | None:
        return next((a for a in among if a.code == code and a.vendor == vendor), None)

    def u32_of(avp: Avp | None) -> int | None:
        return int.from_bytes(avp.data, "big") if avp is not None and len(avp.data) == 4 else None

    session = first(avps, SESSION_ID)
    group = first(avps, EXPERIMENTAL_RESULT)
    children = decode_avps(group.data, 0, len(group.data))[0] if group is not None else []
    return (
        None if session is None else session.data,
        u32_of(first(avps, RESULT_CODE)),
        u32_of(first(children, EXPERIMENTAL_RESULT_CODE)),
        u32_of(first(avps, EQUIPMENT_STATUS, VENDOR_3GPP)),
    )


def u32(code: int, value: int, vendor: int = 0, flags: int = M) -> Avp:
    return Avp(code, flags | (V if vendor else 0), vendor, value.to_bytes(4, "big"))


def grouped(code: int, children: list[Avp], vendor: int = 0) -> Avp:
    return Avp(code, M | (V if vendor else 0), vendor, b"".join(a.encode() for a in children))


codes = st.sampled_from([2001, 5422, 5001, 5004, 5005, 5012, 3002, 4181]) | st.integers(
    0, 2**32 - 1
)
statuses = st.sampled_from([0, 1, 2]) | st.integers(0, 2**32 - 1)
vendors = st.sampled_from([0, VENDOR_3GPP, 5535, 1])
sessions = st.builds(
    lambda host, n: Avp(SESSION_ID, M, 0, f"{host};1;{n:010d}".encode()),
    st.text("abcdefghijklmnopqrstuvwxyz.0123456789", min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
)
# AVPs nobody asked for: any code, vendor, flags and length (padding included).
unknown = st.builds(
    lambda code, vendor, flags, data: Avp(code, flags | (V if vendor else 0), vendor, data),
    st.integers(1, 2**32 - 1).filter(
        lambda c: c not in (SESSION_ID, RESULT_CODE, EXPERIMENTAL_RESULT, EQUIPMENT_STATUS)
    ),
    vendors,
    st.sampled_from([0, M, V, M | V, 0x20]),
    st.binary(max_size=40),
)
experimental_children = st.lists(
    st.one_of(
        codes.map(lambda c: u32(EXPERIMENTAL_RESULT_CODE, c)),
        vendors.map(lambda v: u32(VENDOR_ID, v)),
        unknown,
    ),
    max_size=4,
)
experimental = experimental_children.map(lambda cs: grouped(EXPERIMENTAL_RESULT, cs))
answer_avp = st.one_of(
    sessions,
    codes.map(lambda c: u32(RESULT_CODE, c)),
    statuses.map(lambda s: u32(EQUIPMENT_STATUS, s, VENDOR_3GPP)),
    experimental,
    unknown,
    # The same codes under another vendor (or none) are other AVPs: never read as these.
    st.builds(lambda c, v: u32(RESULT_CODE, c, v), codes, vendors.filter(bool)),
    st.builds(lambda s, v: u32(EQUIPMENT_STATUS, s, v),
              statuses, vendors.filter(lambda v: v != VENDOR_3GPP)),
    st.builds(lambda cs, v: grouped(EXPERIMENTAL_RESULT, cs, v),
              experimental_children, vendors.filter(bool)),
    # Inside another grouped AVP, or outside its group: not the answer's.
    codes.map(lambda c: u32(EXPERIMENTAL_RESULT_CODE, c)),
    st.lists(st.one_of(codes.map(lambda c: u32(RESULT_CODE, c)),
                       statuses.map(lambda s: u32(EQUIPMENT_STATUS, s, VENDOR_3GPP)),
                       experimental), max_size=3).map(lambda cs: grouped(FAILED_AVP, cs)),
)


def encode_answer(avps: list[Avp], hop_by_hop: int = 7, end_to_end: int = 9) -> bytes:
    return Message(324, S13_APPLICATION_ID, 0x40, hop_by_hop, end_to_end, avps).encode()


@given(st.lists(answer_avp, max_size=12))
def test_scan_agrees_with_the_full_decode(avps: list[Avp]) -> None:
    raw = encode_answer(avps)
    expected = decoded(raw)
    assert scan_answer(raw) == expected
    assert outcome_of(*scan_answer(raw)[1:]) == outcome_of(*expected[1:])


@given(sessions, st.lists(st.lists(answer_avp, max_size=8), min_size=1, max_size=6),
       st.integers(1, 8))
def test_memoised_scan_agrees_with_the_full_decode(
    session: Avp, tails: list[list[Avp]], memo: int
) -> None:
    """Answers as an EIR builds them (Session-Id first, a few constant tails), through one
    scanner whose memo holds fewer tails than there are: each answer is what decoding says."""
    scanner = AnswerScanner(max_entries=memo)
    for round_ in range(2):
        for n, tail in enumerate(tails):
            first = Avp(SESSION_ID, M, 0, session.data + f"{round_}{n}".encode())
            raw = encode_answer([first, *tail])
            assert scanner.scan(raw) == decoded(raw)


@given(st.lists(answer_avp, min_size=1, max_size=8), st.data())
def test_a_cut_or_damaged_answer_scans_as_far_as_it_decodes(
    avps: list[Avp], data: st.DataObject
) -> None:
    """Octets the AVPs do not fill as their lengths say (cut short, an octet changed): the scan
    never raises, stops at the AVP the decoder stops at, and agrees with what was decoded
    before it."""
    raw = encode_answer(avps)
    cut = data.draw(st.integers(20, len(raw)))
    damaged = raw[:cut]
    if data.draw(st.booleans()) and cut > 20:
        at = data.draw(st.integers(20, cut - 1))
        damaged = damaged[:at] + bytes([data.draw(st.integers(0, 255))]) + damaged[at + 1:]
    expected = first_of_each(decode_avps(damaged, 20, len(damaged))[0])
    assert scan_answer(damaged) == expected
    assert AnswerScanner().scan(damaged) == expected
