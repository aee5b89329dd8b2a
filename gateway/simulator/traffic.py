"""What a simulated MME sends: IMEI sources, pre-encoded MICR templates, minimal answer scanning.

Sources
    :func:`read_imei_file` reads one check per line (format below); :class:`ImeiGenerator` mixes
    valid, bad-check-digit, malformed, unknown-TAC and listed IMEIs derived from the gateway's
    data files (TAC file, operator lists, registry declarations) and knows, through the
    configured :class:`~gateway.policy.Policy`, which Equipment-Status the gateway answers.

IMEI file format (``--imei-file``)
    One check per line: ``IMEI [IMSI [SV [EXPECTED]]]``, fields separated by commas (CSV) or by
    whitespace. Blank lines and lines starting with ``#`` are ignored, and so is a first line
    whose first field is ``imei`` (a header). An empty CSV field or ``-`` leaves a column out.
    IMEI: 1 to 32 printable ASCII characters (malformed IMEIs are allowed on purpose: they are
    sent as they are). IMSI: 5 to 15 digits (sent as User-Name, TS 29.272 §7.2.19). SV: 2
    digits (Software-Version, TS 23.003 §6.2.2). EXPECTED: ``WHITELISTED``/``BLACKLISTED``/
    ``GREYLISTED`` or ``0``/``1``/``2`` (Equipment-Status, TS 29.272 §7.3.51), or
    ``EQUIPMENT_UNKNOWN``/``5422`` (Experimental-Result, §7.4.3). A bad line raises
    :class:`ImeiFileError` naming the file and the line.

Templates (:class:`RequestTemplate`)
    Each request shape (IMEI length, with or without User-Name and Software-Version) is encoded
    once with the codec and cut at the fields that change; a request is one join of those
    pieces with its End-to-End, the fixed-width Session-Id suffix and the IMEI/SV/IMSI digits.
    Hop-by-Hop is written by the peer core when the request is sent (RFC 6733 §3).

Answers (:func:`scan_answer`)
    Header plus one pass over the top-level AVPs for Session-Id, Result-Code,
    Experimental-Result(-Code) and Equipment-Status, each the first of its code and vendor as a
    full decode finds it; nothing else is decoded.
"""

from __future__ import annotations

import csv
import io
import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from diameter.codec import FLAG_PROXIABLE, FLAG_REQUEST, Avp, Message
from diameter.dictionary.base_rfc6733 import AuthSessionState
from diameter.dictionary.rfc7683_doic import OLR_DEFAULT_ALGO
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, EquipmentStatus
from diameter.dictionary.ts29272_s13 import VENDOR as VENDOR_3GPP
from gateway.imei import is_decimal, luhn_check_digit
from gateway.lists import EntryKind, ListColour, ListEntry, read_csv
from gateway.policy import Policy, Reason
from gateway.tac import parse_tac_file
from registry_client.local import read_declaration_file
from registry_client.wire import TacDeclaration

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

ME_IDENTITY_CHECK = 324  # TS 29.272 §7.2.19
EQUIPMENT_UNKNOWN = 5422  # TS 29.272 §7.4.3 DIAMETER_ERROR_EQUIPMENT_UNKNOWN
SUCCESS = 2001  # RFC 6733 §7.1.2

# Outcome names: an Equipment-Status name, EQUIPMENT_UNKNOWN, or RESULT_<code> for any other
# answer (errors, or 2001 without Equipment-Status).
OUTCOME_UNKNOWN = "EQUIPMENT_UNKNOWN"
_STATUS_NAMES = {s.value: s.name for s in EquipmentStatus}

# AVP codes scanned in answers (RFC 6733 §8.8, §7.1, §7.6, §7.7; TS 29.272 §7.3.51)
_SESSION_ID = 263
_RESULT_CODE = 268
_EXPERIMENTAL_RESULT = 297
_EXPERIMENTAL_RESULT_CODE = 298
_EQUIPMENT_STATUS = 1445

