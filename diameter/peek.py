"""Reading a few fields of encoded messages without decoding them: command names for logs and
metric labels, and the Result-Code of an answer (handlers may return pre-encoded bytes)."""

from __future__ import annotations

import struct

from diameter.codec import HEADER_LENGTH
from diameter.dictionary import DICTIONARY

RESULT_CODE, EXPERIMENTAL_RESULT, EXPERIMENTAL_RESULT_CODE = 268, 297, 298
_AVP = struct.Struct("!II")

# Label of a command the dictionary does not know: peers may send any of 2**24 codes, and a
# metric label (or this memo) keyed by the code would grow without bound.
UNKNOWN_COMMAND = "unknown"
_KNOWN_CODES = frozenset(code for _, code in DICTIONARY.commands)
# By code, one table per direction: looked up twice per message (in and out), an int key costs
# a fraction of a (code, is_request) tuple's allocation and hash.
_REQUEST_NAMES: dict[int, str] = {}
_ANSWER_NAMES: dict[int, str] = {}


def command_name(code: int, is_request: bool) -> str:
    """Metric label of a command: its abbreviation ("CER", "ECA"), or "unknown"."""
    names = _REQUEST_NAMES if is_request else _ANSWER_NAMES
    name = names.get(code)
    if name is None:
        if code not in _KNOWN_CODES:
            return UNKNOWN_COMMAND
        name = names[code] = DICTIONARY.command_name(code, is_request)
    return name


def result_code_of(raw: bytes) -> int | None:
    """Result-Code, else Experimental-Result-Code, of an encoded answer (AVP headers walked)."""
    found = _scan_u32(raw, HEADER_LENGTH, len(raw), RESULT_CODE, EXPERIMENTAL_RESULT)
    if isinstance(found, tuple):
        start, stop = found
        inner = _scan_u32(raw, start, stop, EXPERIMENTAL_RESULT_CODE, None)
        return inner if isinstance(inner, int) else None
    return found


def _scan_u32(
    raw: bytes, offset: int, end: int, code_wanted: int, group: int | None
) -> int | tuple[int, int] | None:
    """The Unsigned32 value of base AVP ``code_wanted`` in ``raw[offset:end]``; failing that, the
    data span of the base Grouped AVP ``group``; None when neither is there."""
    span: tuple[int, int] | None = None
    while offset + 8 <= end:
        code, flags_length = _AVP.unpack_from(raw, offset)
        length = flags_length & 0xFFFFFF
        vendor_bit = flags_length >> 31
        start = offset + (12 if vendor_bit else 8)
        if length < start - offset or offset + length > end:
            return span
        if not vendor_bit:
            if code == code_wanted and length == 12:
                return int.from_bytes(raw[start : start + 4], "big")
            if code == group and span is None:
                span = (start, offset + length)
        offset += (length + 3) & ~3
    return span
