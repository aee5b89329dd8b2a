"""What the gateway and its observation writer process say to each other (sans-IO).

One message per SOCK_SEQPACKET datagram (boundaries kept by the socket, so no framing here),
first byte its kind:

* gateway -> writer: ``PAIRS`` (a slice of the observation aggregate to upsert, at most
  :data:`SLICE_PAIRS` pairs) and ``LOOKUPS`` (which IMSI each IMEI was last seen with, answered
  in order with the writes).
* writer -> gateway: ``READY`` (the store is open), ``FAILED`` (it could not be opened; the
  reason as text), ``WRITTEN`` (one transaction: how many ``PAIRS`` messages and
  observations it held, whether it committed; the gateway knows how many pairs each message
  carried) and ``FOUND`` (the answers to one ``LOOKUPS``).

A slice is packed column-wise so that encoding costs a handful of C-level calls whatever the
number of pairs (the gateway encodes on its event loop): the strings joined into one UTF-8 text
with their lengths in code points beside them, the numbers as one array of doubles. IMSIs come
from User-Name (any UTF-8, RFC 6733 §8.14), so no separator character would be safe.
Both ends are one host and one Python build: arrays travel in native byte order.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain
from typing import Any

from gateway.observations import LastImsi

PAIRS = ord("P")
LOOKUPS = ord("L")
READY = ord("R")
FAILED = ord("E")
WRITTEN = ord("W")
FOUND = ord("F")

# Pairs per PAIRS message: ~60 KB with 15-digit IMSIs, well inside a Unix socket's default
# send buffer (net.core.wmem_default, 208 KB), which bounds one SEQPACKET message.
SLICE_PAIRS = 1_000
# The largest PAIRS message sent (unless one pair alone is larger): SLICE_PAIRS pairs with
# User-Names of kilobytes would be larger, so such slices are cut (``encode_slices``).
MAX_MESSAGE = 192 * 1024

# A pair's aggregate: (IMEI, IMSI), (first seen, last seen, count)
PairRow = tuple[str, str, float, float, int]

_HEAD = struct.Struct("=BI")  # kind, items
_WRITTEN = struct.Struct("=BIQ?")  # kind, PAIRS messages, observations, committed


class WireError(ValueError):
    """A message that does not decode: the other side is not what it should be."""


def _pack_strings(strings: Iterable[str]) -> tuple[bytes, bytes]:
    flat = list(strings)
    lengths = array("I", map(len, flat))
    return lengths.tobytes(), "".join(flat).encode("utf-8", "surrogatepass")


def _unpack_strings(lengths: array[int], text: bytes) -> list[str]:
    try:
        joined = text.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise WireError(f"text: {exc}") from exc
    ends = list(accumulate(lengths))
    if (ends[-1] if ends else 0) != len(joined):
        raise WireError("string lengths do not match the text")
    return [joined[end - n : end] for n, end in zip(lengths, ends, strict=True)]


def _array(typecode: str, data: memoryview) -> array[Any]:
    values = array(typecode)
    if len(data) % values.itemsize:
        raise WireError("array of partial items")
    values.frombytes(data)
    return values


def _split(body: memoryview, *sizes: int) -> list[memoryview]:
    parts = []
    at = 0
    for size in sizes:
        if at + size > len(body):
            raise WireError("message shorter than its header says")
        parts.append(body[at : at + size])
        at += size
    parts.append(body[at:])
    return parts


def encode_pairs(items: Sequence[tuple[tuple[str, str], tuple[float, float, int]]]) -> bytes:
    """A PAIRS message from aggregate items ``((imei, imsi), (first, last, count))``."""
    lengths, text = _pack_strings(chain.from_iterable(key for key, _ in items))
    numbers = array("d", chain.from_iterable(agg for _, agg in items))
    return b"".join((_HEAD.pack(PAIRS, len(items)), lengths, numbers.tobytes(), text))


def decode_pairs(message: bytes) -> list[PairRow]:
    n = _head(message, PAIRS)
    lengths, numbers, text = _split(memoryview(message)[_HEAD.size :], 8 * n, 24 * n)
    strings = _unpack_strings(_array("I", lengths), bytes(text))
    values = _array("d", numbers)
    return [
        (strings[2 * i], strings[2 * i + 1], values[3 * i], values[3 * i + 1],
         int(values[3 * i + 2]))
        for i in range(n)
    ]


def encode_slices(
    items: Sequence[tuple[tuple[str, str], tuple[float, float, int]]],
) -> list[tuple[bytes, int]]:
    """PAIRS messages of at most SLICE_PAIRS pairs from aggregate items, each with the number
    of pairs it carries. A message over MAX_MESSAGE (User-Names of kilobytes) is cut in halves
    until it fits or holds one pair."""
    out: list[tuple[bytes, int]] = []
    for start in range(0, len(items), SLICE_PAIRS):
        _encode_fitting(items[start : start + SLICE_PAIRS], out)
    return out


def _encode_fitting(
    items: Sequence[tuple[tuple[str, str], tuple[float, float, int]]],
    out: list[tuple[bytes, int]],
) -> None:
    message = encode_pairs(items)
    if len(message) <= MAX_MESSAGE or len(items) == 1:
        out.append((message, len(items)))
        return
    half = len(items) // 2
    _encode_fitting(items[:half], out)
    _encode_fitting(items[half:], out)


def encode_lookups(lookups: Sequence[tuple[str, float]]) -> bytes:
    """A LOOKUPS message: (IMEI body, before) each."""
    lengths, text = _pack_strings(imei for imei, _ in lookups)
    befores = array("d", (before for _, before in lookups))
    return b"".join((_HEAD.pack(LOOKUPS, len(lookups)), lengths, befores.tobytes(), text))


def decode_lookups(message: bytes) -> list[tuple[str, float]]:
    n = _head(message, LOOKUPS)
    lengths, befores, text = _split(memoryview(message)[_HEAD.size :], 4 * n, 8 * n)
    imeis = _unpack_strings(_array("I", lengths), bytes(text))
    return list(zip(imeis, _array("d", befores), strict=True))


# FOUND: per lookup a status byte (what was found, if anything), the IMSI and when last seen.
_NONE, _SEEN, _LOOKUP_FAILED = 0, 1, 2


def encode_found(answers: Sequence[tuple[LastImsi, bool]]) -> bytes:
    """A FOUND message: per lookup (the last IMSI and when, or None; whether it failed)."""
    status = bytes(_LOOKUP_FAILED if failed else _NONE if found is None else _SEEN
                   for found, failed in answers)
    lengths, text = _pack_strings("" if found is None else found[0] for found, _ in answers)
    seen = array("d", (0.0 if found is None else found[1] for found, _ in answers))
    return b"".join((_HEAD.pack(FOUND, len(answers)), status, lengths, seen.tobytes(), text))


def decode_found(message: bytes) -> list[tuple[LastImsi, bool]]:
    n = _head(message, FOUND)
    status, lengths, seen, text = _split(memoryview(message)[_HEAD.size :], n, 4 * n, 8 * n)
    imsis = _unpack_strings(_array("I", lengths), bytes(text))
    times = _array("d", seen)
    answers: list[tuple[LastImsi, bool]] = []
    for i, code in enumerate(status):
        if code == _SEEN:
            answers.append(((imsis[i], times[i]), False))
        elif code in (_NONE, _LOOKUP_FAILED):
            answers.append((None, code == _LOOKUP_FAILED))
        else:
            raise WireError(f"lookup status {code}")
    return answers


def encode_written(messages: int, observations: int, committed: bool) -> bytes:
    return _WRITTEN.pack(WRITTEN, messages, observations, committed)


def decode_written(message: bytes) -> tuple[int, int, bool]:
    """(PAIRS messages, observations, committed) of one transaction."""
    if len(message) != _WRITTEN.size or message[0] != WRITTEN:
        raise WireError("not a WRITTEN message")
    _, messages, observations, committed = _WRITTEN.unpack(message)
    return messages, observations, committed


def encode_failed(reason: str) -> bytes:
    return bytes((FAILED,)) + reason.encode("utf-8", "replace")


def decode_failed(message: bytes) -> str:
    return message[1:].decode("utf-8", "replace")


def items(message: bytes) -> int:
    """How many items a message says it carries (0 when it has no header)."""
    return _HEAD.unpack_from(message)[1] if len(message) >= _HEAD.size else 0


def _head(message: bytes, kind: int) -> int:
    """The number of items of a ``kind`` message."""
    if len(message) < _HEAD.size or message[0] != kind:
        raise WireError(f"not a {chr(kind)} message")
    n: int = _HEAD.unpack_from(message)[1]
    return n