_U32 = struct.Struct("!I")
_AVP_HEAD = struct.Struct("!II")

SESSION_SUFFIX_DIGITS = 10  # the low 32 bits of the Session-Id, zero-padded (RFC 6733 §8.8)
MAX_IMEI_TEXT = 32


class ImeiFileError(ValueError):
    """A line of an IMEI file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Check:
    """One check to send: the IMEI AVP text, optional User-Name and Software-Version, and the
    outcome expected (see module docstring), or None when unknown."""

    imei: str
    imsi: str | None = None
    sv: str | None = None
    expected: str | None = None
    category: str = "file"
    # Its line in an IMEI file, for the mismatch report; not part of what the check is.
    line: int | None = field(default=None, compare=False)


def parse_expected(text: str) -> str:
    """``WHITELISTED``/``0`` ... -> the outcome name; raises ValueError."""
    value = text.strip().upper()
    if value in ("0", "1", "2"):
        return _STATUS_NAMES[int(value)]
    if value in ("5422", OUTCOME_UNKNOWN):
        return OUTCOME_UNKNOWN
    if value in EquipmentStatus.__members__:
        return value
    raise ValueError(
        f"expected status {text!r} is not WHITELISTED, BLACKLISTED, GREYLISTED, "
        "EQUIPMENT_UNKNOWN or 0/1/2/5422"
    )


def _field(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "-") else value


def parse_imei_line(line: str) -> Check | None:
    """One line of an IMEI file -> a Check (None for blank and comment lines); ValueError."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if "," in text:
        fields: list[str | None] = [_field(f) for f in next(csv.reader(io.StringIO(text)))]
    else:
        fields = [_field(f) for f in text.split()]
    if len(fields) > 4:
        raise ValueError(f"{len(fields)} fields; expected IMEI [IMSI [SV [EXPECTED]]]")
    fields += [None] * (4 - len(fields))
    imei, imsi, sv, expected = fields
    if imei is None:
        raise ValueError("no IMEI")
    if len(imei) > MAX_IMEI_TEXT or not imei.isascii() or not imei.isprintable():
        raise ValueError(f"IMEI {imei!r} is not 1 to {MAX_IMEI_TEXT} printable ASCII characters")
    if imsi is not None and not (5 <= len(imsi) <= 15 and is_decimal(imsi)):
        raise ValueError(f"IMSI {imsi!r} is not 5 to 15 digits")
    if sv is not None and not (len(sv) == 2 and is_decimal(sv)):
        raise ValueError(f"Software-Version {sv!r} is not 2 digits")
    return Check(imei, imsi, sv, None if expected is None else parse_expected(expected))


