"""Diameter message and AVP codec (RFC 6733 §3, §4), sans-IO.

Decoding reads the header and an index of AVPs; values are converted only when read. Structural
problems inside a message (bad AVP length, truncated AVP) do not raise: the message carries its
first problem (RFC 6733 §7.1: report only the first error), and the caller answers with it.
Only bytes that are not a Diameter message at all raise ``DecodeError``.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from diameter.dictionary import DICTIONARY, AvpDef, AvpType, Dictionary, FlagRule
from diameter.errors import DecodeError, EncodeError

# Header flags (RFC 6733 §3)
FLAG_REQUEST: Final = 0x80
FLAG_PROXIABLE: Final = 0x40
FLAG_ERROR = 0x20
FLAG_RETRANSMIT = 0x10
# AVP flags (RFC 6733 §4.1)
AVP_FLAG_VENDOR = 0x80
AVP_FLAG_MANDATORY = 0x40
AVP_FLAG_PROTECTED = 0x20
AVP_FLAGS_RESERVED = 0x1F

HEADER_LENGTH: Final = 20
_HEADER = struct.Struct("!IIIII")
_AVP_HEADER = struct.Struct("!II")
_AVP_VENDOR_HEADER = struct.Struct("!III")
_U32 = struct.Struct("!I")
_I32 = struct.Struct("!i")
_U64 = struct.Struct("!Q")
_I64 = struct.Struct("!q")
_F32 = struct.Struct("!f")
_F64 = struct.Struct("!d")
_H = struct.Struct("!H")
# AVP and message lengths are 24-bit fields (RFC 6733 §3, §4.1).
_MAX_LENGTH = 0xFFFFFF
_MAX_AVP_DATA = _MAX_LENGTH - 12
_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")

# RFC 6733 §4.3.1 Time: seconds since 1900-01-01 UTC; values with the top bit clear are past 2036
_NTP_EPOCH = _dt.datetime(1900, 1, 1, tzinfo=_dt.UTC)
_NTP_ERA1 = _dt.datetime(2036, 2, 7, 6, 28, 16, tzinfo=_dt.UTC)

_FIXED_SIZE = {
    AvpType.INTEGER32: 4,
    AvpType.UNSIGNED32: 4,
    AvpType.ENUMERATED: 4,
    AvpType.FLOAT32: 4,
    AvpType.TIME: 4,
    AvpType.INTEGER64: 8,
    AvpType.UNSIGNED64: 8,
    AvpType.FLOAT64: 8,
}
# Octets of each fixed-size data type (RFC 6733 §4.2, §4.3); other types vary in length.
FIXED_SIZE: Mapping[AvpType, int] = _FIXED_SIZE

# Result codes used by the codec (the full table is dictionary data: base_rfc6733.ResultCode).
_INVALID_AVP_VALUE = 5004
_UNSUPPORTED_VERSION = 5011
_INVALID_AVP_LENGTH = 5014
_INVALID_MESSAGE_LENGTH = 5015


@dataclass(frozen=True, slots=True)
class Problem:
    """The first error found in a received message: what to answer with (RFC 6733 §7.1, §7.5)."""

    result_code: int
    failed_avp: Avp | None = None
    error_message: str | None = None


class Avp:
    """One AVP: header fields and raw data; the value is decoded on access."""

    __slots__ = ("_children", "code", "data", "flags", "vendor")

    def __init__(self, code: int, flags: int, vendor: int, data: bytes) -> None:
        self.code = code
        self.flags = flags
        self.vendor = vendor
        self.data = data
        self._children: list[Avp] | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def new(
        cls,
        name: str,
        value: Any,
        *,
        mandatory: bool | None = None,
        dictionary: Dictionary = DICTIONARY,
    ) -> Avp:
        """Build an AVP from its dictionary name and a Python value (flags per its definition)."""
        defn = dictionary.avp(name)
        flags = AVP_FLAG_VENDOR if defn.vendor else 0
        if mandatory if mandatory is not None else defn.m_rule is FlagRule.MUST:
            flags |= AVP_FLAG_MANDATORY
        if defn.type is AvpType.GROUPED:
            # Materialise first: an iterator would be used up by the encoder.
            children = list(value)
            avp = cls(defn.code, flags, defn.vendor, encode_value(defn.type, children))
            avp._children = children
            return avp
        return cls(defn.code, flags, defn.vendor, encode_value(defn.type, value))

    @classmethod
    def zero_filled(cls, defn: AvpDef) -> Avp:
        """RFC 6733 §7.5: an AVP with the right code and vendor and a zero-filled minimal payload."""
        return cls(defn.code, definition_flags(defn), defn.vendor, minimum_payload(defn))

    # -- flags ----------------------------------------------------------------------------------
    @property
    def is_mandatory(self) -> bool:
        return bool(self.flags & AVP_FLAG_MANDATORY)

    @property
    def key(self) -> tuple[int, int]:
        return (self.code, self.vendor)

    def definition(self, dictionary: Dictionary = DICTIONARY) -> AvpDef | None:
        return dictionary.avps.get((self.code, self.vendor))

    # -- values ---------------------------------------------------------------------------------
    @property
    def value(self) -> Any:
        """The data decoded per the AVP's dictionary type; raw bytes for unknown AVPs."""
        decode = _VALUE_DECODERS.get((self.code, self.vendor))
        if decode is not None:
            return decode(self.data)
        defn = DICTIONARY.avps.get((self.code, self.vendor))
        if defn is None:
            return self.data
        if defn.type is AvpType.GROUPED:
            return self.children
        return decode_value(defn.type, self.data)

    @property
    def children(self) -> list[Avp]:
        """AVPs inside a Grouped AVP (RFC 6733 §4.4). Raises DecodeError (5014) when malformed."""
        if self._children is None:
            children, problem = decode_avps(self.data, 0, len(self.data))
            if problem is not None:
                # Inside a Grouped AVP, stray bytes or a bad inner length make the Grouped AVP's
                # own length wrong: 5014, not the message-level 5015 (RFC 6733 §4.4, §7.1.5).
                raise DecodeError(
                    problem.error_message or "malformed Grouped AVP", _INVALID_AVP_LENGTH
                )
            self._children = children
        return self._children

    def find(self, code: int, vendor: int = 0) -> Avp | None:
        for avp in self.children:
            if avp.code == code and avp.vendor == vendor:
                return avp
        return None

    # -- encoding -------------------------------------------------------------------------------
    def encode(self) -> bytes:
        data = self.data
        n = len(data)
        if n > _MAX_AVP_DATA:
            raise EncodeError(f"AVP {self.code}: {n} octets do not fit the 24-bit AVP Length")
        if self.vendor or self.flags & AVP_FLAG_VENDOR:
            head = _AVP_VENDOR_HEADER.pack(
                self.code, ((self.flags | AVP_FLAG_VENDOR) << 24) | (n + 12), self.vendor
            )
        else:
            head = _AVP_HEADER.pack(self.code, (self.flags << 24) | (n + 8))
        pad = -n & 3
        return head + data + _PADDING[pad] if pad else head + data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Avp):
            return NotImplemented
        return (self.code, self.flags, self.vendor, self.data) == (
            other.code,
            other.flags,
            other.vendor,
            other.data,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.flags, self.vendor, self.data))

    def __repr__(self) -> str:
        return _avp_repr(self, 0)


