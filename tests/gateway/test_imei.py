"""TS 23.003 IMEI parsing: Annex B examples, forms, test/null IMEIs, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.imei import (
    Imei,
    Malformed,
    imei_from_int,
    luhn_check_digit,
    luhn_digit,
    parse_imei,
)


@pytest.mark.parametrize(
    ("body", "cd"),
    [("26053179311383", "7"), ("35209900176148", "1"), ("49015420323751", "8")],
)
def test_luhn_worked_examples(body: str, cd: str) -> None:
    # TS 23.003 Annex B example (sum 53 -> 7) and standards.md §3.
    assert luhn_check_digit(body) == cd


def test_fourteen_digits() -> None:
    imei = parse_imei("35209900176148")
    assert isinstance(imei, Imei)
    assert (imei.tac, imei.snr, imei.check_digit) == ("35209900", "176148", "1")
    assert imei.given_check_digit is None and imei.check_digit_ok
    assert imei.imei15 == "352099001761481"
    assert imei.imeisv is None


def test_fifteen_digits_good_and_bad_check_digit() -> None:
    good = parse_imei("352099001761481")
    bad = parse_imei("352099001761480")
    assert isinstance(good, Imei) and good.check_digit_ok
    assert isinstance(bad, Imei) and not bad.check_digit_ok
    assert bad.body == good.body and bad == good  # keyed on the body


def test_sixteen_digits_is_imeisv() -> None:
    imei = parse_imei("3520990017614805", sv="99")
    assert isinstance(imei, Imei)
    assert imei.body == "35209900176148" and imei.svn == "05"
    assert imei.imeisv == "3520990017614805"


def test_software_version_argument() -> None:
    imei = parse_imei("35209900176148", sv="12")
    assert isinstance(imei, Imei) and imei.imeisv == "3520990017614812"
    for sv in ("1", "123", "ab", "١٢"):
        parsed = parse_imei("35209900176148", sv=sv)
        assert isinstance(parsed, Imei) and parsed.svn is None


@pytest.mark.parametrize(
    "text",
    ["", "3520990017614", "35209900176148123", "3520990017614a", " 35209900176148",
     "35209900-76148", "٣٥٢٠٩٩٠٠١٧٦١٤٨", "+5209900176148"],
)
def test_malformed(text: str) -> None:
    assert isinstance(parse_imei(text), Malformed)


def test_null_and_test_imeis() -> None:
    null = parse_imei("00000000000000")
    assert isinstance(null, Imei) and null.is_null and null.is_test
    for rbi in ("00", "02", "05", "09"):
        parsed = parse_imei(rbi + "123456123456")
        assert isinstance(parsed, Imei) and parsed.is_test, rbi
    for rbi in ("01", "10", "35", "86", "99"):
        parsed = parse_imei(rbi + "123456123456")
        assert isinstance(parsed, Imei) and not parsed.is_test, rbi


def test_int_round_trip() -> None:
    imei = parse_imei("01234500000017")
    assert isinstance(imei, Imei)
    assert imei.as_int == 1234500000017
    assert imei_from_int(imei.as_int) == imei


@given(st.text(max_size=20), st.none() | st.text(max_size=3))
def test_any_string_parses_or_is_malformed(text: str, sv: str | None) -> None:
    result = parse_imei(text, sv)
    if isinstance(result, Imei):
        assert len(result.body) == 14 and result.body.isascii() and result.body.isdigit()
        assert text.startswith(result.body)
    else:
        assert isinstance(result, Malformed) and result.text == text and result.detail


digits = st.text(alphabet="0123456789", min_size=14, max_size=14)


@given(st.text(alphabet="0123456789", min_size=1, max_size=24))
def test_luhn_as_annex_b_states_it(body: str) -> None:
    """Against Annex B's rule digit by digit, for any length: the 4-digit group table's
    parity, groups split across the value, leading zeros."""
    total = 0
    for position, ch in enumerate(reversed(body)):  # D1 first
        d = int(ch) * (2 if position % 2 == 0 else 1)
        total += d // 10 + d % 10
    assert luhn_check_digit(body) == str((10 - total % 10) % 10)
    assert luhn_digit(int(body)) == (10 - total % 10) % 10


@given(digits)
def test_luhn_round_trip(body: str) -> None:
    full = body + luhn_check_digit(body)
    parsed = parse_imei(full)
    assert isinstance(parsed, Imei) and parsed.check_digit_ok and parsed.imei15 == full
    # Every other digit in the 15th place is detected as wrong.
    for d in "0123456789":
        if d != full[-1]:
            other = parse_imei(body + d)
            assert isinstance(other, Imei) and not other.check_digit_ok


@given(digits, st.integers(0, 13), st.integers(1, 9))
def test_luhn_detects_single_digit_errors(body: str, pos: int, delta: int) -> None:
    cd = luhn_check_digit(body)
    changed = body[:pos] + str((int(body[pos]) + delta) % 10) + body[pos + 1 :]
    assert luhn_check_digit(changed) != cd