def read_imei_file(path: str | Path) -> list[Check]:
    """Every check in an IMEI file (see module docstring); ImeiFileError names the bad line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImeiFileError(f"{path}: cannot read: {exc}") from None
    checks: list[Check] = []
    first = True
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if first and stripped and not stripped.startswith("#"):
            first = False
            head = stripped.split(",")[0].split()[0] if stripped else ""
            if head.strip().lower() == "imei":
                continue
        try:
            check = parse_imei_line(line)
        except ValueError as exc:
            raise ImeiFileError(f"{path}:{number}: {exc}") from None
        if check is not None:
            checks.append(replace(check, line=number))
    if not checks:
        raise ImeiFileError(f"{path}: no IMEIs")
    return checks


# ---------------------------------------------------------------------------------------------
# Generator


CATEGORIES = ("valid", "bad_check_digit", "malformed", "unknown_tac", "listed")
DEFAULT_MIX = {"valid": 70, "bad_check_digit": 5, "malformed": 5, "unknown_tac": 10, "listed": 10}
# GSMA TS.06 Appendix A: reporting bodies 00 and 02-09 allocate test IMEIs.
_TEST_RBI = frozenset(("00", "02", "03", "04", "05", "06", "07", "08", "09"))


def parse_mix(text: str) -> dict[str, int]:
    """``valid=70,listed=10,...`` -> weights; unnamed categories weigh 0. ValueError."""
    mix = dict.fromkeys(CATEGORIES, 0)
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, weight = part.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in mix:
            raise ValueError(f"mix item {part.strip()!r}: expected CATEGORY=WEIGHT with CATEGORY "
                             f"one of {', '.join(CATEGORIES)}")
        try:
            mix[name] = int(weight)
        except ValueError:
            raise ValueError(f"mix item {part.strip()!r}: weight is not an integer") from None
        if mix[name] < 0:
            raise ValueError(f"mix item {part.strip()!r}: negative weight")
    if not any(mix.values()):
        raise ValueError("mix: every weight is zero")
    return mix


@dataclass(slots=True)
class GatewayData:
    """What the gateway's configuration knows: TACs, operator list entries, registry records.

    Registry verdicts are derived from the local backend's seed files; with an ``http`` backend
    the remote verdicts are not known here (every IMEI counts as ``registry_unknown``), so give
    expectations in an IMEI file or run without verification.
    """

    tacs: frozenset[str]
    entries: tuple[ListEntry, ...]
    declarations: dict[str, TacDeclaration] = field(default_factory=dict)
    reported: frozenset[str] = frozenset()
    registry: bool = True  # a registry backend answers (local/http); False for "none"

    @classmethod
    def load(
        cls,
        tac_file: str | Path | None,
        list_files: Iterable[str | Path] = (),
        declaration_files: Iterable[str | Path] = (),
        registry: bool = True,
    ) -> GatewayData:
        tacs: frozenset[str] = frozenset()
        if tac_file is not None:
            records, _ = parse_tac_file(tac_file)
            tacs = frozenset(f"{t:08d}" for t in records)
        entries = tuple(e for path in list_files for e in read_csv(path))
        declarations: dict[str, TacDeclaration] = {}
        reported: set[str] = set()
        for path in declaration_files:
            for record in read_declaration_file(path):
                if isinstance(record, TacDeclaration):
                    declarations[record.tac] = record
                elif not record.withdrawn:
                    reported.add(record.imei[:14])
        return cls(tacs, entries, declarations, frozenset(reported), registry)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> GatewayData:
        """The data files a gateway configuration imports (TAC file, lists, registry seeds)."""
        registry = config.registry
        return cls.load(
            config.tac.file,
            config.lists.import_files,
            registry.seed_files if registry.backend == "local" else (),
            registry=registry.backend != "none",
        )

    # -- what the gateway concludes (gateway.classify order: lists, check digit, test, TAC,
    #    registry) ----------------------------------------------------------------------------
    def list_reasons(self, body: str, imsi: str | None) -> list[Reason]:
        value = int(body)
        tac = value // 1_000_000
        out: list[Reason] = []
        colour_reason = {
            ListColour.WHITE: Reason.WHITELISTED,
            ListColour.BLACK: Reason.BLACKLISTED,
            ListColour.GREY: Reason.GREYLISTED,
        }
        for e in self.entries:
            hit = (
                (e.kind is EntryKind.IMEI and e.first == value)
                or (e.kind is EntryKind.RANGE and e.first <= value <= e.last)
                or (e.kind is EntryKind.TAC and e.first == tac)
                or (e.kind is EntryKind.PAIR and e.first == value and imsi == e.imsi)
            )
            if hit:
                out.append(colour_reason[e.colour])
        # Reason order is precedence order (gateway.policy.Reason)
        order = list(Reason)
        return sorted(set(out), key=order.index)

    def registry_reasons(self, body: str) -> list[Reason]:
        if not self.registry:
            return []
        out: list[Reason] = []
        declaration = self.declarations.get(body[:8])
        if declaration is not None and declaration.participating and not declaration.covers(body):
            out.append(Reason.REGISTRY_NOT_MANUFACTURED)
        if body in self.reported:
            out.append(Reason.REGISTRY_REPORTED)
        if not out and (declaration is None or not declaration.covers(body)):
            out.append(Reason.REGISTRY_UNKNOWN)
        return out

    def reasons(self, body: str, imsi: str | None, bad_check_digit: bool = False) -> list[Reason]:
        out = self.list_reasons(body, imsi)
        if bad_check_digit:
            out.append(Reason.BAD_CHECK_DIGIT)
        if body[:2] in _TEST_RBI:
            out.append(Reason.NULL_OR_TEST)
        if self.tacs and body[:8] not in self.tacs:
            out.append(Reason.TAC_UNKNOWN)
        return out + self.registry_reasons(body)


def _outcome(policy: Policy, reasons: Sequence[Reason]) -> str:
    status = policy.decide(list(reasons)).status
    return OUTCOME_UNKNOWN if status is None else status.name


class ImeiGenerator:
    """Checks drawn from a weighted mix of categories, each with the outcome the gateway's
    policy gives it. Deterministic for a given seed."""

    def __init__(
        self,
        data: GatewayData,
        policy: Policy,
        mix: dict[str, int] | None = None,
        *,
        imsi: bool = False,
        sv: str | None = None,
        seed: int = 1,
        mcc_mnc: str = "00101",
    ) -> None:
        self.data = data
        self.policy = policy
        self.mix = dict(mix or DEFAULT_MIX)
        self.with_imsi = imsi
        self.sv = sv
        self.rng = random.Random(seed)
        self.mcc_mnc = mcc_mnc
        self._known = sorted(data.tacs)
        self._categories = [c for c in CATEGORIES if self.mix.get(c)]
        self._weights = [self.mix[c] for c in self._categories]
        self._listed_entries = [e for e in data.entries if e.kind is not EntryKind.PAIR or e.imsi]
        if self.mix.get("valid") or self.mix.get("bad_check_digit"):
            if not self._known:
                raise ValueError("valid IMEIs need a TAC file with at least one TAC")
        if self.mix.get("listed") and not self._listed_entries:
            raise ValueError("listed IMEIs need operator list entries")

    def _imsi(self) -> str | None:
        if not self.with_imsi:
            return None
        return self.mcc_mnc + f"{self.rng.randrange(10**10):010d}"

    def _clean_body(self) -> str:
        """A body with a known TAC that nothing lists or reports, inside any declared range."""
        rng = self.rng
        for _ in range(1000):
            tac = rng.choice(self._known)
            declaration = self.data.declarations.get(tac)
            if declaration is not None and declaration.participating and declaration.ranges:
                r = rng.choice(declaration.ranges)
                snr = rng.randint(r.first, r.last)
            else:
                snr = rng.randrange(1_000_000)
            body = f"{tac}{snr:06d}"
            if not self.data.list_reasons(body, None) and body not in self.data.reported:
                return body
        raise ValueError("no clean IMEI found in 1000 draws (lists cover every known TAC?)")

    def _unknown_tac_body(self) -> str:
        rng = self.rng
        for _ in range(1000):
            tac = f"{rng.randint(10, 99)}{rng.randrange(10**6):06d}"
            if tac[:2] in _TEST_RBI or tac in self.data.tacs or tac in self.data.declarations:
                continue
            body = f"{tac}{rng.randrange(10**6):06d}"
            if not self.data.list_reasons(body, None):
                return body
        raise ValueError("no unknown TAC found in 1000 draws")

    def _listed(self) -> tuple[str, str | None]:
        entry = self.rng.choice(self._listed_entries)
        if entry.kind is EntryKind.TAC:
            body = f"{entry.first:08d}{self.rng.randrange(10**6):06d}"
        elif entry.kind is EntryKind.RANGE:
            body = f"{self.rng.randint(entry.first, entry.last):014d}"
        else:
            body = f"{entry.first:014d}"
        imsi = entry.imsi if entry.kind is EntryKind.PAIR else self._imsi()
        return body, imsi

    def next(self) -> Check:
        category = self.rng.choices(self._categories, self._weights)[0]
        return self.make(category)

    def make(self, category: str) -> Check:
        rng = self.rng
        imsi = self._imsi()
        if category == "valid":
            body = self._clean_body()
            imei = body + luhn_check_digit(body) if rng.random() < 0.5 else body
            reasons = self.data.reasons(body, imsi)
        elif category == "bad_check_digit":
            body = self._clean_body()
            good = luhn_check_digit(body)
            imei = body + str((int(good) + rng.randint(1, 9)) % 10)
            reasons = self.data.reasons(body, imsi, bad_check_digit=True)
        elif category == "malformed":
            kind = rng.randrange(3)
            if kind == 0:  # too short
                imei = f"{rng.randrange(10**12):0{rng.randint(1, 13)}d}"[-13:]
            elif kind == 1:  # too long (17 digits)
                imei = f"{rng.randrange(10**17):017d}"
            else:  # a letter among 15 characters
                digits = list(f"{rng.randrange(10**15):015d}")
                digits[rng.randrange(15)] = rng.choice("ABCDEF")
                imei = "".join(digits)
            reasons = [Reason.MALFORMED]
        elif category == "unknown_tac":
            body = self._unknown_tac_body()
            imei = body + luhn_check_digit(body)
            reasons = self.data.reasons(body, imsi)
        elif category == "listed":
            body, imsi = self._listed()
            imei = body + luhn_check_digit(body)
            reasons = self.data.reasons(body, imsi)
        else:
            raise ValueError(f"unknown category {category!r}")
        return Check(imei, imsi, self.sv, _outcome(self.policy, reasons), category)

    def take(self, n: int) -> list[Check]:
        return [self.next() for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Request templates (TS 29.272 §7.2.19)


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """One encoded MICR, the offsets of the fields patched per request, and the octets between
    them (``pieces``): End-to-End, the Session-Id's digits, IMEI, Software-Version and User-Name
    in that order (TS 29.272 §7.2.19's order; an absent field is an empty cut after the one
    before it), so that a request is one join of the pieces and the fields."""

    raw: bytes
    session_offset: int  # first of the SESSION_SUFFIX_DIGITS digits
    imei_offset: int
    imei_length: int
    imsi_offset: int | None
    imsi_length: int
    sv_offset: int | None
    pieces: tuple[bytes, ...] = ()

    def fill(self, end_to_end: bytes, digits: bytes, imei: bytes, sv: bytes, imsi: bytes) -> bytes:
        """The request with the fields in (``sv``, ``imsi``: b"" when the template has none);
        its Hop-by-Hop is the peer core's to write when it is sent (RFC 6733 §3)."""
        p = self.pieces
        return b"".join((p[0], end_to_end, p[1], digits, p[2], imei, p[3], sv, p[4], imsi, p[5]))


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    """The identities every request of one connection carries (RFC 6733 §6.3, §6.5, §8.8)."""

    origin_host: str
    origin_realm: str
    destination_realm: str
    destination_host: str | None = None
    session_high: int = 0  # the high 32 bits of the Session-Id (e.g. the start time)
    # RFC 7683: OC-Supported-Features {OC-Feature-Vector OLR_DEFAULT_ALGO} in every request.
    doic: bool = False