_REPR_DEPTH = 8


def _avp_repr(avp: Avp, depth: int) -> str:
    """repr of an AVP; Grouped AVPs deeper than _REPR_DEPTH are elided (no unbounded recursion)."""
    defn = DICTIONARY.avps.get((avp.code, avp.vendor))
    name = defn.name if defn else f"AVP({avp.code}, vendor={avp.vendor})"
    shown: str
    try:
        if defn is not None and defn.type is AvpType.GROUPED:
            if depth >= _REPR_DEPTH:
                shown = f"<{len(avp.data)} octets>"
            else:
                shown = "[" + ", ".join(_avp_repr(c, depth + 1) for c in avp.children) + "]"
        else:
            shown = repr(avp.value)
    except DecodeError:
        shown = repr(avp.data)
    return f"<{name} flags=0x{avp.flags:02x} {shown}>"


class Message:
    """A Diameter message: header fields and top-level AVPs (RFC 6733 §3)."""

    __slots__ = (
        "application_id",
        "avps",
        "command_code",
        "end_to_end",
        "flags",
        "hop_by_hop",
        "problem",
        "version",
    )

    def __init__(
        self,
        command_code: int,
        application_id: int,
        flags: int,
        hop_by_hop: int = 0,
        end_to_end: int = 0,
        avps: list[Avp] | None = None,
        version: int = 1,
        problem: Problem | None = None,
    ) -> None:
        self.version = version
        self.flags = flags
        self.command_code = command_code
        self.application_id = application_id
        self.hop_by_hop = hop_by_hop
        self.end_to_end = end_to_end
        self.avps: list[Avp] = avps if avps is not None else []
        self.problem = problem

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & FLAG_PROXIABLE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def is_retransmit(self) -> bool:
        return bool(self.flags & FLAG_RETRANSMIT)

    def find(self, code: int, vendor: int = 0) -> Avp | None:
        for avp in self.avps:
            if avp.code == code and avp.vendor == vendor:
                return avp
        return None

    def find_all(self, code: int, vendor: int = 0) -> Iterator[Avp]:
        return (a for a in self.avps if a.code == code and a.vendor == vendor)

    def get(self, name: str, default: Any = None) -> Any:
        """Value of the first AVP called ``name``, or ``default``."""
        defn = DICTIONARY.avp(name)
        avp = self.find(defn.code, defn.vendor)
        return default if avp is None else avp.value

    def add(self, name: str, value: Any) -> Message:
        self.avps.append(Avp.new(name, value))
        return self

    def encode(self) -> bytes:
        return encode_message(
            self.flags,
            self.command_code,
            self.application_id,
            self.hop_by_hop,
            self.end_to_end,
            b"".join([a.encode() for a in self.avps]),
        )

    def __repr__(self) -> str:
        name = DICTIONARY.command_name(self.command_code, self.is_request)
        return (
            f"<Message {name} app={self.application_id} flags=0x{self.flags:02x} "
            f"hbh={self.hop_by_hop} e2e={self.end_to_end} avps={self.avps!r}>"
        )


