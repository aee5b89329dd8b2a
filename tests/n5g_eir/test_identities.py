"""PEI, SUPI and GPSI parsing (TS 29.571): table-driven cases and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.imei import luhn_check_digit, parse_imei
from gateway.n5g_eir.identities import (
    Gpsi,
    GpsiType,
    Invalid,
    Pei,
    PeiType,
    Supi,
    SupiType,
    parse_gpsi,
    parse_pei,
    parse_supi,
)

BODY = "35209900176148"  # TS 23.003 Annex B example: check digit 1


@pytest.mark.parametrize(
    ("text", "imei", "sv"),
    [
        (f"imei-{BODY}1", BODY, None),  # right check digit: the 14-digit S13 key
        (f"imei-{BODY}7", f"{BODY}7", None),  # wrong: all 15 go on, for bad_check_digit
        (f"imeisv-{BODY}05", BODY, "05"),
        ("imei-260531793113837", "26053179311383", None),  # Annex B worked example, CD 7
    ],
)
def test_imei_peis_reduce_to_what_s13_carries(text: str, imei: str, sv: str | None) -> None:
    pei = parse_pei(text)
    assert isinstance(pei, Pei) and pei.has_imei
    assert pei.imei_and_sv == (imei, sv)


@pytest.mark.parametrize(
    ("text", "kind", "value", "untrusted"),
    [
        ("mac-00-11-22-AA-bb-cc", PeiType.MAC, "00-11-22-aa-bb-cc", False),
        ("mac-00-11-22-33-44-55-untrusted", PeiType.MAC, "00-11-22-33-44-55", True),
        ("eui-00-11-22-33-44-55-66-77", PeiType.EUI, "00-11-22-33-44-55-66-77", False),
    ],
)
def test_peis_without_imei(text: str, kind: PeiType, value: str, untrusted: bool) -> None:
    assert parse_pei(text) == Pei(kind, value, untrusted)
    assert not Pei(kind, value, untrusted).has_imei


@pytest.mark.parametrize(
    "text",
    [
        "", "imei", "imei-", f"imei-{BODY}", f"imei-{BODY}12", f"imeisv-{BODY}1",
        f"imeisv-{BODY}123", "imei-35209900176148x", "imei-" + "\uff13" * 15,  # fullwidth digits
        "IMEI-352099001761481", "mac-00-11-22-33-44", "mac-00-11-22-33-44-5g",
        "mac-00-11-22-33-44-55-trusted", "eui-00-11-22-33-44-55-66", "meid-A0000000000000",
        "352099001761481",
    ],
)
def test_malformed_peis_say_why(text: str) -> None:
    result = parse_pei(text)
    assert isinstance(result, Invalid) and result.reason


def test_supi() -> None:
    assert parse_supi("imsi-001010000000001") == Supi(SupiType.IMSI, "001010000000001")
    assert Supi(SupiType.IMSI, "001010000000001").imsi == "001010000000001"
    nai = parse_supi("nai-user@realm.example")
    assert nai == Supi(SupiType.NAI, "user@realm.example") and nai.imsi is None
    assert parse_supi("gli-abc") == Supi(SupiType.GLI, "abc")
    for bad in ("imsi-1234", "imsi-1234567890123456", "imsi-00101000000000x", "nai-", "suci-0-1",
                "imsi"):
        assert isinstance(parse_supi(bad), Invalid), bad


def test_gpsi_and_its_mask() -> None:
    msisdn = parse_gpsi("msisdn-491711234567")
    assert msisdn == Gpsi(GpsiType.MSISDN, "491711234567")
    assert msisdn.masked() == "msisdn-491*********"
    ext = parse_gpsi("extid-someone@iot.example")
    assert isinstance(ext, Gpsi) and ext.masked() == "extid-*******@iot.example"
    for bad in ("msisdn-1234", "msisdn-12345x", "extid-nobody", "extid-a@b@c", "tel-123456"):
        assert isinstance(parse_gpsi(bad), Invalid), bad


digits = st.text(alphabet="0123456789", min_size=14, max_size=14)
svns = st.text(alphabet="0123456789", min_size=2, max_size=2)


@given(digits, svns)
def test_imeisv_pei_is_the_s13_imei_and_software_version(body: str, svn: str) -> None:
    pei = parse_pei(f"imeisv-{body}{svn}")
    assert isinstance(pei, Pei)
    imei, sv = pei.imei_and_sv
    assert (imei, sv) == (body, svn)
    # The classifier parses it to the same key an S13 IMEI AVP with that body gives.
    parsed = parse_imei(imei, sv)
    assert parsed == parse_imei(body) and getattr(parsed, "svn", None) == svn


@given(digits, st.integers(0, 9))
def test_imei_pei_check_digit(body: str, digit: int) -> None:
    pei = parse_pei(f"imei-{body}{digit}")
    assert isinstance(pei, Pei)
    imei, sv = pei.imei_and_sv
    assert sv is None
    parsed = parse_imei(imei)
    assert parsed == parse_imei(body)
    assert getattr(parsed, "check_digit_ok", None) is (str(digit) == luhn_check_digit(body))


@given(st.text(max_size=40))
def test_any_text_parses_or_is_invalid_never_raises(text: str) -> None:
    for parse in (parse_pei, parse_supi, parse_gpsi):
        result = parse(text)
        assert isinstance(result, (Invalid, Pei, Supi, Gpsi))