def _offsets(raw: bytes, start: int, end: int, out: dict[tuple[int, int], int]) -> None:
    """AVP data offsets by (code, vendor), descending into Terminal-Information."""
    offset = start
    while offset < end:
        code, flags_length = _AVP_HEAD.unpack_from(raw, offset)
        length = flags_length & 0xFFFFFF
        vendor = 0
        data = offset + 8
        if flags_length >> 24 & 0x80:
            vendor = _U32.unpack_from(raw, offset + 8)[0]
            data = offset + 12
        out.setdefault((code, vendor), data)
        if (code, vendor) == (1401, VENDOR_3GPP):
            _offsets(raw, data, offset + length, out)
        offset += length + (-length & 3)


def build_template(
    identity: RequestIdentity, imei_length: int, imsi_length: int | None, sv_length: int | None
) -> RequestTemplate:
    """Encode one MICR of the given shape with placeholder digits (TS 29.272 §7.2.19 order)."""
    session = f"{identity.origin_host};{identity.session_high};" + "0" * SESSION_SUFFIX_DIGITS
    terminal = [Avp.new("IMEI", "0" * imei_length)]
    if sv_length is not None:
        terminal.append(Avp.new("Software-Version", "0" * sv_length))
    avps = [
        Avp.new("Session-Id", session),
        Avp.new(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", VENDOR_3GPP), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
        ),
        Avp.new("Auth-Session-State", AuthSessionState.NO_STATE_MAINTAINED),
        Avp.new("Origin-Host", identity.origin_host),
        Avp.new("Origin-Realm", identity.origin_realm),
    ]
    if identity.destination_host:
        avps.append(Avp.new("Destination-Host", identity.destination_host))
    avps.append(Avp.new("Destination-Realm", identity.destination_realm))
    avps.append(Avp.new("Terminal-Information", terminal))
    if imsi_length is not None:
        avps.append(Avp.new("User-Name", "0" * imsi_length))
    if identity.doic:
        # S13's grammars end in *[ AVP ] (TS 29.272 §7.2.19): DOIC AVPs ride along there.
        avps.append(
            Avp.new("OC-Supported-Features", [Avp.new("OC-Feature-Vector", OLR_DEFAULT_ALGO)])
        )
    message = Message(
        ME_IDENTITY_CHECK, S13_APPLICATION_ID, FLAG_REQUEST | FLAG_PROXIABLE, 0, 0, avps
    )
    raw = message.encode()
    found: dict[tuple[int, int], int] = {}
    _offsets(raw, 20, len(raw), found)
    session_offset = found[(_SESSION_ID, 0)] + len(session) - SESSION_SUFFIX_DIGITS
    imei_offset = found[(1402, VENDOR_3GPP)]
    sv_offset = found[(1403, VENDOR_3GPP)] if sv_length is not None else None
    imsi_offset = found[(1, 0)] if imsi_length is not None else None
    # The cuts, in the order of the octets: an absent field cuts nothing after the one before.
    cuts = [(16, 4), (session_offset, SESSION_SUFFIX_DIGITS), (imei_offset, imei_length)]
    after = imei_offset + imei_length
    cuts.append((after, 0) if sv_offset is None else (sv_offset, sv_length or 0))
    after = cuts[-1][0] + cuts[-1][1]
    cuts.append((after, 0) if imsi_offset is None else (imsi_offset, imsi_length or 0))
    pieces, position = [], 0
    for offset, length in cuts:
        pieces.append(raw[position:offset])
        position = offset + length
    pieces.append(raw[position:])
    return RequestTemplate(
        raw, session_offset, imei_offset, imei_length, imsi_offset, imsi_length or 0, sv_offset,
        tuple(pieces),
    )