def encode_message(
    flags: int,
    command_code: int,
    application_id: int,
    hop_by_hop: int,
    end_to_end: int,
    avp_bytes: bytes,
) -> bytes:
    """Header + already encoded AVPs. The fast path for answers built from pre-encoded blocks."""
    if len(avp_bytes) > _MAX_LENGTH - HEADER_LENGTH:
        raise EncodeError(f"{len(avp_bytes)} octets of AVPs do not fit the 24-bit Message Length")
    return (
        _HEADER.pack(
            0x01000000 | (HEADER_LENGTH + len(avp_bytes)),
            (flags << 24) | command_code,
            application_id,
            hop_by_hop,
            end_to_end,
        )
        + avp_bytes
    )


def encode_avp(code: int, flags: int, vendor: int, data: bytes) -> bytes:
    """One AVP on the wire (RFC 6733 §4.1); used to pre-encode constant AVP blocks."""
    n = len(data)
    if n > _MAX_AVP_DATA:
        raise EncodeError(f"AVP {code}: {n} octets do not fit the 24-bit AVP Length")
    if vendor or flags & AVP_FLAG_VENDOR:
        head = _AVP_VENDOR_HEADER.pack(code, ((flags | AVP_FLAG_VENDOR) << 24) | (n + 12), vendor)
    else:
        head = _AVP_HEADER.pack(code, (flags << 24) | (n + 8))
    pad = -n & 3
    return head + data + _PADDING[pad] if pad else head + data


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode one whole message. Raises DecodeError only when the header itself is unusable."""
    buf = bytes(data)
    if len(buf) < HEADER_LENGTH:
        raise DecodeError(
            f"{len(buf)} bytes is shorter than a Diameter header", _INVALID_MESSAGE_LENGTH
        )
    w0, w1, app_id, hbh, e2e = _HEADER.unpack_from(buf)
    version = w0 >> 24
    length = w0 & 0xFFFFFF
    if version != 1:
        raise DecodeError(f"unsupported Diameter version {version}", _UNSUPPORTED_VERSION)
    if length != len(buf) or length & 3:
        raise DecodeError(
            f"message length {length} does not match the {len(buf)} bytes given",
            _INVALID_MESSAGE_LENGTH,
        )
    avps, problem = decode_avps(buf, HEADER_LENGTH, length)
    return Message(w1 & 0xFFFFFF, app_id, w1 >> 24, hbh, e2e, avps, version, problem)


def decode_avps(buf: bytes, offset: int, end: int) -> tuple[list[Avp], Problem | None]:
    """Split ``buf[offset:end]`` into AVPs; stop at the first structural problem."""
    avps: list[Avp] = []
    append = avps.append
    new_avp = Avp
    if end == len(buf):
        # Well-formed AVPs first, with fewer checks per AVP: a header cut short raises
        # struct.error, a length out of bounds stops the loop. Where either happens, the careful
        # loop below resumes from that AVP and reports the problem.
        unpack_head = _AVP_HEADER.unpack_from
        unpack_vendor_id = _U32.unpack_from
        try:
            while offset < end:
                code, flags_length = unpack_head(buf, offset)
                length = flags_length & 0xFFFFFF
                stop = offset + length
                if flags_length & 0x80000000:  # V bit (RFC 6733 §4.1): a Vendor-ID follows
                    start = offset + 12
                    vendor = unpack_vendor_id(buf, offset + 8)[0]
                else:
                    start = offset + 8
                    vendor = 0
                if stop < start or stop > end:
                    break
                append(new_avp(code, flags_length >> 24, vendor, buf[start:stop]))
                offset = stop + (-length & 3)
            else:
                if offset == end:
                    return avps, None
        except struct.error:
            pass
    return _decode_avps_checked(buf, offset, end, avps)


def _decode_avps_checked(
    buf: bytes, offset: int, end: int, avps: list[Avp]
) -> tuple[list[Avp], Problem | None]:
    """decode_avps's loop with every check, from ``offset`` on, appending to ``avps``."""
    append = avps.append
    unpack_plain = _AVP_HEADER.unpack_from
    unpack_vendor = _AVP_VENDOR_HEADER.unpack_from
    new_avp = Avp
    while offset < end:
        left = end - offset
        if left < 8:
            return avps, Problem(
                _INVALID_MESSAGE_LENGTH, None, f"{left} stray bytes after the last AVP"
            )
        if buf[offset + 4] & 0x80:  # V bit (RFC 6733 §4.1): a Vendor-ID follows the length
            if left < 12:
                return avps, Problem(_INVALID_AVP_LENGTH, None, "truncated vendor AVP header")
            code, flags_length, vendor = unpack_vendor(buf, offset)
            start = offset + 12
        else:
            code, flags_length = unpack_plain(buf, offset)
            vendor = 0
            start = offset + 8
        length = flags_length & 0xFFFFFF
        stop = offset + length
        if stop < start or stop > end:
            bad = Avp(code, flags_length >> 24, vendor, b"")
            return avps, Problem(
                _INVALID_AVP_LENGTH,
                _zero_payload(bad),
                f"AVP {code} length {length} does not fit the message",
            )
        append(new_avp(code, flags_length >> 24, vendor, buf[start:stop]))
        offset = stop + (-length & 3)
    if offset > end:
        # The last AVP's padding runs past the end (RFC 6733 §4: length excludes padding).
        return avps, Problem(_INVALID_MESSAGE_LENGTH, None, "last AVP is not padded to 32 bits")
    return avps, None


