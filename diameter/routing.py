"""Whether a request in the open state may reach its application (RFC 6733 §6.1, §7.1).

The checks run in this order and the first failure is answered: header bits (3008), unknown
command (3001), application not ours or not negotiated with the peer (3007), command without a
handler (3001), structural problem found by the codec (5014, 5015, ...), Destination-Host not us
(3002), Destination-Realm not served (3003), then the command's grammar (validate.check_request).
"""

from __future__ import annotations

from diameter.application import Application
from diameter.codec import Avp, Message, Problem, identity_lower
from diameter.dictionary import DICTIONARY, AvpDef, CommandDef
from diameter.dictionary.base_rfc6733 import (
    COMMON_APPLICATION_ID,
    RELAY_APPLICATION_ID,
    ResultCode,
)
from diameter.errors import DecodeError
from diameter.node import Node
from diameter.validate import check_avps, check_header

DESTINATION_REALM, DESTINATION_HOST = 283, 293


def first_problem(
    message: Message,
    node: Node,
    common: frozenset[int],
    deviations: list[AvpDef] | None = None,
) -> tuple[Problem | None, Application | None, CommandDef | None]:
    """The first reason not to hand ``message`` to its application, with the application and
    command found on the way (the application gives the error answer its body). With
    ``deviations``, M bits set against the rules are collected there (validate.check_avps)."""
    code, app_id = message.command_code, message.application_id
    app = node.applications.get(app_id)
    command = DICTIONARY.command(app_id, code)
    problem = check_header(message, command)
    if problem is not None:
        return problem, app, command
    if app_id != COMMON_APPLICATION_ID and (
        app is None or (app_id not in common and RELAY_APPLICATION_ID not in common)
    ):
        # RFC 6733 §7.1.3: 3007 DIAMETER_APPLICATION_UNSUPPORTED.
        problem = _problem(ResultCode.DIAMETER_APPLICATION_UNSUPPORTED, f"application {app_id}")
        return problem, app, None
    if app is None or command is None or code not in app.handlers:
        # RFC 6733 §7.1.3: 3001 DIAMETER_COMMAND_UNSUPPORTED (an application we serve, or the
        # common application 0, with a command we do not).
        return _problem(ResultCode.DIAMETER_COMMAND_UNSUPPORTED, f"command {code}"), app, None
    if message.problem is not None:
        return message.problem, app, command
    # Both Destination AVPs in one pass over the AVPs (the first of each counts, as with find).
    host_avp = realm_avp = None
    for avp in message.avps:
        code = avp.code
        if code == DESTINATION_REALM or code == DESTINATION_HOST:
            if avp.vendor:
                continue
            if code == DESTINATION_REALM:
                if realm_avp is None:
                    realm_avp = avp
            elif host_avp is None:
                host_avp = avp
    destination_host = _identity(host_avp)
    if destination_host is not None and destination_host != node.identity.origin_host.lower():
        # RFC 6733 §6.1.4: not for us, and we do not relay: 3002 DIAMETER_UNABLE_TO_DELIVER.
        text = f"Destination-Host {destination_host}"
        return _problem(ResultCode.DIAMETER_UNABLE_TO_DELIVER, text), app, command
    destination_realm = _identity(realm_avp)
    if destination_realm is not None and destination_realm not in node.served_realms:
        # RFC 6733 §6.1.4: 3003 DIAMETER_REALM_NOT_SERVED.
        text = f"Destination-Realm {destination_realm}"
        return _problem(ResultCode.DIAMETER_REALM_NOT_SERVED, text), app, command
    # check_request without its first two checks, done above (problem, header bits).
    max_avps = node.settings.max_avps
    problem = check_avps(message.avps, command.request, DICTIONARY, (), deviations, max_avps)
    return problem, app, command


def _problem(result_code: int, text: str) -> Problem:
    return Problem(result_code, None, text)


def _identity(avp: Avp | None) -> str | None:
    if avp is None:
        return None
    try:
        return identity_lower(avp.data)  # Destination-Host/-Realm are DiameterIdentity
    except DecodeError:
        return None  # check_request reports it with its own result code