@dataclass(frozen=True, slots=True)
class PreparedCheck:
    """A Check with its text already encoded and its template chosen."""

    check: Check
    template: RequestTemplate
    imei: bytes
    imsi: bytes | None
    sv: bytes | None


class RequestFactory:
    """Builds request bytes for one connection from templates: one join of each template's
    constant pieces and the request's fields."""

    def __init__(self, identity: RequestIdentity) -> None:
        self.identity = identity
        # (IMEI octets, User-Name octets, Software-Version octets; -1 when absent)
        self._templates: dict[tuple[int, int, int], RequestTemplate] = {}
        self.session_prefix = f"{identity.origin_host};{identity.session_high};"
        self._session_prefix = self.session_prefix.encode()

    def template(self, imei_length: int, imsi_length: int | None, sv: bool | int) -> RequestTemplate:
        """The template of a shape (``sv``: True for 2 digits, or the length)."""
        sv_length = -1 if sv is False else 2 if sv is True else sv
        return self._shape((imei_length, -1 if imsi_length is None else imsi_length, sv_length))

    def _shape(self, key: tuple[int, int, int]) -> RequestTemplate:
        tpl = self._templates.get(key)
        if tpl is None:
            imei, imsi, sv = key
            tpl = self._templates[key] = build_template(
                self.identity, imei, None if imsi < 0 else imsi, None if sv < 0 else sv
            )
        return tpl

    def request(self, check: Check, end_to_end: int, session_suffix: int) -> tuple[bytes, bytes]:
        """One request's bytes and its Session-Id (RFC 6733 §8.8): the simulator's per-request
        path, one join and nothing kept but what it returns."""
        imei = check.imei.encode()
        if check.imsi is None:
            imsi, imsi_length = b"", -1
        else:
            imsi = check.imsi.encode()
            imsi_length = len(imsi)
        if check.sv is None:
            sv, sv_length = b"", -1
        else:
            sv = check.sv.encode()
            sv_length = len(sv)
        key = (len(imei), imsi_length, sv_length)
        tpl = self._templates.get(key) or self._shape(key)
        digits = b"%010d" % session_suffix
        p = tpl.pieces  # RequestTemplate.fill, inline: once a request
        raw = b"".join(
            (p[0], _U32.pack(end_to_end), p[1], digits, p[2], imei, p[3], sv, p[4], imsi, p[5])
        )
        return raw, self._session_prefix + digits

    def prepare(self, check: Check) -> PreparedCheck:
        imei = check.imei.encode("utf-8")
        imsi = None if check.imsi is None else check.imsi.encode("ascii")
        sv = None if check.sv is None else check.sv.encode("ascii")
        tpl = self._shape(
            (len(imei), -1 if imsi is None else len(imsi), -1 if sv is None else len(sv))
        )
        return PreparedCheck(check, tpl, imei, imsi, sv)

    @staticmethod
    def build(prepared: PreparedCheck, end_to_end: int, session_suffix: int) -> bytearray:
        """The request bytes of a prepared check, for a caller that patches them further."""
        return bytearray(prepared.template.fill(
            _U32.pack(end_to_end), b"%010d" % session_suffix, prepared.imei,
            prepared.sv or b"", prepared.imsi or b"",
        ))