def _zero_payload(avp: Avp) -> Avp:
    defn = DICTIONARY.avps.get((avp.code, avp.vendor))
    data = minimum_payload(defn) if defn else b""
    return Avp(avp.code, avp.flags & ~AVP_FLAGS_RESERVED, avp.vendor, data)


def definition_flags(defn: AvpDef) -> int:
    """The V and M bits ``defn`` gives the AVP (M when its rule is MUST)."""
    return (AVP_FLAG_VENDOR if defn.vendor else 0) | (
        AVP_FLAG_MANDATORY if defn.m_rule is FlagRule.MUST else 0
    )


# An Address is a 2-octet AddressType then the address (RFC 6733 §4.3.1): type 0 and 4 octets.
_MINIMUM_ADDRESS = 6
_MAX_MINIMUM_DEPTH = 8  # Grouped AVPs requiring Grouped AVPs: bounded, whatever the dictionary


def minimum_payload(defn: AvpDef, dictionary: Dictionary = DICTIONARY, depth: int = 0) -> bytes:
    """The zero-filled payload of the minimum length ``defn``'s type allows, for Failed-AVP
    (RFC 6733 §7.5, §7.1.5 5005 and 5014: "of correct minimum length and contain zeroes").

    Fixed-size types: their size. Address: AddressType and four octets. Grouped: its required
    AVPs, each zero-filled. Octet strings: one zero octet, as freeDiameter sends, since an empty
    value is no minimum for a DiameterIdentity and Wireshark flags empty data.
    """
    size = _FIXED_SIZE.get(defn.type)
    if size is not None:
        return bytes(size)
    if defn.type is AvpType.ADDRESS:
        return bytes(_MINIMUM_ADDRESS)
    if defn.type is not AvpType.GROUPED:
        return b"\x00"
    grammar = defn.grammar
    if grammar is None or depth >= _MAX_MINIMUM_DEPTH:
        return b""
    parts: list[bytes] = []
    for rule, key in zip(grammar.rules, grammar.keys, strict=True):
        child = dictionary.avps.get(key)
        if rule.min and child is not None:
            data = minimum_payload(child, dictionary, depth + 1)
            avp = encode_avp(child.code, definition_flags(child), child.vendor, data)
            parts.append(avp * rule.min)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Values (RFC 6733 §4.2, §4.3)


