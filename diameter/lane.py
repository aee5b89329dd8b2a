"""The lane for application requests of a shape already found well formed (RFC 6733 §6.1, §7.1).

Whether a request passes the full path's checks (``decode_message``, ``routing.first_problem``,
``validate.check_request``) depends on its *shape*, the header's flags, command code and
application and, for every AVP in order (inside Grouped AVPs too), its code, flags and vendor,
and on a few values checked one by one: sizes, UTF-8, DiameterIdentity octets, enumerations,
Destination-Host and Destination-Realm. A shape the full path found well formed (no M bit
accepted against its rule, no T flag) ``LEARN_AFTER`` times becomes a ``Plan``. A later request
of that shape is walked once over its octets: its values checked, the fields its application's
``Lane`` asks for sliced out. No ``Message`` or ``Avp`` objects, no grammar walk.

Anything else falls back to the full path, which stays the reference: no plan matching, a
value failing, a Destination that is not ours, an application not negotiated with the peer.
The full path then finds the first error (§7.1) and answers it, so the answers are the same
(property-tested: tests/diameter/test_lane.py). Shapes carrying AVPs the answer must echo or
act on are never learnt: Proxy-Info (§6.1.9, §6.2: copied into the answer) and
OC-Supported-Features (RFC 7683 §5.1.2: DOIC AVPs in the answer), nor those an application's
``Lane.absent`` names.
"""

from __future__ import annotations

import re
from typing import Final

from diameter.application import Application, HandlerReturn, Lane, LaneHandler, PeerInfo
from diameter.codec import (
    AVP_FLAG_MANDATORY,
    FIXED_SIZE,
    Avp,
    Message,
    decode_message,
    decode_value,
    identity_lower,
    is_known_identity,
)
from diameter.dictionary import DICTIONARY, AvpType
from diameter.dictionary.base_rfc6733 import NOT_VALIDATED
from diameter.errors import DecodeError
from diameter.settings import LocalIdentity, PeerSettings

# A shape is learnt after the full path found it well formed this many times: a stream of
# never-seen shapes (mutated or hostile traffic) cannot fill the plans real traffic needs.
LEARN_AFTER: Final = 4
# Plans per node (real traffic has one or two shapes per peer type), and shapes being counted.
MAX_PLANS: Final = 16
MAX_SIGHTINGS: Final = 1024
# AVPs per level of a learnt shape (validate.MAX_LEARNED_AVPS: real requests have a dozen).
MAX_AVPS_PER_LEVEL: Final = 64

SESSION_ID: Final = 263
PROXY_INFO: Final = 284
ORIGIN_HOST: Final = 264
DESTINATION_HOST: Final = 293
DESTINATION_REALM: Final = 283
OC_SUPPORTED_FEATURES: Final = 621
_NEVER_LEARNT: Final = frozenset({(PROXY_INFO, 0), (OC_SUPPORTED_FEATURES, 0)})

# Field slots every plan fills before its application's fields: the first Origin-Host (the
# duplicate key, §5.5.4) and the first Destination-Host / -Realm (§6.1.4) at the top level.
ORIGIN_HOST_SLOT: Final = 0
DESTINATION_HOST_SLOT: Final = 1
DESTINATION_REALM_SLOT: Final = 2
FIRST_FIELD_SLOT: Final = 3

# How a value is checked, as validate checks it: any octets / exact size / UTF-8 /
# DiameterIdentity octets / an Enumerated (4 octets, signed) / another type with enumerated
# values / decode_value decides / Grouped (the children's plan).
# Final: compiled code compares with the constants themselves, not a module-dict look-up each.
ANY: Final = 0
SIZE: Final = 1
UTF8: Final = 2
IDENTITY: Final = 3
ENUMERATED: Final = 4
ENUM: Final = 5
DECODE: Final = 6
GROUPED: Final = 7
_OPAQUE: Final = frozenset(
    (DICTIONARY.avp(name).code, DICTIONARY.avp(name).vendor) for name in NOT_VALIDATED
)
_IDENTITY: Final = re.compile(rb"[\x21-\x7e]+")  # RFC 6733 §4.3.1 DiameterIdentity octets
_PADDING: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # by length & 3


class Entry:
    """One AVP of a learnt shape: what its header must be and how its value is checked."""

    def __init__(
        self,
        code: int,
        flags: int,
        vendor: int,
        kind: int,
        size: int = 0,
        avp_type: AvpType | None = None,
        values: frozenset[int] | None = None,
        children: list[Entry] | None = None,
    ) -> None:
        self.code = code
        self.flags = flags
        self.vendor = vendor
        self.kind = kind
        self.size = size
        self.avp_type = avp_type
        self.values = values  # ENUM with the M bit: the values allowed (None: any)
        self.children: list[Entry] = children if children is not None else []
        self.slot = -1  # where the value goes in the fields handed over, -1 nowhere