# ---------------------------------------------------------------------------------------------
# Answers


def scan_answer(raw: bytes) -> tuple[bytes | None, int | None, int | None, int | None]:
    """(Session-Id, Result-Code, Experimental-Result-Code, Equipment-Status) of an answer.

    One pass over the top-level AVPs (RFC 6733 §4.1), and over the first Experimental-Result's
    (§7.6); each field is the first AVP of its code and vendor, as a full decode's
    ``Message.find`` gives it (an Unsigned32 not 4 octets long gives no value); an AVP that
    does not fit ends the scan, where the decoder stops too
    (tests/simulator/test_answer_scan.py holds the two to each other).
    """
    session = result = experimental = status = None
    found = 0  # bits: _SESSION_BIT ... of the fields whose first AVP has been met
    end = len(raw)
    offset = 20
    unpack = _AVP_HEAD.unpack_from
    while offset + 8 <= end:
        code, flags_length = unpack(raw, offset)
        length = flags_length & 0xFFFFFF
        if flags_length & 0x80000000:
            if length < 12 or offset + length > end:
                break
            vendor = _U32.unpack_from(raw, offset + 8)[0]
            data = offset + 12
        else:
            if length < 8 or offset + length > end:
                break
            vendor = 0
            data = offset + 8
        size = offset + length - data
        if vendor == 0:
            if code == _SESSION_ID and not found & _SESSION_BIT:
                found |= _SESSION_BIT
                session = raw[data : offset + length]
            elif code == _RESULT_CODE and not found & _RESULT_BIT:
                found |= _RESULT_BIT
                if size == 4:
                    result = _U32.unpack_from(raw, data)[0]
            elif code == _EXPERIMENTAL_RESULT and not found & _EXPERIMENTAL_BIT:
                found |= _EXPERIMENTAL_BIT
                experimental = _experimental_result_code(raw, data, offset + length)
        elif code == _EQUIPMENT_STATUS and vendor == VENDOR_3GPP and not found & _STATUS_BIT:
            found |= _STATUS_BIT
            if size == 4:
                status = _U32.unpack_from(raw, data)[0]
        offset += length + (-length & 3)
    return session, result, experimental, status