def decode_value(avp_type: AvpType, data: bytes) -> Any:
    """Decode ``data`` as ``avp_type``. Raises DecodeError with 5014 (length) or 5004 (value)."""
    return _TYPE_DECODERS[avp_type](data)


def _make_decoder(avp_type: AvpType) -> Callable[[bytes], Any]:
    """The decoder of one data type, with its size check and error mapping bound in."""
    name = avp_type.value
    size = _FIXED_SIZE.get(avp_type)
    if avp_type is AvpType.GROUPED:

        def decode_grouped(data: bytes) -> Any:
            # Same as Avp.children: the inner AVPs, or 5014 when they do not parse.
            avps, problem = decode_avps(data, 0, len(data))
            if problem is not None:
                raise DecodeError(
                    problem.error_message or "malformed Grouped AVP", _INVALID_AVP_LENGTH
                )
            return avps

        return decode_grouped
    decoder = _DECODERS[avp_type]
    if size is not None:

        def decode_fixed(data: bytes) -> Any:
            if len(data) != size:
                raise DecodeError(
                    f"{name} needs {size} octets, got {len(data)}", _INVALID_AVP_LENGTH
                )
            return decoder(data)

        return decode_fixed

    def decode_variable(data: bytes) -> Any:
        try:
            return decoder(data)
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 in {name}: {exc}", _INVALID_AVP_VALUE) from None

    return decode_variable


