"""IMEI file parser, generator mix and expectations, request templates, answer scanning."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID
from gateway.config import load_config
from gateway.imei import luhn_check_digit, parse_imei
from gateway.simulator.traffic import (
    CATEGORIES,
    AnswerScanner,
    Check,
    GatewayData,
    ImeiFileError,
    ImeiGenerator,
    RequestFactory,
    RequestIdentity,
    outcome_of,
    parse_expected,
    parse_mix,
    read_imei_file,
    scan_answer,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imeis.txt"
    path.write_text(text, encoding="utf-8")
    return path


# -- IMEI file -------------------------------------------------------------------------------


def test_imei_file_csv_and_whitespace_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "imei,imsi,sv,expected\n"
        "# a comment\n"
        "\n"
        "352099001761481,001010000000001,07,BLACKLISTED\n"
        "35209900000000,,,0\n"
        "35209900000000 - 12 greylisted\n"
        "12345\n"
        "490154203237518   001019876543210\n"
        "35332011150007,,,5422\n",
    )
    checks = read_imei_file(path)
    assert checks == [
        Check("352099001761481", "001010000000001", "07", "BLACKLISTED"),
        Check("35209900000000", None, None, "WHITELISTED"),
        Check("35209900000000", None, "12", "GREYLISTED"),
        Check("12345"),
        Check("490154203237518", "001019876543210"),
        Check("35332011150007", None, None, "EQUIPMENT_UNKNOWN"),
    ]
    assert [c.line for c in checks] == [4, 5, 6, 7, 8, 9]  # for the mismatch report


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("35209900000000,12ab,,", "IMSI"),
        ("35209900000000,,7,", "Software-Version"),
        ("35209900000000,,,PURPLE", "expected status"),
        ("35209900000000 1 2 3 4", "5 fields"),
        (",001010000000001", "no IMEI"),
        ("3" * 40, "printable ASCII"),
    ],
)
def test_imei_file_bad_line_is_named(tmp_path: Path, line: str, problem: str) -> None:
    path = _write(tmp_path, f"35209900000000\n# comment\n{line}\n35209900000001\n")
    with pytest.raises(ImeiFileError) as info:
        read_imei_file(path)
    message = str(info.value)
    assert f"{path}:3:" in message
    assert problem in message


def test_imei_file_empty_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ImeiFileError, match="no IMEIs"):
        read_imei_file(_write(tmp_path, "# nothing\n\n"))
    with pytest.raises(ImeiFileError, match="cannot read"):
        read_imei_file(tmp_path / "absent.txt")


def test_parse_expected_and_mix() -> None:
    assert [parse_expected(v) for v in ("0", "1", "2", "5422", "whitelisted")] == [
        "WHITELISTED",
        "BLACKLISTED",
        "GREYLISTED",
        "EQUIPMENT_UNKNOWN",
        "WHITELISTED",
    ]
    with pytest.raises(ValueError):
        parse_expected("3")
    assert parse_mix("valid=3, listed=1") == dict.fromkeys(CATEGORIES, 0) | {"valid": 3, "listed": 1}
    for bad in ("valid", "bogus=1", "valid=x", "valid=-1", "valid=0"):
        with pytest.raises(ValueError):
            parse_mix(bad)


# -- generator -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator_parts() -> tuple[GatewayData, object]:
    config = load_config()
    return GatewayData.from_config(config), config.policy


def _generator(parts: tuple[GatewayData, object], **kwargs: object) -> ImeiGenerator:
    data, policy = parts
    return ImeiGenerator(data, policy, **kwargs)  # type: ignore[arg-type]


def test_generator_mix_proportions(generator_parts: tuple[GatewayData, object]) -> None:
    mix = {"valid": 50, "bad_check_digit": 10, "malformed": 10, "unknown_tac": 20, "listed": 10}
    checks = _generator(generator_parts, mix=mix, seed=7).take(5000)
    seen = Counter(c.category for c in checks)
    for category, weight in mix.items():
        share = seen[category] / len(checks)
        assert abs(share - weight / 100) < 0.03, (category, share)


def test_generator_categories_and_default_answers(
    generator_parts: tuple[GatewayData, object],
) -> None:
    """What each category looks like and what the embedded default config answers for it."""
    gen = _generator(generator_parts, seed=3, imsi=True)
    data = generator_parts[0]
    for _ in range(200):
        valid = gen.make("valid")
        parsed = parse_imei(valid.imei)
        assert not isinstance(parsed, type(None)) and hasattr(parsed, "body")
        assert valid.imei[:8] in data.tacs and len(valid.imei) in (14, 15)
        if len(valid.imei) == 15:
            assert valid.imei[14] == luhn_check_digit(valid.imei[:14])
        assert valid.expected == "WHITELISTED"
        assert valid.imsi is not None and len(valid.imsi) == 15

        bad = gen.make("bad_check_digit")
        assert len(bad.imei) == 15 and bad.imei[14] != luhn_check_digit(bad.imei[:14])
        assert bad.expected == "BLACKLISTED"

        malformed = gen.make("malformed")
        assert len(malformed.imei) not in (14, 15, 16) or not malformed.imei.isdigit()
        assert malformed.expected == "BLACKLISTED"

        unknown = gen.make("unknown_tac")
        assert unknown.imei[:8] not in data.tacs and unknown.imei[:2] not in ("00", "02")
        assert unknown.expected == "GREYLISTED"

    listed = [gen.make("listed") for _ in range(400)]
    by_imei = {c.imei[:14]: c.expected for c in listed}
    # config/lists-sample.csv: black IMEI, grey range, white IMEI, white pair (with its IMSI)
    assert by_imei.get("35693803564380") == "BLACKLISTED"
    assert by_imei.get("49015420323751") == "WHITELISTED"
    assert by_imei.get("01234500000017") == "WHITELISTED"
    assert any(c.imei.startswith("35000001") and c.expected == "BLACKLISTED" for c in listed)
    assert any(
        c.imei.startswith("3533201190") and c.expected == "GREYLISTED" for c in listed
    )
    pair = next(c for c in listed if c.imei.startswith("01234500000017"))
    assert pair.imsi == "001010000000001"


def test_generator_is_deterministic(generator_parts: tuple[GatewayData, object]) -> None:
    a = _generator(generator_parts, seed=11).take(100)
    b = _generator(generator_parts, seed=11).take(100)
    c = _generator(generator_parts, seed=12).take(100)
    assert a == b and a != c


def test_generator_follows_the_policy(generator_parts: tuple[GatewayData, object]) -> None:
    """Monitor mode answers WHITELISTED for everything (DESIGN.md §4): so does the generator."""
    data = generator_parts[0]
    config = load_config(env={"EIR_POLICY_MONITOR_MODE": "true"})
    checks = ImeiGenerator(data, config.policy, seed=5).take(300)
    assert {c.expected for c in checks} == {"WHITELISTED"}


# -- templates and answers -------------------------------------------------------------------


def test_template_patching_matches_a_codec_encoding() -> None:
    identity = RequestIdentity("mme7.sim.local", "sim.local", "localdomain", "eir.localdomain", 42)
    factory = RequestFactory(identity)
    prepared = factory.prepare(Check("352099001761481", "001010000000001", "07"))
    raw = bytes(RequestFactory.build(prepared, 0xDEADBEEF, 123))
    message = decode_message(raw)
    assert message.problem is None
    assert message.command_code == 324 and message.application_id == S13_APPLICATION_ID
    assert message.is_request and message.is_proxiable
    assert message.end_to_end == 0xDEADBEEF
    assert message.avps[0].code == 263  # Session-Id first (TS 29.272 §7.2.19)
    assert message.get("Session-Id") == "mme7.sim.local;42;0000000123"
    assert message.get("Origin-Host") == "mme7.sim.local"
    assert message.get("Destination-Realm") == "localdomain"
    assert message.get("Destination-Host") == "eir.localdomain"
    assert message.get("User-Name") == "001010000000001"
    assert message.get("Auth-Session-State") == 1
    terminal = message.find(1401, 10415)
    assert terminal is not None
    imei = terminal.find(1402, 10415)
    sv = terminal.find(1403, 10415)
    assert imei is not None and imei.value == "352099001761481"
    assert sv is not None and sv.value == "07"
    # A second request of the same shape reuses the template with other values.
    other = factory.prepare(Check("490154203237518"))
    raw2 = decode_message(bytes(RequestFactory.build(other, 1, 9_999_999_999 % 2**32)))
    assert raw2.find(1401, 10415).find(1402, 10415).value == "490154203237518"  # type: ignore[union-attr]
    assert raw2.get("User-Name") is None


def _answer(*avps: Avp) -> bytes:
    return Message(324, S13_APPLICATION_ID, 0x40, 1, 2, list(avps)).encode()


def test_scan_answer_and_outcome() -> None:
    session = Avp.new("Session-Id", "mme1.sim.local;1;0000000001")
    ok = _answer(session, Avp.new("Result-Code", 2001), Avp.new("Equipment-Status", 2))
    assert scan_answer(ok) == (b"mme1.sim.local;1;0000000001", 2001, None, 2)
    assert outcome_of(2001, None, 2) == "GREYLISTED"
    unknown = _answer(
        session,
        Avp.new(
            "Experimental-Result",
            [Avp.new("Vendor-Id", 10415), Avp.new("Experimental-Result-Code", 5422)],
        ),
    )
    assert scan_answer(unknown) == (b"mme1.sim.local;1;0000000001", None, 5422, None)
    assert outcome_of(None, 5422, None) == "EQUIPMENT_UNKNOWN"
    error = _answer(session, Avp.new("Result-Code", 5005))
    assert outcome_of(*scan_answer(error)[1:]) == "RESULT_5005"
    assert outcome_of(2001, None, None) == "RESULT_2001"
    # A truncated last AVP ends the scan without raising.
    assert scan_answer(ok[:-3])[1] == 2001


def test_answer_scanner_memo_gives_the_same_results() -> None:
    scanner = AnswerScanner(max_entries=2)
    tail = [Avp.new("Result-Code", 2001), Avp.new("Equipment-Status", 1)]
    answers = [
        _answer(Avp.new("Session-Id", f"mme1.sim.local;1;{i:010d}{'x' * (i % 4)}"), *tail)
        for i in range(6)
    ]
    answers.append(_answer(Avp.new("Result-Code", 2001), Avp.new("Session-Id", "late;1;1")))
    answers.append(_answer(Avp.new("Session-Id", "a;1;1"), Avp.new("Result-Code", 3002)))
    answers.append(_answer(Avp.new("Session-Id", "b;1;1"), Avp.new("Result-Code", 5012)))
    for raw in answers * 2:  # the second pass answers from the memo (or past its bound)
        assert scanner.scan(raw) == scan_answer(raw)
    assert scanner.scan(answers[0])[0] == b"mme1.sim.local;1;0000000000"