_SESSION_BIT, _RESULT_BIT, _EXPERIMENTAL_BIT, _STATUS_BIT = 1, 2, 4, 8


def _experimental_result_code(raw: bytes, offset: int, end: int) -> int | None:
    """The first Experimental-Result-Code among an Experimental-Result's AVPs (RFC 6733 §7.6)."""
    unpack = _AVP_HEAD.unpack_from
    while offset + 8 <= end:
        code, flags_length = unpack(raw, offset)
        length = flags_length & 0xFFFFFF
        vendor = 0
        data = offset + 8
        if flags_length & 0x80000000:
            if length < 12 or offset + length > end:
                return None
            vendor = _U32.unpack_from(raw, offset + 8)[0]
            data = offset + 12
        elif length < 8 or offset + length > end:
            return None
        if code == _EXPERIMENTAL_RESULT_CODE and vendor == 0:
            return _U32.unpack_from(raw, data)[0] if offset + length - data == 4 else None
        offset += length + (-length & 3)
    return None


class AnswerScanner:
    """``scan_answer`` with a memo of the part after the Session-Id.

    An EIR builds its answers from a few constant blocks (one per outcome) behind the per-request
    Session-Id, so the bytes after the first AVP repeat; their scan result is remembered by value
    (exact bytes as the key, a bounded number of them). Answers whose first AVP is not the
    Session-Id are scanned in full.
    """

    __slots__ = ("_memo", "max_entries")

    def __init__(self, max_entries: int = 256) -> None:
        self._memo: dict[bytes, tuple[int | None, int | None, int | None]] = {}
        self.max_entries = max_entries

    def scan(self, raw: bytes) -> tuple[bytes | None, int | None, int | None, int | None]:
        session, fields = self.split(raw)
        return (session, *fields)

    def split(self, raw: bytes) -> tuple[bytes | None, tuple[int | None, int | None, int | None]]:
        """``scan`` as (Session-Id, (Result-Code, Experimental-Result-Code, Equipment-Status)),
        the second the same object for every answer of one remembered tail."""
        if len(raw) >= 28 and raw.startswith(b"\x00\x00\x01\x07", 20) and not raw[24] & 0x80:
            length = (raw[25] << 16) | (raw[26] << 8) | raw[27]
            end = 20 + length
            rest_start = 20 + ((length + 3) & ~3)
            if 8 <= length and rest_start <= len(raw):
                rest = raw[rest_start:]
                found = self._memo.get(rest)
                if found is None:
                    found = scan_answer(b"\0" * 20 + rest)[1:]
                    if len(self._memo) < self.max_entries:
                        self._memo[rest] = found
                return raw[28:end], found
        session, result, experimental, status = scan_answer(raw)
        return session, (result, experimental, status)


def outcome_of(result: int | None, experimental: int | None, status: int | None) -> str:
    """The outcome name of an answer (see ``OUTCOME_UNKNOWN``)."""
    if result == SUCCESS and status is not None:
        return _STATUS_NAMES.get(status, f"STATUS_{status}")
    if experimental == EQUIPMENT_UNKNOWN and result is None:
        return OUTCOME_UNKNOWN
    code = result if result is not None else experimental
    return f"RESULT_{code}" if code is not None else "RESULT_NONE"