def _decode_address(data: bytes) -> Any:
    if len(data) < 2:
        raise DecodeError("Address shorter than its family field", _INVALID_AVP_LENGTH)
    family = _H.unpack_from(data)[0]
    if family == 1:
        if len(data) != 6:
            raise DecodeError("IPv4 Address must be 4 octets", _INVALID_AVP_LENGTH)
        return ipaddress.IPv4Address(data[2:])
    if family == 2:
        if len(data) != 18:
            raise DecodeError("IPv6 Address must be 16 octets", _INVALID_AVP_LENGTH)
        return ipaddress.IPv6Address(data[2:])
    return (family, data[2:])


# RFC 6733 §4.3.1: DiameterIdentity is an FQDN or realm in ASCII (IDNs as A-labels): printable
# octets, no space, not empty.
_IDENTITY = re.compile(rb"[\x21-\x7e]+")


def _decode_identity(data: bytes) -> str:
    if _IDENTITY.fullmatch(data) is None:
        raise DecodeError(f"invalid DiameterIdentity {data!r}", _INVALID_AVP_VALUE)
    return data.decode("ascii")


# DiameterIdentity octets already found valid -> the identity in lower case. Requests repeat a
# handful of hosts and realms; bounded, so that a flood of new names only stops the caching.
_IDENTITY_LOWER: dict[bytes, str] = {}
_IDENTITY_CACHE_SIZE = 4096


def identity_lower(data: bytes) -> str:
    """A DiameterIdentity value in lower case (for comparisons and keys); DecodeError as
    ``decode_value`` raises it for an invalid one."""
    lower = _IDENTITY_LOWER.get(data)
    if lower is None:
        lower = _decode_identity(data).lower()
        if len(_IDENTITY_LOWER) < _IDENTITY_CACHE_SIZE:
            _IDENTITY_LOWER[bytes(data)] = lower
    return lower


def is_known_identity(data: bytes) -> bool:
    """True when ``data`` was already found a valid DiameterIdentity (False: not known)."""
    return data in _IDENTITY_LOWER


# The same, for code that tests membership inline (validate's checkers): read, never written.
KNOWN_IDENTITIES: Mapping[bytes, str] = _IDENTITY_LOWER


