"""What the gateway and its observation writer process say to each other (sans-IO).

One message per SOCK_SEQPACKET datagram (boundaries kept by the socket, so no framing here):
its kind in the first byte, then its body.

* gateway -> writer: ``PAIRS`` (a slice of the observation aggregate to upsert, at most
  :data:`SLICE_PAIRS` pairs) and ``LOOKUPS`` (which IMSI each IMEI was last seen with, answered
  in order with the writes).
* writer -> gateway: ``READY`` (the store is open), ``FAILED`` (it could not be opened; the
  reason as text), ``WRITTEN`` (one transaction: how many ``PAIRS`` messages and observations it
  held, whether it committed; the gateway knows how many pairs each message carried) and
  ``FOUND`` (the answers to one ``LOOKUPS``), and ``DRAINED`` whenever it wrote (or failed to
  write) a batch of the observation stream it drains (how many observations, whether it
  committed), for the gateway's counts.

Bodies are :mod:`marshal` data: the gateway encodes a slice on its event loop, and marshal
writes a dict of str tuples and numbers in one C call (64 µs of CPU for 1,000 pairs in a tight
loop, where packing the same pairs column-wise with arrays took 336 µs), and carries any string
an IMSI from User-Name may hold (any UTF-8, RFC 6733 §8.14). Marshal's format belongs to one
Python version, and it trusts what it reads: both ends are one Python build on one host, the
writer a child the gateway spawned, connected by a socket pair nobody else holds.
"""

from __future__ import annotations

import marshal
import struct
from itertools import islice
from typing import Any

from gateway.observations import Aggregate, LastImsi

PAIRS = ord("P")
LOOKUPS = ord("L")
READY = ord("R")
FAILED = ord("E")
WRITTEN = ord("W")
FOUND = ord("F")
DRAINED = ord("D")

# Pairs per PAIRS message: ~6 KB with 15-digit IMSIs. The gateway encodes one slice per loop
# callback (gateway.observation_process): by the time an aggregate is handed over its objects
# are cold, and 1,000 pairs encoded at once held the loop 1.0-1.9 ms (against 0.1 ms in a tight
# loop), with ~130 KB of temporaries (marshal's output grown by doubling, its table of shared
# objects, the copy behind the kind byte) that took 16-26 page faults (bench/stalls.py --time).
SLICE_PAIRS = 100
# The largest PAIRS message sent (unless one pair alone is larger): SLICE_PAIRS pairs with
# User-Names of kilobytes would be larger, so such slices are cut (``encode_slices``).
MAX_MESSAGE = 192 * 1024

# A pair's aggregate as the writer upserts it: IMEI, IMSI, first seen, last seen, count.
PairRow = tuple[str, str, float, float, int]

_WRITTEN = struct.Struct("=BIQ?")  # kind, PAIRS messages, observations, committed
_DRAINED = struct.Struct("=BQ?")  # kind, observations, committed


class WireError(ValueError):
    """A message that does not decode: the other side is not what it should be."""


def _body(message: bytes, kind: int) -> Any:
    if message[:1] != bytes((kind,)):
        raise WireError(f"not a {chr(kind)} message")
    try:
        return marshal.loads(memoryview(message)[1:])
    except (EOFError, ValueError, TypeError) as exc:
        raise WireError(f"{chr(kind)} message: {exc}") from exc


def encode_pairs(aggregate: Aggregate) -> bytes:
    """A PAIRS message: ``{(imei, imsi): (first, last, count)}``."""
    return bytes((PAIRS,)) + marshal.dumps(aggregate)


def decode_pairs(message: bytes) -> list[PairRow]:
    body = _body(message, PAIRS)
    if not isinstance(body, dict):
        raise WireError("PAIRS message: not an aggregate")
    try:
        return [(imei, imsi, first, last, count)
                for (imei, imsi), (first, last, count) in body.items()]
    except (TypeError, ValueError) as exc:
        raise WireError(f"PAIRS message: {exc}") from exc


def encode_slices(aggregate: Aggregate) -> list[tuple[bytes, int]]:
    """PAIRS messages of at most SLICE_PAIRS pairs of an aggregate, each with the number of
    pairs it carries. A message over MAX_MESSAGE (User-Names of kilobytes) is cut in halves
    until it fits or holds one pair."""
    if len(aggregate) <= SLICE_PAIRS:
        out: list[tuple[bytes, int]] = []
        _encode_fitting(aggregate, out)
        return out
    items = iter(aggregate.items())
    out = []
    for _ in range(0, len(aggregate), SLICE_PAIRS):
        _encode_fitting(dict(islice(items, SLICE_PAIRS)), out)
    return out


def _encode_fitting(aggregate: Aggregate, out: list[tuple[bytes, int]]) -> None:
    message = encode_pairs(aggregate)
    if len(message) <= MAX_MESSAGE or len(aggregate) == 1:
        out.append((message, len(aggregate)))
        return
    items = list(aggregate.items())
    half = len(items) // 2
    _encode_fitting(dict(items[:half]), out)
    _encode_fitting(dict(items[half:]), out)


def encode_lookups(lookups: list[tuple[str, float]]) -> bytes:
    """A LOOKUPS message: (IMEI body, before) each."""
    return bytes((LOOKUPS,)) + marshal.dumps(lookups)


def decode_lookups(message: bytes) -> list[tuple[str, float]]:
    body = _body(message, LOOKUPS)
    if not isinstance(body, list) or not all(
        isinstance(item, tuple) and len(item) == 2 for item in body
    ):
        raise WireError("LOOKUPS message: not a list of (IMEI, before)")
    return body


def lookups_in(message: bytes) -> int:
    """How many lookups a LOOKUPS message holds, 0 when it does not decode."""
    try:
        return len(decode_lookups(message))
    except WireError:
        return 0


def encode_found(answers: list[tuple[LastImsi, bool]]) -> bytes:
    """A FOUND message: per lookup (the last IMSI and when, or None; whether it failed)."""
    return bytes((FOUND,)) + marshal.dumps(answers)


def decode_found(message: bytes) -> list[tuple[LastImsi, bool]]:
    body = _body(message, FOUND)
    if not isinstance(body, list) or not all(
        isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bool)
        and (item[0] is None or (isinstance(item[0], tuple) and len(item[0]) == 2))
        for item in body
    ):
        raise WireError("FOUND message: not a list of answers")
    return body


def encode_written(messages: int, observations: int, committed: bool) -> bytes:
    return _WRITTEN.pack(WRITTEN, messages, observations, committed)


def decode_written(message: bytes) -> tuple[int, int, bool]:
    """(PAIRS messages, observations, committed) of one transaction."""
    if len(message) != _WRITTEN.size or message[0] != WRITTEN:
        raise WireError("not a WRITTEN message")
    _, messages, observations, committed = _WRITTEN.unpack(message)
    return messages, observations, committed


def encode_drained(observations: int, committed: bool) -> bytes:
    return _DRAINED.pack(DRAINED, observations, committed)


def decode_drained(message: bytes) -> tuple[int, bool]:
    """(observations, committed) of one batch drained from the stream."""
    if len(message) != _DRAINED.size or message[0] != DRAINED:
        raise WireError("not a DRAINED message")
    _, observations, committed = _DRAINED.unpack(message)
    return observations, committed


def encode_failed(reason: str) -> bytes:
    return bytes((FAILED,)) + reason.encode("utf-8", "replace")


def decode_failed(message: bytes) -> str:
    return message[1:].decode("utf-8", "replace")
