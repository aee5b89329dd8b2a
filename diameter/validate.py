"""Dictionary-driven validation of received messages (RFC 6733 §3.2 CCFs, §4.1 flags, §7.1 codes).

``check_request`` walks a message once against its command's grammar and returns the first
``Problem`` (RFC 6733 §7.1: "only the first error encountered" is reported) or None.

Given a ``deviations`` list, the walk is lenient about the M bit set on a dictionary AVP whose
rule says it MUST NOT be set (RFC 6733 §4.5): instead of 5016 DIAMETER_INVALID_AVP_BIT_COMBO, the
AVP's definition is appended to the list and the message goes on. Real clients set M on
Product-Name and Firmware-Revision, and refusing their CER takes a whole MME off the EIR.
Unknown AVPs with M set still get 5001 either way.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from diameter.codec import (
    AVP_FLAG_MANDATORY,
    AVP_FLAGS_RESERVED,
    FIXED_SIZE,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    KNOWN_IDENTITIES,
    Avp,
    Message,
    Problem,
    decode_value,
    is_known_identity,
)
from diameter.dictionary import (
    DICTIONARY,
    AvpDef,
    AvpType,
    CommandDef,
    Dictionary,
    FlagRule,
    Grammar,
    RuleKind,
)
from diameter.dictionary.base_rfc6733 import EXACTLY_ONE_OF, NOT_VALIDATED, ResultCode
from diameter.errors import DecodeError
from diameter.settings import MAX_AVPS


def _key(name: str) -> tuple[int, int]:
    defn = DICTIONARY.avp(name)
    return (defn.code, defn.vendor)


_ONE_OF = {_key(name): tuple(_key(n) for n in names) for name, names in EXACTLY_ONE_OF.items()}
_OPAQUE = frozenset(_key(name) for name in NOT_VALIDATED)  # Failed-AVP (RFC 6733 §7.5)

# Grouped AVPs nested deeper than this are refused with 5012 instead of being walked: the RFC sets
# no limit, but an 8-octet-per-level chain of Failed-AVPs would otherwise exhaust the stack.
MAX_GROUPED_DEPTH = 16


def check_header(message: Message, command: CommandDef | None) -> Problem | None:
    """RFC 6733 §3: header bits a request may not carry (3008 DIAMETER_INVALID_HDR_BITS)."""
    flags = message.flags
    if flags & FLAG_REQUEST and flags & FLAG_ERROR:
        return Problem(ResultCode.DIAMETER_INVALID_HDR_BITS, None, "E bit set in a request")
    if command is not None and command.proxiable != bool(flags & FLAG_PROXIABLE):
        # The command's CCF fixes the P bit either way ("PXY" or not): RFC 6733 §3, §7.1.3.
        state = "clear" if command.proxiable else "set"
        return Problem(
            ResultCode.DIAMETER_INVALID_HDR_BITS,
            None,
            f"P bit {state} on {command.request_abbrev}",
        )
    return None


def check_request(
    message: Message,
    command: CommandDef,
    dictionary: Dictionary = DICTIONARY,
    deviations: list[AvpDef] | None = None,
    max_avps: int = MAX_AVPS,
) -> Problem | None:
    """First problem of a request against its command's CCF, or None when it is well formed.
    With ``deviations``, M bits set against the rules are collected there, not refused. More
    than ``max_avps`` AVPs in the message or in one Grouped AVP: 5009 (see ``too_many_avps``)."""
    if message.problem is not None:
        return message.problem
    problem = check_header(message, command)
    if problem is not None:
        return problem
    return check_avps(message.avps, command.request, dictionary, (), deviations, max_avps)


def check_avps(
    avps: list[Avp],
    grammar: Grammar,
    dictionary: Dictionary,
    parents: tuple[Avp, ...],
    deviations: list[AvpDef] | None = None,
    max_avps: int = MAX_AVPS,
) -> Problem | None:
    """First problem of ``avps`` against ``grammar`` (a CCF or a Grouped AVP's definition)."""
    if len(avps) > max_avps:
        return too_many_avps(avps, max_avps, parents)
    compiled = _compile(grammar, dictionary)
    # Learnt shapes have at most MAX_LEARNED_AVPS AVPs per level: under a lower cap, the walk.
    if not parents and max_avps >= MAX_LEARNED_AVPS and _fast_ok(avps, compiled, dictionary, 0):
        return None
    seen = len(deviations) if deviations is not None else 0
    problem = _walk(avps, compiled, dictionary, parents, deviations, max_avps)
    # A shape with a deviation is never learnt: the walk must see it again to report it (and
    # a strict check of the same shape must still refuse it).
    if problem is None and not parents and (deviations is None or len(deviations) == seen):
        _learn(avps, compiled, dictionary)
    return problem


# -- the fast path for shapes already seen well formed ----------------------------------------
#
# Whether a list of AVPs passes the structural checks of a grammar (known AVPs, flags, counts,
# fixed positions, required AVPs, one-of alternatives) depends only on the sequence of (code,
# flags, vendor): its "shape". Once a shape has passed the full walk, later lists of that shape
# only need their values checked (and their Grouped AVPs, each against its own shapes). Any
# failure there falls back to the full walk, which finds the first error in order (§7.1), so the
# answers are the same; the fast path only ever says "well formed".

# Shapes remembered per compiled grammar; past this, new shapes just take the full walk.
MAX_SHAPES = 256
# A checker is written (exec, ~0.5 ms) for a shape seen well formed this many times, not at its
# first sight: a stream of never-seen shapes (mutated or hostile traffic) then costs the full walk
# and one counter each, and cannot fill the table that real traffic's few shapes need.
LEARN_AFTER = 4
# Shapes being counted per grammar; when full the counts start over (a legitimate shape repeats
# often enough to reach LEARN_AFTER between two clearings).
MAX_SIGHTINGS = 1024
# Lists longer than this are never learnt (nor looked up): a checker is written out AVP by AVP,
# and a 1 MB message of 8-octet AVPs would cost seconds of exec and megabytes per shape. Real
# requests have a dozen or two AVPs per level.
MAX_LEARNED_AVPS = 64
# Grouped AVPs often repeat octet for octet (Vendor-Specific-Application-Id): the data of those
# found well formed at the top level is remembered per (grammar, one-of rule), small ones only.
_GOOD_DATA_SIZE = 64
_GOOD_DATA_COUNT = 1024
_no_grammar_good: dict[Any, set[bytes]] = {}  # Grouped AVPs without a grammar: data that parses


def _shape(avps: list[Avp]) -> tuple[int, ...]:
    # One int per AVP: code (32 bits), flags (8), vendor (32).
    return tuple([a.code | a.flags << 32 | a.vendor << 40 for a in avps])


def _fast_ok(avps: list[Avp], compiled: _Compiled, dictionary: Dictionary, depth: int) -> bool:
    """True when ``avps`` has a known-good shape and every value passes its check."""
    if len(avps) > MAX_LEARNED_AVPS:
        return False
    recent = compiled[8]
    for check in recent:  # the last shapes met, tried without computing the shape
        if check(avps, depth):
            return True
    known = compiled[6].get(_shape(avps))
    if known is None or not known(avps, depth):
        return False
    recent.insert(0, known)
    del recent[_RECENT:]
    return True


# Checkers tried before computing a shape, per grammar (a request type has one or two shapes).
_RECENT = 3


def _grouped_ok(avp: Avp, arg: Any, dictionary: Dictionary, depth: int) -> bool:
    inner, alternatives, good = arg
    data = avp.data
    if depth == 0 and data in good:
        return True  # the same octets were found well formed at this level before
    if avp._children is None:
        try:
            avp.children  # noqa: B018 - decodes and caches the children
        except DecodeError:
            return False
    if inner is not None:
        if depth >= MAX_GROUPED_DEPTH:
            return False
        children: list[Avp] = avp._children  # type: ignore[assignment]
        if not _fast_ok(children, inner, dictionary, depth + 1):
            return False
        if alternatives is not None:
            # The same grammar could serve an AVP without the one-of rule: checked here.
            present = 0
            for child in children:
                if (child.code, child.vendor) in alternatives:
                    present += 1
            if present != 1:
                return False
    if depth == 0 and len(data) <= _GOOD_DATA_SIZE and len(good) < _GOOD_DATA_COUNT:
        good.add(data)
    return True


def _enum_ok(data: bytes, arg: Any) -> bool:
    # (Enumerated type?, enumeration values or None when M is clear, type)
    enumerated, values, avp_type = arg
    if enumerated and len(data) == 4:
        value = _I32_UNPACK(data)[0]
    else:
        try:
            value = decode_value(avp_type, data)
        except DecodeError:
            return False
    return values is None or value in values


def _checker(
    avps: list[Avp], plan: list[tuple[int, int, Any]], dictionary: Dictionary
) -> Callable[[list[Avp], int], bool]:
    """A function checking the shape of ``avps`` (the exact code, flags and vendor of each) and
    then the values, written out AVP by AVP (no loop, no dispatch on the kind of check): the
    hot path of every well-formed request."""
    n = len(avps)
    names = [f"a{i}" for i in range(n)]
    lines = ["def check(avps, depth):", f"    if len(avps) != {n}:", "        return False"]
    if n:
        lines.append(f"    {', '.join(names)}, = avps")
    for name, model in zip(names, avps, strict=True):
        code, flags, vendor = int(model.code), int(model.flags), int(model.vendor)
        lines += [
            f"    if {name}.code != {code} or {name}.flags != {flags} or {name}.vendor != {vendor}:",
            "        return False",
        ]
    namespace: dict[str, Any] = {
        "_utf8_ok": _utf8_ok,
        "_identity_ok": _identity_ok,
        "_known_identities": KNOWN_IDENTITIES,
        "_grouped_ok": _grouped_ok,
        "_enum_ok": _enum_ok,
        "dictionary": dictionary,
    }
    for position, kind, arg in plan:
        avp, value = names[position], f"v{position}"
        namespace[value] = arg
        if kind == _SIZE:
            test = f"len({avp}.data) != {int(arg)}"
        elif kind == _TEST and arg is _utf8_ok:
            test = f"not ({avp}.data.isascii() or _utf8_ok({avp}.data))"
        elif kind == _TEST and arg is _identity_ok:
            # Requests repeat a handful of hosts and realms: a dict look-up, no call.
            test = f"not ({avp}.data in _known_identities or _identity_ok({avp}.data))"
        elif kind == _TEST:
            test = f"not {value}({avp}.data)"
        elif kind == _GROUPED:
            test = f"not _grouped_ok({avp}, {value}, dictionary, depth)"
        else:
            test = f"not _enum_ok({avp}.data, {value})"
        lines += [f"    if {test}:", "        return False"]
    lines.append("    return True")
    exec("\n".join(lines), namespace)  # the code is built above from integers and names only
    check: Callable[[list[Avp], int], bool] = namespace["check"]
    return check


def _learn(avps: list[Avp], compiled: _Compiled, dictionary: Dictionary) -> None:
    """Count the shapes of a list that passed the full walk, Grouped AVPs included; write the
    checker of a shape once it has been seen ``LEARN_AFTER`` times."""
    shapes = compiled[6]
    if len(avps) > MAX_LEARNED_AVPS:
        return
    shape = _shape(avps)
    learn = False
    if shape not in shapes and len(shapes) < MAX_SHAPES:
        sightings = compiled[9]
        count = sightings.get(shape, 0) + 1
        if count >= LEARN_AFTER:
            sightings.pop(shape, None)
            learn = True
        else:
            if len(sightings) >= MAX_SIGHTINGS:
                sightings.clear()
            sightings[shape] = count
    lookup, known = compiled[0], compiled[1]
    plan: list[tuple[int, int, Any]] = []
    for position, avp in enumerate(avps):
        key = (avp.code, avp.vendor)
        entry = lookup.get(key) or known.get(key)
        if entry is None:
            continue  # unknown and not mandatory: ignored by the walk too
        defn, kind, arg = entry[0], entry[2], entry[3]
        if kind == _ANY:
            continue
        if kind == _GROUPED:
            inner: _Compiled | None = None
            if defn.grammar is not None:
                inner = arg[0] if arg[0] is not None else _compile(defn.grammar, dictionary)
                assert avp._children is not None  # the walk decoded them
                _learn(avp._children, inner, dictionary)
            alternatives = _ONE_OF.get(key)
            goods = inner[7] if inner is not None else _no_grammar_good
            good = goods.setdefault(alternatives, set())
            plan.append((position, _GROUPED, (inner, alternatives, good)))
        elif kind == _ENUM:
            mandatory = avp.flags & AVP_FLAG_MANDATORY
            values = defn.enum_values if mandatory else None
            plan.append((position, _ENUM, (arg, values, defn.type)))
        else:
            plan.append((position, kind, arg))
    if learn:
        shapes[shape] = _checker(avps, plan, dictionary)


def too_many_avps(avps: list[Avp], max_avps: int, parents: tuple[Avp, ...]) -> Problem:
    """5009 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES for a list of more than ``max_avps`` AVPs.

    A CCF's ``*[ AVP ]`` (and ``*[ Proxy-Info ]``, ``*[ Route-Record ]``...) has no maximum
    (RFC 6733 §3.2: "the default value is infinity"); this node sets one on the whole list, so
    the AVP past it "appeared more often than permitted in the message definition" and goes in
    Failed-AVP as the first instance that exceeded it (§7.1.5), inside its Grouped parents.
    """
    return _fail(
        ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
        avps[max_avps],
        parents,
        f"more than {max_avps} AVPs in {'a Grouped AVP' if parents else 'the message'}",
    )


def _walk(
    avps: list[Avp],
    grammar: _Compiled,
    dictionary: Dictionary,
    parents: tuple[Avp, ...],
    deviations: list[AvpDef] | None = None,
    max_avps: int = MAX_AVPS,
) -> Problem | None:
    lookup, known, required, extensible, keys, n_rules, _, _, _, _ = grammar
    counts = [0] * n_rules
    position = -1
    for avp in avps:
        position += 1
        flags = avp.flags
        key = (avp.code, avp.vendor)
        entry = lookup.get(key)
        if entry is None:
            entry = known.get(key)
            if entry is None:
                if flags & AVP_FLAGS_RESERVED:
                    return _fail(
                        ResultCode.DIAMETER_INVALID_AVP_BITS, avp, parents, "reserved AVP flag set"
                    )
                if flags & AVP_FLAG_MANDATORY:
                    # RFC 6733 §4.1 M bit: an unrecognised mandatory AVP rejects the message.
                    return _fail(
                        ResultCode.DIAMETER_AVP_UNSUPPORTED, avp, parents, "unknown M-bit AVP"
                    )
                continue  # unknown, not mandatory: ignored
        defn, bad_flags, kind, arg, i, most, fixed = entry
        if flags & bad_flags:
            if flags & AVP_FLAGS_RESERVED:
                # RFC 6733 §4.1: "an unrecognized bit SHOULD be considered an error".
                return _fail(
                    ResultCode.DIAMETER_INVALID_AVP_BITS, avp, parents, "reserved AVP flag set"
                )
            if deviations is None:
                return _fail(
                    ResultCode.DIAMETER_INVALID_AVP_BIT_COMBO,
                    avp,
                    parents,
                    f"M bit set on {defn.name}, which must not have it",
                )
            deviations.append(defn)  # lenient: an M bit we understand the AVP without
        if i < 0:
            if not extensible:
                return _fail(
                    ResultCode.DIAMETER_AVP_NOT_ALLOWED,
                    avp,
                    parents,
                    f"{defn.name} not allowed here",
                )
        else:
            count = counts[i] = counts[i] + 1
            if most is not None and count > most:
                return _fail(
                    ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
                    avp,
                    parents,
                    f"{defn.name} occurs more than {most} time(s)",
                )
            if fixed and position != i:
                # RFC 6733 §3.2: a fixed AVP sits at its position (Session-Id first).
                return _fail(
                    ResultCode.DIAMETER_AVP_NOT_ALLOWED,
                    avp,
                    parents,
                    f"{defn.name} out of its fixed position",
                )
        # Values are not kept, only checked. The cheap checks below accept exactly what
        # decode_value accepts; when one fails, decode_value produces the error and result code.
        if kind == _SIZE:
            if len(avp.data) != arg:
                return _value_problem(defn, avp, parents)
        elif kind == _TEST:
            if not arg(avp.data):
                problem = _value_problem(defn, avp, parents)
                if problem is not None:
                    return problem
        elif kind == _GROUPED:
            problem = _check_grouped(avp, defn, arg, dictionary, parents, deviations, max_avps)
            if problem is not None:
                return problem
        elif kind == _ENUM:
            data = avp.data
            if arg and len(data) == 4:
                value = _I32_UNPACK(data)[0]
            else:
                try:
                    value = decode_value(defn.type, data)
                except DecodeError as exc:
                    return _fail(exc.result_code, avp, parents, str(exc))
            if flags & AVP_FLAG_MANDATORY and value not in defn.enum_values:  # type: ignore[operator]
                return _fail(
                    ResultCode.DIAMETER_INVALID_AVP_VALUE,
                    avp,
                    parents,
                    f"{defn.name} value {value} unknown",
                )
        # _ANY: every octet string is a valid value
    for i, minimum in required:
        if counts[i] < minimum:
            defn = dictionary.avps[keys[i]]
            return _fail(
                ResultCode.DIAMETER_MISSING_AVP,
                Avp.zero_filled(defn),
                parents,
                f"{defn.name} missing",
            )
    return None


def _value_problem(defn: AvpDef, avp: Avp, parents: tuple[Avp, ...]) -> Problem | None:
    try:
        decode_value(defn.type, avp.data)
    except DecodeError as exc:
        return _fail(exc.result_code, avp, parents, str(exc))
    return None  # Address, DiameterURI, ...: no cheap check, decode_value accepted it


def _check_grouped(
    avp: Avp,
    defn: AvpDef,
    slot: list[_Compiled | None],
    dictionary: Dictionary,
    parents: tuple[Avp, ...],
    deviations: list[AvpDef] | None,
    max_avps: int,
) -> Problem | None:
    try:
        children = avp.children
    except DecodeError as exc:
        return _fail(exc.result_code, avp, parents, str(exc))
    if len(children) > max_avps:
        return too_many_avps(children, max_avps, (*parents, avp))
    grammar = defn.grammar
    if grammar is None:
        return None
    if len(parents) >= MAX_GROUPED_DEPTH:
        # Failed-AVP: the AVP one level too deep (zero-filled), inside copies of its parents.
        return _fail(
            ResultCode.DIAMETER_UNABLE_TO_COMPLY,
            Avp.zero_filled(defn),
            parents,
            f"Grouped AVPs nested deeper than {MAX_GROUPED_DEPTH} levels",
        )
    compiled = slot[0]
    if compiled is None:
        compiled = slot[0] = _compile(grammar, dictionary)
    problem = _walk(children, compiled, dictionary, (*parents, avp), deviations, max_avps)
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


# -- precompiled tables (built once per grammar and dictionary, then reused) --------------------
#
# A compiled grammar maps each AVP (code, vendor) to everything the walk needs in one lookup:
# its definition, whether the M bit is forbidden, how to check its value, and, for AVPs named in
# the grammar, the rule index, maximum count and whether the rule is fixed.

# How a value is checked: any data / exact size / a predicate / Grouped / enumeration.
_ANY, _SIZE, _TEST, _GROUPED, _ENUM = range(5)
_I32_UNPACK = struct.Struct("!i").unpack
_IDENTITY = re.compile(rb"[\x21-\x7e]+")  # RFC 6733 §4.3.1 DiameterIdentity octets

# definition, flags not allowed, check kind, check argument, rule index (-1: not in grammar), max,
# fixed
_Entry = tuple[AvpDef, int, int, Any, int, int | None, bool]
_Compiled = tuple[
    dict[tuple[int, int], _Entry],  # AVPs named in the grammar
    dict[tuple[int, int], _Entry],  # every AVP of the dictionary (rule index -1)
    tuple[tuple[int, int], ...],  # (rule index, min) of the rules with a minimum
    bool,  # extensible (*[ AVP ])
    tuple[tuple[int, int], ...],  # (code, vendor) of each rule
    int,  # number of rules
    dict[tuple[int, ...], Callable[[list[Avp], int], bool]],  # known-good shapes -> checkers
    dict[Any, set[bytes]],  # one-of rule -> Grouped data found well formed (see _grouped_ok)
    list[Callable[[list[Avp], int], bool]],  # the checkers used last, most recent first
    dict[tuple[int, ...], int],  # shapes seen well formed, not learnt yet -> times seen
]
_compiled: dict[tuple[int, int], tuple[Grammar, Dictionary, int, _Compiled]] = {}
_known: dict[int, tuple[Dictionary, int, dict[tuple[int, int], _Entry]]] = {}


def _utf8_ok(data: bytes) -> bool:
    if data.isascii():
        return True  # ASCII is UTF-8, and isascii() costs a fraction of a decode
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _identity_ok(data: bytes) -> bool:
    return is_known_identity(data) or _IDENTITY.fullmatch(data) is not None


def _never(data: bytes) -> bool:
    return False  # Address, DiameterURI, ...: let decode_value decide


def _value_check(defn: AvpDef) -> tuple[int, Any]:
    if (defn.code, defn.vendor) in _OPAQUE:
        return _ANY, None
    if defn.type is AvpType.GROUPED:
        return _GROUPED, [None]  # the compiled grammar, filled in on first use
    if defn.enum_values is not None:
        return _ENUM, defn.type is AvpType.ENUMERATED
    size = FIXED_SIZE.get(defn.type)
    if size is not None:
        return _SIZE, size
    if defn.type is AvpType.OCTET_STRING:
        return _ANY, None
    if defn.type is AvpType.UTF8_STRING:
        return _TEST, _utf8_ok
    if defn.type is AvpType.DIAMETER_IDENTITY:
        return _TEST, _identity_ok
    return _TEST, _never


def _known_avps(dictionary: Dictionary) -> dict[tuple[int, int], _Entry]:
    cached = _known.get(id(dictionary))
    if cached is not None and cached[0] is dictionary and cached[1] == len(dictionary.avps):
        return cached[2]
    table: dict[tuple[int, int], _Entry] = {}
    for key, defn in dictionary.avps.items():
        kind, arg = _value_check(defn)
        # Flags that are an error on this AVP: the reserved bits, and M where it MUST NOT be set.
        bad_flags = AVP_FLAGS_RESERVED | (
            AVP_FLAG_MANDATORY if defn.m_rule is FlagRule.MUST_NOT else 0
        )
        table[key] = (defn, bad_flags, kind, arg, -1, None, False)
    _known[id(dictionary)] = (dictionary, len(dictionary.avps), table)
    return table


def _compile(grammar: Grammar, dictionary: Dictionary) -> _Compiled:
    cached = _compiled.get((id(grammar), id(dictionary)))
    if (
        cached is not None
        and cached[0] is grammar
        and cached[1] is dictionary
        and cached[2] == len(dictionary.avps)
    ):
        return cached[3]
    known = _known_avps(dictionary)
    lookup: dict[tuple[int, int], _Entry] = {}
    for i, (key, rule) in enumerate(zip(grammar.keys, grammar.rules, strict=True)):
        defn, bad_flags, kind, arg = known[key][:4]  # Grouped: the same cache slot
        lookup[key] = (defn, bad_flags, kind, arg, i, rule.max, rule.kind is RuleKind.FIXED)
    compiled: _Compiled = (
        lookup,
        known,
        tuple((i, r.min) for i, r in enumerate(grammar.rules) if r.min > 0),
        grammar.extensible,
        grammar.keys,
        len(grammar.rules),
        {},
        {},
        [],
        {},
    )
    _compiled[(id(grammar), id(dictionary))] = (grammar, dictionary, len(dictionary.avps), compiled)
    return compiled


def _fail(code: int, offender: Avp, parents: tuple[Avp, ...], text: str) -> Problem:
    """RFC 6733 §7.5: the offending AVP, shown inside copies of its Grouped parents."""
    failed = offender
    for parent in reversed(parents):
        failed = Avp(parent.code, parent.flags, parent.vendor, failed.encode())
    return Problem(code, failed, text)