def utf8_value(data: bytes) -> str:
    """A UTF8String's value (RFC 6733 §4.3.1), as ``decode_value`` gives it (5004 when the
    octets are not UTF-8), without its dispatch on the type: for a handler's hot path."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"invalid UTF-8 in {AvpType.UTF8_STRING.value}: {exc}", _INVALID_AVP_VALUE
        ) from None


def _decode_uri(data: bytes) -> str:
    text = data.decode("utf-8")
    if not (text.startswith("aaa://") or text.startswith("aaas://")):
        raise DecodeError(f"invalid DiameterURI {text!r}", _INVALID_AVP_VALUE)
    return text


def _decode_time(data: bytes) -> _dt.datetime:
    seconds = _U32.unpack(data)[0]
    base = _NTP_EPOCH if seconds & 0x80000000 else _NTP_ERA1
    return base + _dt.timedelta(seconds=seconds)


_DECODERS: dict[AvpType, Any] = {
    AvpType.OCTET_STRING: bytes,
    AvpType.INTEGER32: lambda d: _I32.unpack(d)[0],
    AvpType.INTEGER64: lambda d: _I64.unpack(d)[0],
    AvpType.UNSIGNED32: lambda d: _U32.unpack(d)[0],
    AvpType.UNSIGNED64: lambda d: _U64.unpack(d)[0],
    AvpType.ENUMERATED: lambda d: _I32.unpack(d)[0],
    AvpType.FLOAT32: lambda d: _F32.unpack(d)[0],
    AvpType.FLOAT64: lambda d: _F64.unpack(d)[0],
    AvpType.ADDRESS: _decode_address,
    AvpType.TIME: _decode_time,
    AvpType.UTF8_STRING: lambda d: d.decode("utf-8"),
    AvpType.DIAMETER_IDENTITY: _decode_identity,
    AvpType.DIAMETER_URI: _decode_uri,
    AvpType.IP_FILTER_RULE: lambda d: d.decode("ascii"),
}


def encode_value(avp_type: AvpType, value: Any) -> bytes:
    """Encode a Python value as ``avp_type`` data. Raises EncodeError."""
    try:
        return _ENCODERS[avp_type](value)
    except (
        struct.error,
        TypeError,
        ValueError,
        UnicodeError,
        OverflowError,
        AttributeError,  # a Grouped value holding something that is not an Avp
        DecodeError,  # the DiameterIdentity / DiameterURI checks reuse the decoders
    ) as exc:
        raise EncodeError(f"cannot encode {value!r} as {avp_type.value}: {exc}") from None


def _encode_bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    # bytes(5) would be five NUL octets, not an error
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def _encode_address(value: Any) -> bytes:
    if isinstance(value, tuple):
        family, raw = value
        return _H.pack(family) + bytes(raw)
    addr = ipaddress.ip_address(value)
    return _H.pack(1 if addr.version == 4 else 2) + addr.packed


def _encode_identity(value: str) -> bytes:
    data = value.encode("ascii")
    _decode_identity(data)
    return data


def _encode_time(value: _dt.datetime | int) -> bytes:
    if isinstance(value, _dt.datetime):
        seconds = int((value - _NTP_EPOCH).total_seconds())
        # RFC 6733 §4.3.1 / RFC 5905: era 0 for values with the top bit set, era 1 (from
        # 2036-02-07T06:28:16Z) for the others. Outside that window the decoder would read the
        # value back as another instant: refuse rather than wrap silently.
        if not 0x80000000 <= seconds < 0x80000000 + 0x100000000:
            raise ValueError("Time outside 1968-01-20T03:14:08Z .. 2104-02-26T09:42:23Z")
        return _U32.pack(seconds & 0xFFFFFFFF)
    return _U32.pack(value)


def _encode_grouped(value: Iterable[Avp]) -> bytes:
    return b"".join([avp.encode() for avp in value])


def _encode_uri(value: str) -> bytes:
    data = value.encode("utf-8")
    _decode_uri(data)
    return data


_ENCODERS: dict[AvpType, Any] = {
    AvpType.OCTET_STRING: _encode_bytes,
    AvpType.INTEGER32: _I32.pack,
    AvpType.INTEGER64: _I64.pack,
    AvpType.UNSIGNED32: _U32.pack,
    AvpType.UNSIGNED64: _U64.pack,
    AvpType.ENUMERATED: _I32.pack,
    AvpType.FLOAT32: _F32.pack,
    AvpType.FLOAT64: _F64.pack,
    AvpType.GROUPED: _encode_grouped,
    AvpType.ADDRESS: _encode_address,
    AvpType.TIME: _encode_time,
    AvpType.UTF8_STRING: _encode_bytes,
    AvpType.DIAMETER_IDENTITY: _encode_identity,
    AvpType.DIAMETER_URI: _encode_uri,
    AvpType.IP_FILTER_RULE: _encode_bytes,
}

_TYPE_DECODERS: dict[AvpType, Callable[[bytes], Any]] = {t: _make_decoder(t) for t in AvpType}
# Avp.value: the decoder of every non-Grouped AVP of the default dictionary, by (code, vendor).
_VALUE_DECODERS: dict[tuple[int, int], Callable[[bytes], Any]] = {
    key: _TYPE_DECODERS[defn.type]
    for key, defn in DICTIONARY.avps.items()
    if defn.type is not AvpType.GROUPED
}