class Plan:
    """A learnt shape of one application's request, and the lane that serves it."""

    def __init__(
        self, flags_code: int, application: Application, lane: Lane, entries: list[Entry]
    ) -> None:
        self.flags_code = flags_code  # the header's second word: flags << 24 | command code
        self.application_id = application.application_id
        self.application = application
        self.lane = lane
        self.entries = entries
        self.slots = FIRST_FIELD_SLOT + len(lane.fields)


class Lanes:
    """The plans of one node, most recently matched first; and how the node's application
    requests went, counted for metrics (plain integers, read at scrape time)."""

    def __init__(self) -> None:
        self.plans: list[Plan] = []
        # Application requests of open connections: taken by a lane, or on the full path
        # because no plan was learnt yet, none fitted (another shape, or a value failing its
        # check), the Destination was not ours, or the application not negotiated.
        self.taken = 0
        self.no_plan = 0
        self.unmatched = 0
        self.destination = 0
        self.application = 0
        self.learnt = 0  # plans made
        self.forgotten = 0  # plans dropped since (settings, identity or dictionary changed)
        self.evicted = 0  # plans dropped for a newly learnt one (MAX_PLANS held)
        self._sightings: dict[tuple[int, ...], int] = {}
        self._settings: PeerSettings | None = None
        self._identity: LocalIdentity | None = None
        self._avps = len(DICTIONARY.avps)
        # Ours, in lower case (RFC 6733 §6.1.4), as Node.served_realms reads them.
        self._origin_host = ""
        self._served_realms: frozenset[str] = frozenset()

    def match(
        self, raw: bytes, settings: PeerSettings, identity: LocalIdentity
    ) -> tuple[Plan, list[bytes | None]] | None:
        """The plan ``raw`` (a whole, framed request) fits and its fields, or None: None too
        when its Destination-Host is not ours (3002) or its Destination-Realm not served (3003)."""
        if not self._current(settings, identity):
            self.no_plan += 1
            return None
        flags_code = (raw[4] << 24) | (raw[5] << 16) | (raw[6] << 8) | raw[7]
        application_id = (raw[8] << 24) | (raw[9] << 16) | (raw[10] << 8) | raw[11]
        end = len(raw)
        plans = self.plans
        for index in range(len(plans)):
            plan = plans[index]
            if plan.flags_code != flags_code or plan.application_id != application_id:
                continue
            fields: list[bytes | None] = [None] * plan.slots
            if _walk(plan.entries, raw, 20, end, fields) != end:
                continue
            host = fields[DESTINATION_HOST_SLOT]
            if host is not None and identity_lower(host) != self._origin_host:
                self.destination += 1
                return None
            realm = fields[DESTINATION_REALM_SLOT]
            if realm is not None and identity_lower(realm) not in self._served_realms:
                self.destination += 1
                return None
            if index:
                del plans[index]
                plans.insert(0, plan)
            return plan, fields
        self.unmatched += 1
        return None

    def _current(self, settings: PeerSettings, identity: LocalIdentity) -> bool:
        """Whether the plans were learnt under these settings (max_avps, strict M bits),
        identity and dictionary; if not, they are forgotten."""
        if (
            settings is self._settings
            and identity is self._identity
            and len(DICTIONARY.avps) == self._avps
        ):
            return True
        self.forgotten += len(self.plans)
        self.plans.clear()
        self._sightings.clear()
        self._settings, self._identity = settings, identity
        self._avps = len(DICTIONARY.avps)
        self._origin_host = identity.origin_host.lower()
        realms = settings.served_realms or (identity.origin_realm,)
        self._served_realms = frozenset(r.lower() for r in realms)
        return False

    def learn(
        self,
        message: Message,
        application: Application,
        lane: Lane,
        settings: PeerSettings,
        identity: LocalIdentity,
    ) -> None:
        """The full path found ``message`` well formed with no M bit accepted against its
        rule: count its shape, and make it a plan at the ``LEARN_AFTER``-th sight."""
        self._current(settings, identity)
        if message.flags & 0x10:  # T flag: the full path
            return
        try:
            shape = _shape(message)
        except DecodeError:
            return
        if shape is None:
            return
        count = self._sightings.get(shape, 0) + 1
        if count < LEARN_AFTER:
            if len(self._sightings) >= MAX_SIGHTINGS:
                self._sightings.clear()
            self._sightings[shape] = count
            return
        self._sightings.pop(shape, None)
        plan = _plan(message, application, lane)
        if plan is not None:
            plans = self.plans
            if len(plans) >= MAX_PLANS:
                # The plan matched least recently goes (plans are kept most recently matched
                # first): were the plans kept once full, a peer sending MAX_PLANS well-formed
                # shapes of its own, four times each, would hold them for good, every later
                # shape (an MME's, the real traffic's) on the full path after failed walks
                # of all of them.
                plans.pop()
                self.evicted += 1
            # First, as if just matched: the next learnt shape does not push it out before
            # its own traffic had a chance to match it.
            plans.insert(0, plan)
            self.learnt += 1


