"""Responses of the N5g-eir service: EirResponseData and ProblemDetails (TS 29.571 §5.2.4.1)
with the application errors of TS 29.511 §6.1.7.3 and the protocol errors of TS 29.500 §5.2.7.2.

Every error body is ``application/problem+json``; the bodies that do not depend on the request
(the three statuses, unknown equipment, congestion) are encoded once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from gateway.policy import EquipmentStatus

JSON = b"application/json"
PROBLEM_JSON = b"application/problem+json"

# cause -> HTTP status. TS 29.511 Table 6.1.7.3-1 (application error) and TS 29.500
# Table 5.2.7.2-1 (protocol errors) for the ones this service answers.
CAUSE_STATUS: dict[str, int] = {
    "ERROR_EQUIPMENT_UNKNOWN": 404,  # TS 29.511 §6.1.7.3: the PEI is not known to the 5G-EIR
    "MANDATORY_QUERY_PARAM_MISSING": 400,
    "MANDATORY_QUERY_PARAM_INCORRECT": 400,
    "OPTIONAL_QUERY_PARAM_INCORRECT": 400,
    "INVALID_QUERY_PARAM": 400,
    "RESOURCE_URI_STRUCTURE_NOT_FOUND": 404,
    "NF_CONGESTION_RISK": 429,
    "SYSTEM_FAILURE": 500,
    "NF_CONGESTION": 503,
}

TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class Response(NamedTuple):
    """An HTTP response as the HTTP/2 session sends it: status, extra headers, body."""

    status: int
    content_type: bytes
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    cause: str = ""  # the ProblemDetails cause, for logs


@dataclass(frozen=True, slots=True)
class InvalidParam:
    """TS 29.571 InvalidParam: ``param`` is "query <name>" for a query parameter."""

    param: str
    reason: str


def problem(
    status: int,
    detail: str,
    cause: str = "",
    invalid_params: Iterable[InvalidParam] = (),
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Response:
    """A ProblemDetails response; ``cause`` must be one of CAUSE_STATUS with this status."""
    assert not cause or CAUSE_STATUS[cause] == status, cause
    doc: dict[str, object] = {"title": TITLES[status], "status": status, "detail": detail}
    if cause:
        doc["cause"] = cause
    params = [{"param": p.param, "reason": p.reason} for p in invalid_params]
    if params:
        doc["invalidParams"] = params
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, PROBLEM_JSON, body, headers, cause)


# 200 EirResponseData {"status": EquipmentStatus} (TS 29.511 §6.1.6.2.2), one per status.
STATUS_RESPONSES: dict[EquipmentStatus, Response] = {
    s: Response(200, JSON, json.dumps({"status": s.name}, separators=(",", ":")).encode())
    for s in EquipmentStatus
}
EQUIPMENT_UNKNOWN = problem(
    404, "the equipment is not known to the 5G-EIR", "ERROR_EQUIPMENT_UNKNOWN"
)
SYSTEM_FAILURE = problem(500, "the check could not be completed", "SYSTEM_FAILURE")
METHOD_NOT_ALLOWED = problem(
    405, "only GET is defined for this resource", headers=((b"allow", b"GET"),)
)


def congestion(status: int, retry_after: float) -> Response:
    """429 NF_CONGESTION_RISK or 503 NF_CONGESTION with Retry-After (TS 29.500 §5.2.7.2,
    RFC 9110 §10.2.3: whole seconds)."""
    cause = "NF_CONGESTION_RISK" if status == 429 else "NF_CONGESTION"
    detail = (
        "too many checks in flight on this connection"
        if status == 429
        else "the 5G-EIR is overloaded"
    )
    seconds = str(max(1, round(retry_after))).encode()
    return problem(status, detail, cause, headers=((b"retry-after", seconds),))
