"""Building answers to received requests (RFC 6733 §6.2, §7.2, §7.5).

Every answer: same Hop-by-Hop and End-to-End, the request's P bit, Session-Id copied first,
Origin-Host/Origin-Realm ours, Result-Code, every Proxy-Info copied in order, no Destination-*.
3xxx protocol errors set the E bit and follow the generic answer-message CCF (§7.2).
"""

from __future__ import annotations

from collections.abc import Iterable

from diameter.codec import FLAG_ERROR, FLAG_PROXIABLE, Avp, Message, Problem
from diameter.settings import LocalIdentity

SESSION_ID = 263
PROXY_INFO = 284


def is_protocol_error(result_code: int) -> bool:
    """RFC 6733 §7.1.3: 3xxx answers carry the E bit."""
    return 3000 <= result_code < 4000


def answer_to(
    request: Message,
    identity: LocalIdentity,
    result_code: int | None,
    *,
    body: Iterable[Avp] = (),
    error_message: str | None = None,
    failed_avp: Avp | None = None,
    error_reporting_host: str | None = None,
) -> Message:
    """An answer to ``request``. ``body`` holds the command-specific AVPs (e.g. Auth-Session-State);
    for 3xxx answers it is ignored, since the answer-message CCF carries none of them."""
    flags = request.flags & FLAG_PROXIABLE
    avps: list[Avp] = []
    session_id = request.find(SESSION_ID)
    if session_id is not None:
        avps.append(session_id)
    protocol_error = result_code is not None and is_protocol_error(result_code)
    if protocol_error:
        flags |= FLAG_ERROR
    else:
        avps.extend(body)
    if result_code is not None:
        avps.append(Avp.new("Result-Code", result_code))
    avps.append(Avp.new("Origin-Host", identity.origin_host))
    avps.append(Avp.new("Origin-Realm", identity.origin_realm))
    if error_message:
        avps.append(Avp.new("Error-Message", error_message))
    if error_reporting_host:
        avps.append(Avp.new("Error-Reporting-Host", error_reporting_host))
    if failed_avp is not None:
        avps.append(Avp.new("Failed-AVP", [failed_avp]))
    avps.extend(request.find_all(PROXY_INFO))
    return Message(
        request.command_code,
        request.application_id,
        flags,
        request.hop_by_hop,
        request.end_to_end,
        avps,
    )


def error_answer(
    request: Message, identity: LocalIdentity, problem: Problem, body: Iterable[Avp] = ()
) -> Message:
    """The answer a ``Problem`` found in ``request`` calls for (RFC 6733 §7.1, §7.5)."""
    return answer_to(
        request,
        identity,
        problem.result_code,
        body=body,
        error_message=problem.error_message,
        failed_avp=problem.failed_avp,
    )
