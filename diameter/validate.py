"""Dictionary-driven validation of received messages (RFC 6733 §3.2 CCFs, §4.1 flags, §7.1 codes).

``check_request`` walks a message once against its command's grammar and returns the first
``Problem`` (RFC 6733 §7.1: "only the first error encountered" is reported) or None.
"""

from __future__ import annotations

from diameter.codec import (
    AVP_FLAG_MANDATORY,
    AVP_FLAGS_RESERVED,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    Avp,
    Message,
    Problem,
    decode_value,
)
from diameter.dictionary import DICTIONARY, AvpType, CommandDef, Dictionary, FlagRule, Grammar
from diameter.dictionary.base_rfc6733 import EXACTLY_ONE_OF, ResultCode
from diameter.errors import DecodeError


def _key(name: str) -> tuple[int, int]:
    defn = DICTIONARY.avp(name)
    return (defn.code, defn.vendor)


_ONE_OF = {_key(name): tuple(_key(n) for n in names) for name, names in EXACTLY_ONE_OF.items()}

# Grouped AVPs nested deeper than this are refused with 5012 instead of being walked: the RFC sets
# no limit, but an 8-octet-per-level chain of Failed-AVPs would otherwise exhaust the stack.
MAX_GROUPED_DEPTH = 16


def check_header(message: Message, command: CommandDef | None) -> Problem | None:
    """RFC 6733 §3: header bits a request may not carry (3008 DIAMETER_INVALID_HDR_BITS)."""
    flags = message.flags
    if flags & FLAG_REQUEST and flags & FLAG_ERROR:
        return Problem(ResultCode.DIAMETER_INVALID_HDR_BITS, None, "E bit set in a request")
    if command is not None and not command.proxiable and flags & FLAG_PROXIABLE:
        return Problem(
            ResultCode.DIAMETER_INVALID_HDR_BITS, None, f"P bit set on {command.request_abbrev}"
        )
    return None


def check_request(
    message: Message, command: CommandDef, dictionary: Dictionary = DICTIONARY
) -> Problem | None:
    """First problem of a request against its command's CCF, or None when it is well formed."""
    if message.problem is not None:
        return message.problem
    problem = check_header(message, command)
    if problem is not None:
        return problem
    return check_avps(message.avps, command.request, dictionary, ())


def check_avps(
    avps: list[Avp], grammar: Grammar, dictionary: Dictionary, parents: tuple[Avp, ...]
) -> Problem | None:
    counts = [0] * len(grammar.rules)
    index = grammar.index
    rules = grammar.rules
    known = dictionary.avps
    for position, avp in enumerate(avps):
        if avp.flags & AVP_FLAGS_RESERVED:
            # RFC 6733 §4.1: "an unrecognized bit SHOULD be considered an error".
            return _fail(
                ResultCode.DIAMETER_INVALID_AVP_BITS, avp, parents, "reserved AVP flag set"
            )
        defn = known.get((avp.code, avp.vendor))
        if defn is None:
            if avp.flags & AVP_FLAG_MANDATORY:
                # RFC 6733 §4.1 M bit: an unrecognised mandatory AVP rejects the message.
                return _fail(ResultCode.DIAMETER_AVP_UNSUPPORTED, avp, parents, "unknown M-bit AVP")
            continue  # unknown, not mandatory: ignored
        if defn.m_rule is FlagRule.MUST_NOT and avp.flags & AVP_FLAG_MANDATORY:
            return _fail(
                ResultCode.DIAMETER_INVALID_AVP_BIT_COMBO,
                avp,
                parents,
                f"M bit set on {defn.name}, which must not have it",
            )
        i = index.get((avp.code, avp.vendor))
        if i is None:
            if not grammar.extensible:
                return _fail(
                    ResultCode.DIAMETER_AVP_NOT_ALLOWED,
                    avp,
                    parents,
                    f"{defn.name} not allowed here",
                )
        else:
            rule = rules[i]
            counts[i] += 1
            if rule.max is not None and counts[i] > rule.max:
                return _fail(
                    ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
                    avp,
                    parents,
                    f"{defn.name} occurs more than {rule.max} time(s)",
                )
            if rule.kind.value == "<>" and position != i:
                # RFC 6733 §3.2: a fixed AVP sits at its position (Session-Id first).
                return _fail(
                    ResultCode.DIAMETER_AVP_NOT_ALLOWED,
                    avp,
                    parents,
                    f"{defn.name} out of its fixed position",
                )
        if defn.type is AvpType.GROUPED:
            problem = _check_grouped(avp, defn.grammar, dictionary, parents)
            if problem is not None:
                return problem
        elif defn.enum_values is not None:
            try:
                value = decode_value(defn.type, avp.data)
            except DecodeError as exc:
                return _fail(exc.result_code, avp, parents, str(exc))
            if avp.flags & AVP_FLAG_MANDATORY and value not in defn.enum_values:
                return _fail(
                    ResultCode.DIAMETER_INVALID_AVP_VALUE,
                    avp,
                    parents,
                    f"{defn.name} value {value} unknown",
                )
        else:
            try:
                decode_value(defn.type, avp.data)
            except DecodeError as exc:
                return _fail(exc.result_code, avp, parents, str(exc))
    for i, rule in enumerate(rules):
        if counts[i] < rule.min:
            defn = dictionary.avps[grammar.keys[i]]
            return _fail(
                ResultCode.DIAMETER_MISSING_AVP,
                Avp.zero_filled(defn),
                parents,
                f"{defn.name} missing",
            )
    return None


def _check_grouped(
    avp: Avp, grammar: Grammar | None, dictionary: Dictionary, parents: tuple[Avp, ...]
) -> Problem | None:
    try:
        children = avp.children
    except DecodeError as exc:
        return _fail(exc.result_code, avp, parents, str(exc))
    if grammar is None:
        return None
    if len(parents) >= MAX_GROUPED_DEPTH:
        return Problem(
            ResultCode.DIAMETER_UNABLE_TO_COMPLY,
            None,
            f"Grouped AVPs nested deeper than {MAX_GROUPED_DEPTH} levels",
        )
    problem = check_avps(children, grammar, dictionary, (*parents, avp))
    if problem is not None:
        return problem
    alternatives = _ONE_OF.get((avp.code, avp.vendor))
    if alternatives is not None:
        present = [c for c in children if (c.code, c.vendor) in alternatives]
        if len(present) > 1:
            return _fail(
                ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
                present[1],
                (*parents, avp),
                "both ids",
            )
        if not present:
            defn = dictionary.avps[alternatives[0]]
            return _fail(
                ResultCode.DIAMETER_MISSING_AVP, Avp.zero_filled(defn), (*parents, avp), "no id"
            )
    return None


def _fail(code: int, offender: Avp, parents: tuple[Avp, ...], text: str) -> Problem:
    """RFC 6733 §7.5: the offending AVP, shown inside copies of its Grouped parents."""
    failed = offender
    for parent in reversed(parents):
        failed = Avp(parent.code, parent.flags, parent.vendor, failed.encode())
    return Problem(code, failed, text)
