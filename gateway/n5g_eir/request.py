"""The request side of GetEquipmentStatus (TS 29.511 §5.2.2.2, §6.1.3.2.3.1), sans-IO:
method and ``:path`` in, an :class:`EquipmentStatusQuery` or the error :class:`Response` out.

``GET {apiRoot}/n5g-eir-eic/v1/equipment-status?pei=..[&supi=..][&gpsi=..][&supported-features=..]``

``GET {apiRoot}/n5g-eir-eic/v1/openapi.yaml`` answers this service's OpenAPI document.

Checked in the order a client can act on: URI length (414), resource (404), method (405),
then every query parameter, all of whose problems are reported in one 400 (TS 29.500 §5.2.7.2:
``invalidParams`` with ``param`` = "query <name>"). Parameters this service does not define are
ignored, so that a consumer of a later release is served.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import NamedTuple
from urllib.parse import unquote

from gateway.n5g_eir.identities import (
    Gpsi,
    Invalid,
    Pei,
    PeiType,
    Supi,
    SupiType,
    parse_gpsi,
    parse_pei,
    parse_supi,
)
from gateway.n5g_eir.problem import METHOD_NOT_ALLOWED, InvalidParam, Response, problem

API_NAME = "n5g-eir-eic"
API_VERSION = "v1"
EQUIPMENT_STATUS_PATH = f"/{API_NAME}/{API_VERSION}/equipment-status"
# The service's own OpenAPI document (TS 29.511's schemas, as implemented), served beside it.
OPENAPI_PATH = f"/{API_NAME}/{API_VERSION}/openapi.yaml"
OPENAPI_DOCUMENT = Response(
    200, b"application/yaml", (files("gateway.n5g_eir") / "openapi.yaml").read_bytes()
)
# How the :path of nearly every request begins (an IMEI-based PEI first, as AMFs send it; else
# this API's root): Huffman decoding of a :path resumes after it (hpack.KnownPrefix).
PATH_PREFIXES = (
    f"{EQUIPMENT_STATUS_PATH}?pei=imei".encode(), f"/{API_NAME}/{API_VERSION}/".encode()
)
_PARAMS = ("pei", "supi", "gpsi", "supported-features")
# The request nearly every AMF sends: an IMEI-based PEI, then perhaps an IMSI SUPI, nothing
# escaped. Read by one match; any other request by the general reading below, which gives the
# same query for these (a property in tests/n5g_eir/test_request.py).
_USUAL = re.compile(
    re.escape(EQUIPMENT_STATUS_PATH.encode())
    + rb"\?pei=(?:imei-([0-9]{15})|imeisv-([0-9]{16}))(?:&supi=imsi-([0-9]{5,15}))?"
)
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986 §2.1: '%' begins a percent-encoded octet, two hex digits; unquote keeps any other
# '%' as it is, so 'extid-a%zz@b' was served as if it were an identifier.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class EquipmentStatusQuery(NamedTuple):  # a NamedTuple: built per request (identities.py)
    pei: Pei
    supi: Supi | None = None
    gpsi: Gpsi | None = None
    supported_features: str | None = None  # TS 29.571 SupportedFeatures; none defined for EIC


def parse_request(method: bytes, path: bytes, max_uri_bytes: int) -> EquipmentStatusQuery | Response:
    if len(path) > max_uri_bytes:
        return problem(414, f"the request URI is longer than {max_uri_bytes} bytes")
    if method == b"GET" and (usual := _USUAL.fullmatch(path)) is not None:
        imei, imeisv, imsi = usual.groups()
        pei = (Pei(PeiType.IMEI, imei.decode()) if imei is not None
               else Pei(PeiType.IMEISV, imeisv.decode()))
        return EquipmentStatusQuery(pei, None if imsi is None
                                    else Supi(SupiType.IMSI, imsi.decode()))
    try:
        target = path.decode("ascii")
    except UnicodeDecodeError:
        return problem(400, "the request URI is not ASCII (RFC 3986)", "INVALID_QUERY_PARAM")
    resource, _, query = target.partition("?")
    if resource == OPENAPI_PATH:
        return OPENAPI_DOCUMENT if method == b"GET" else METHOD_NOT_ALLOWED
    if resource != EQUIPMENT_STATUS_PATH:
        return problem(
            404, f"no resource {resource[:64]!r}; this NF serves {EQUIPMENT_STATUS_PATH}",
            "RESOURCE_URI_STRUCTURE_NOT_FOUND",
        )
    if method != b"GET":
        return METHOD_NOT_ALLOWED
    return parse_query(query)


def parse_query(query: str) -> EquipmentStatusQuery | Response:
    values: dict[str, str] = {}
    invalid: list[InvalidParam] = []
    for field in query.split("&") if query else ():
        raw_name, _, raw_value = field.partition("=")
        if "%" in field:
            try:
                if _BAD_ESCAPE.search(field) is not None:
                    raise ValueError(field)
                name = unquote(raw_name, errors="strict")
                value = unquote(raw_value, errors="strict")
            except ValueError:  # UnicodeDecodeError too
                invalid.append(InvalidParam(f"query {raw_name[:32]}",
                                            "not percent-encoded UTF-8"))
                continue
        else:  # nothing to decode: an AMF's PEI, SUPI and GPSI need no escapes
            name, value = raw_name, raw_value
        if name not in _PARAMS:
            continue
        if name in values:
            invalid.append(InvalidParam(f"query {name}", "given more than once"))
            continue
        values[name] = value
    if "pei" not in values:
        if any(p.param == "query pei" for p in invalid):
            return _bad("INVALID_QUERY_PARAM", invalid)
        invalid.insert(0, InvalidParam("query pei", "the PEI is mandatory"))
        return _bad("MANDATORY_QUERY_PARAM_MISSING", invalid)
    pei = parse_pei(values["pei"])
    supi = gpsi = None
    mandatory_wrong = isinstance(pei, Invalid)
    if isinstance(pei, Invalid):
        invalid.insert(0, InvalidParam("query pei", pei.reason))
    if "supi" in values:
        supi = parse_supi(values["supi"])
        if isinstance(supi, Invalid):
            invalid.append(InvalidParam("query supi", supi.reason))
    if "gpsi" in values:
        gpsi = parse_gpsi(values["gpsi"])
        if isinstance(gpsi, Invalid):
            invalid.append(InvalidParam("query gpsi", gpsi.reason))
    features = values.get("supported-features")
    if features is not None and not _HEX.issuperset(features):
        invalid.append(InvalidParam("query supported-features", "not a hexadecimal string"))
    if invalid:
        if mandatory_wrong:
            return _bad("MANDATORY_QUERY_PARAM_INCORRECT", invalid)
        duplicate = any(p.reason == "given more than once" for p in invalid)
        return _bad("INVALID_QUERY_PARAM" if duplicate else "OPTIONAL_QUERY_PARAM_INCORRECT",
                    invalid)
    assert not isinstance(pei, Invalid)
    assert not isinstance(supi, Invalid) and not isinstance(gpsi, Invalid)
    return EquipmentStatusQuery(pei, supi, gpsi, features)


def _bad(cause: str, invalid: list[InvalidParam]) -> Response:
    detail = "; ".join(f"{p.param}: {p.reason}" for p in invalid)
    return problem(400, detail, cause, invalid)