class LaneRequest:
    """A request of a learnt shape for its lane's handler (``Lane.handler``): its octets and
    the fields the lane asked for, no decoded ``Message``. Answered like a ``RequestReceived``
    (``Peer.send_answer``). ``message`` decodes ``raw`` on every access: the handler's way to
    the full path for anything unusual."""

    __slots__ = ("application", "fields", "handler", "key", "peer", "raw")

    def __init__(
        self,
        raw: bytes,
        peer: PeerInfo,
        application: Application,
        handler: LaneHandler,
        key: tuple[str, int] | None,
        fields: list[bytes | None],
    ) -> None:
        self.raw = raw
        self.peer = peer
        self.application = application
        self.handler = handler
        self.key = key  # (origin-host, end-to-end) for duplicate detection
        self.fields = fields

    @property
    def message(self) -> Message:
        return decode_message(self.raw)

    def call(self) -> HandlerReturn:
        return self.handler(self, self.peer)


def answer(raw: bytes, body: bytes) -> bytes:
    """The answer to the request ``raw`` (RFC 6733 §6.2): its header with the P bit kept and
    R, E, T clear, the same command, application, Hop-by-Hop and End-to-End; then its leading
    Session-Id AVP, when it has one, as ``Avp.encode`` gives it (padding zeroed); then ``body``."""
    head = b""
    if len(raw) >= 28 and raw[20:24] == b"\x00\x00\x01\x07":
        length = (raw[25] << 16) | (raw[26] << 8) | raw[27]
        vendor = raw[24] & 0x80
        if (
            (12 if vendor else 8) <= length
            and 20 + length <= len(raw)
            and (not vendor or raw[28:32] == b"\x00\x00\x00\x00")
        ):
            head = raw[20 : 20 + length] + _PADDING[length & 3]
    total = 20 + len(head) + len(body)
    return (
        bytes((1, (total >> 16) & 0xFF, (total >> 8) & 0xFF, total & 0xFF, raw[4] & 0x40))
        + raw[5:20]
        + head
        + body
    )


def _walk(entries: list[Entry], raw: bytes, offset: int, end: int, fields: list[bytes | None]) -> int:
    """The offset after the AVPs of ``entries`` read from ``raw[offset:end]``, or -1 when one
    does not fit its entry (header, length or value): decode_avps's reading, validate's checks."""
    for entry in entries:
        if end - offset < 8:
            return -1
        code = (raw[offset] << 24) | (raw[offset + 1] << 16) | (raw[offset + 2] << 8) | raw[offset + 3]
        flags = raw[offset + 4]
        if code != entry.code or flags != entry.flags:
            return -1
        length = (raw[offset + 5] << 16) | (raw[offset + 6] << 8) | raw[offset + 7]
        if flags & 0x80:  # V bit: a Vendor-ID follows (RFC 6733 §4.1)
            if end - offset < 12:
                return -1
            vendor = (
                (raw[offset + 8] << 24) | (raw[offset + 9] << 16) | (raw[offset + 10] << 8)
                | raw[offset + 11]
            )
            if vendor != entry.vendor:
                return -1
            start = offset + 12
        else:
            start = offset + 8
        stop = offset + length
        if stop < start or stop > end:
            return -1
        kind = entry.kind
        if kind == SIZE:
            if stop - start != entry.size:
                return -1
        elif kind == ENUMERATED:
            if stop - start != 4:
                return -1
            values = entry.values
            if values is not None:
                value = (raw[start] << 24) | (raw[start + 1] << 16) | (raw[start + 2] << 8) | raw[
                    start + 3
                ]
                if value & 0x80000000:
                    value -= 0x100000000  # Integer32 (RFC 6733 §4.3.1)
                if value not in values:
                    return -1
        elif kind == GROUPED:
            if _walk(entry.children, raw, start, stop, fields) != stop:
                return -1
        elif kind != ANY:
            data = raw[start:stop]
            if not _value_ok(entry, data):
                return -1
            if entry.slot >= 0:
                fields[entry.slot] = data
            offset = stop + (-length & 3)
            continue
        if entry.slot >= 0:
            fields[entry.slot] = raw[start:stop]
        offset = stop + (-length & 3)
    return offset


