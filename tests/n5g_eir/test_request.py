"""GetEquipmentStatus request parsing (TS 29.511 §6.1.3.2.3.1, TS 29.500 §5.2.7.2), sans-IO."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.n5g_eir.identities import Gpsi, GpsiType, Pei, PeiType, Supi, SupiType
from gateway.n5g_eir.problem import Response
from gateway.n5g_eir.request import (
    EQUIPMENT_STATUS_PATH,
    EquipmentStatusQuery,
    parse_query,
    parse_request,
)

PATH = EQUIPMENT_STATUS_PATH
PEI = "imei-352099001761481"


def get(query: str, method: bytes = b"GET", path: str = PATH) -> EquipmentStatusQuery | Response:
    target = f"{path}?{query}" if query else path
    return parse_request(method, target.encode(), 4096)


def problem_of(result: EquipmentStatusQuery | Response) -> dict[str, Any]:
    assert isinstance(result, Response), result
    assert result.content_type == b"application/problem+json"
    doc = json.loads(result.body)
    assert doc["status"] == result.status
    return doc


def test_all_parameters() -> None:
    query = get(f"pei={PEI}&supi=imsi-001010000000001&gpsi=msisdn-491711234567"
                "&supported-features=0a")
    assert query == EquipmentStatusQuery(
        Pei(PeiType.IMEI, "352099001761481"),
        Supi(SupiType.IMSI, "001010000000001"),
        Gpsi(GpsiType.MSISDN, "491711234567"),
        "0a",
    )


def test_percent_encoding_and_unknown_parameters() -> None:
    query = get("pei=imei%2D352099001761481&supi=nai-a%40b.example&future-param=1")
    assert isinstance(query, EquipmentStatusQuery)
    assert query.pei.value == "352099001761481"
    assert query.supi == Supi(SupiType.NAI, "a@b.example")


@pytest.mark.parametrize(
    ("query", "cause", "params"),
    [
        ("", "MANDATORY_QUERY_PARAM_MISSING", ["query pei"]),
        ("supi=imsi-001010000000001", "MANDATORY_QUERY_PARAM_MISSING", ["query pei"]),
        ("pei=imei-1", "MANDATORY_QUERY_PARAM_INCORRECT", ["query pei"]),
        ("pei=imei-1&supi=imsi-1", "MANDATORY_QUERY_PARAM_INCORRECT", ["query pei", "query supi"]),
        (f"pei={PEI}&supi=imsi-12", "OPTIONAL_QUERY_PARAM_INCORRECT", ["query supi"]),
        (f"pei={PEI}&gpsi=tel-1", "OPTIONAL_QUERY_PARAM_INCORRECT", ["query gpsi"]),
        (f"pei={PEI}&supported-features=xyz", "OPTIONAL_QUERY_PARAM_INCORRECT",
         ["query supported-features"]),
        (f"pei={PEI}&pei={PEI}", "INVALID_QUERY_PARAM", ["query pei"]),
        ("pei=imei-%FF", "INVALID_QUERY_PARAM", ["query pei"]),
        # RFC 3986 §2.1: '%' and two hex digits; others were kept as text (and served 200).
        ("pei=imei-%zz2099001761481", "INVALID_QUERY_PARAM", ["query pei"]),
        (f"pei={PEI}&gpsi=extid-a%zz@b", "OPTIONAL_QUERY_PARAM_INCORRECT", ["query gpsi"]),
        (f"pei={PEI}&supi=nai-a%4", "OPTIONAL_QUERY_PARAM_INCORRECT", ["query supi"]),
        (f"pei={PEI}&x%=1", "OPTIONAL_QUERY_PARAM_INCORRECT", ["query x%"]),
    ],
)
def test_bad_queries_are_400_with_invalid_params(query: str, cause: str, params: list[str]) -> None:
    doc = problem_of(get(query))
    assert doc["status"] == 400 and doc["cause"] == cause
    assert [p["param"] for p in doc["invalidParams"]] == params
    assert all(p["reason"] for p in doc["invalidParams"])


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS"])
def test_only_get(method: bytes) -> None:
    result = get(f"pei={PEI}", method)
    assert isinstance(result, Response) and result.status == 405
    assert (b"allow", b"GET") in result.headers
    problem_of(result)


@pytest.mark.parametrize("path", ["/", "/n5g-eir-eic/v1", "/n5g-eir-eic/v2/equipment-status",
                                  PATH + "/", PATH + "x"])
def test_other_resources_are_404_not_equipment_unknown(path: str) -> None:
    doc = problem_of(get(f"pei={PEI}", path=path))
    assert doc["status"] == 404 and doc["cause"] == "RESOURCE_URI_STRUCTURE_NOT_FOUND"


def test_uri_too_long_is_414() -> None:
    result = parse_request(b"GET", f"{PATH}?pei={PEI}&x={'a' * 5000}".encode(), 4096)
    doc = problem_of(result)
    assert doc["status"] == 414


def test_non_ascii_target() -> None:
    doc = problem_of(parse_request(b"GET", PATH.encode() + b"?pei=\xff", 4096))
    assert doc["status"] == 400


@given(st.binary(max_size=200), st.sampled_from([b"GET", b"POST", b"FOO"]))
def test_any_target_gets_a_query_or_a_problem(raw: bytes, method: bytes) -> None:
    result = parse_request(method, PATH.encode() + b"?" + raw, 4096)
    if isinstance(result, Response):
        problem_of(result)
    else:
        assert isinstance(result, EquipmentStatusQuery)


def _digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).flatmap(
        lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n))


_queries = st.builds(
    lambda kind, pei, supi, extra: f"pei={kind}{pei}{supi}{extra}",
    st.sampled_from(["imei-", "imeisv-", "imei", "IMEI-", "mac-", "imei%2D"]),
    st.one_of(_digits(13, 17), st.text(alphabet="0123456789a-%", max_size=18)),
    st.one_of(st.just(""), _digits(4, 16).map(lambda d: f"&supi=imsi-{d}"),
              st.sampled_from(["&supi=nai-a@b", "&supi=imsi-", "&supi=", "&pei=imei-1"])),
    st.sampled_from(["", "", "", "&", "&gpsi=msisdn-4917", "&x=1", "&supi=imsi-00101"]),
)


@settings(max_examples=400)
@given(_queries)
@example("pei=imei-" + "3" * 14)
@example("pei=imei-" + "3" * 16)
@example("pei=imeisv-" + "3" * 15)
@example("pei=imeisv-" + "3" * 17)
@example("pei=imei-" + "3" * 15 + "&supi=imsi-" + "1" * 4)
@example("pei=imei-" + "3" * 15 + "&supi=imsi-" + "1" * 16)
def test_the_usual_request_reads_as_the_general_reading(query: str) -> None:
    """An AMF's usual GET (IMEI-based PEI, IMSI SUPI) is read by one match: it must give what
    the general query parser gives, for it and for everything near it."""
    assert get(query) == parse_query(query)