def _value_ok(entry: Entry, data: bytes) -> bool:
    kind = entry.kind
    if kind == UTF8:
        if data.isascii():
            return True
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    if kind == IDENTITY:
        return is_known_identity(data) or _IDENTITY.fullmatch(data) is not None
    avp_type = entry.avp_type
    assert avp_type is not None
    try:
        value = decode_value(avp_type, data)
    except DecodeError:
        return False
    values = entry.values
    return values is None or value in values  # ENUM; DECODE has no values


def _shape(message: Message) -> tuple[int, ...] | None:
    """The shape of ``message`` as one tuple: header word, application, then each AVP (code,
    flags, vendor) with a Grouped AVP's children after it, closed by a marker; None when an
    AVP makes it unfit for a plan."""
    shape = [message.flags << 24 | message.command_code, message.application_id]
    for avp in message.avps:
        if (avp.code, avp.vendor) in _NEVER_LEARNT:
            return None
    if not _add_shape(message.avps, shape, 0):
        return None
    return tuple(shape)


def _add_shape(avps: list[Avp], shape: list[int], depth: int) -> bool:
    if len(avps) > MAX_AVPS_PER_LEVEL or depth > 8:
        return False
    for avp in avps:
        code, flags, vendor = avp.code, avp.flags, avp.vendor
        shape.append(code | flags << 32 | vendor << 40)
        defn = DICTIONARY.avps.get((code, vendor))
        if defn is not None and defn.type is AvpType.GROUPED and (code, vendor) not in _OPAQUE:
            if not _add_shape(avp.children, shape, depth + 1):
                return False
            shape.append(-1)
    return True


def _plan(message: Message, application: Application, lane: Lane) -> Plan | None:
    keys = {(avp.code, avp.vendor) for avp in message.avps}
    if keys & lane.absent:
        return None
    entries = _entries(message.avps, 0)
    if entries is None:
        return None
    _slot(entries, ((ORIGIN_HOST, 0),), ORIGIN_HOST_SLOT)
    _slot(entries, ((DESTINATION_HOST, 0),), DESTINATION_HOST_SLOT)
    _slot(entries, ((DESTINATION_REALM, 0),), DESTINATION_REALM_SLOT)
    for index, path in enumerate(lane.fields):
        _slot(entries, path, FIRST_FIELD_SLOT + index)
    flags_code = message.flags << 24 | message.command_code
    return Plan(flags_code, application, lane, entries)


def _slot(entries: list[Entry], path: tuple[tuple[int, int], ...], slot: int) -> None:
    """The first AVP of ``path[0]``, then the first ``path[1]`` inside it...: its value goes to
    ``slot`` (as ``Message.find`` and ``Avp.find`` would find it)."""
    level = entries
    for depth, (code, vendor) in enumerate(path):
        found = None
        for entry in level:
            if entry.code == code and entry.vendor == vendor:
                found = entry
                break
        if found is None:
            return
        if depth == len(path) - 1:
            if found.slot < 0:
                found.slot = slot
            return
        level = found.children


def _entries(avps: list[Avp], depth: int) -> list[Entry] | None:
    entries: list[Entry] = []
    for avp in avps:
        code, flags, vendor = avp.code, avp.flags, avp.vendor
        key = (code, vendor)
        defn = DICTIONARY.avps.get(key)
        if defn is None or key in _OPAQUE or defn.type is AvpType.OCTET_STRING:
            entries.append(Entry(code, flags, vendor, ANY))  # unknown ones: not mandatory
        elif defn.type is AvpType.GROUPED:
            if defn.grammar is None or depth >= 8:
                return None  # no grammar: not worth a plan
            children = _entries(avp.children, depth + 1)
            if children is None:
                return None
            entries.append(Entry(code, flags, vendor, GROUPED, children=children))
        elif defn.enum_values is not None:
            # validate checks the value against the enumeration only when M is set.
            values = frozenset(defn.enum_values) if flags & AVP_FLAG_MANDATORY else None
            kind = ENUMERATED if defn.type is AvpType.ENUMERATED else ENUM
            entries.append(Entry(code, flags, vendor, kind, avp_type=defn.type, values=values))
        elif defn.type in FIXED_SIZE:
            entries.append(Entry(code, flags, vendor, SIZE, size=FIXED_SIZE[defn.type]))
        elif defn.type is AvpType.UTF8_STRING:
            entries.append(Entry(code, flags, vendor, UTF8))
        elif defn.type is AvpType.DIAMETER_IDENTITY:
            entries.append(Entry(code, flags, vendor, IDENTITY))
        else:
            entries.append(Entry(code, flags, vendor, DECODE, avp_type=defn.type))
    return entries
