"""Duplicate request detection (RFC 6733 §3 End-to-End Identifier, §5.5.4), bounded in memory.

A request is known by (Origin-Host in lower case, End-to-End Identifier), with or without the
T flag. The first copy is processed; a copy arriving after its answer gets the same answer bytes
(with its own Hop-by-Hop Identifier, which is per hop); a copy arriving while the first is still
being processed waits and is answered when the first completes (so a retransmission on another
connection after a failover still gets its answer; should the first copy never be answered, the
waiting copies are dropped with it and their senders retransmit). Entries expire ``window`` seconds after the
answer; the cache holds at most ``max_size`` entries, the oldest evicted first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

DuplicateKey = tuple[str, int]
# Delivers a cached answer to a waiting duplicate: (answer bytes, duplicate's Hop-by-Hop).
Waiter = tuple[Callable[[bytes, int], None], int]


@dataclass(slots=True)
class _Entry:
    answer: bytes | None = None
    expires: float = float("inf")
    waiters: list[Waiter] = field(default_factory=list)


def with_hop_by_hop(answer: bytes, hop_by_hop: int) -> bytes:
    """The same answer with another Hop-by-Hop Identifier (header octets 12-15, RFC 6733 §3)."""
    return answer[:12] + hop_by_hop.to_bytes(4, "big") + answer[16:]


class DuplicateCache:
    __slots__ = ("_entries", "max_size", "window")

    def __init__(self, window: float, max_size: int) -> None:
        self.window = window
        self.max_size = max_size
        self._entries: OrderedDict[DuplicateKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: DuplicateKey) -> bool:
        return key in self._entries

    def begin(
        self, key: DuplicateKey, waiter: Waiter, now: float
    ) -> tuple[bool, bytes | None]:
        """Register a request. Returns (is_duplicate, answer to replay now or None).

        A duplicate whose first copy is in flight is queued with ``waiter`` and gets (True, None).
        """
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            if entry.answer is not None:
                return True, with_hop_by_hop(entry.answer, waiter[1])
            entry.waiters.append(waiter)
            return True, None
        self._entries[key] = _Entry()
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        return False, None

    def complete(self, key: DuplicateKey, answer: bytes, now: float) -> None:
        """Record the answer of the first copy and deliver it to the duplicates waiting for it."""
        entry = self._entries.get(key)
        if entry is None:
            return  # evicted meanwhile: nothing to remember it by
        entry.answer = answer
        entry.expires = now + self.window
        self._entries.move_to_end(key)
        waiters, entry.waiters = entry.waiters, []
        for deliver, hop_by_hop in waiters:
            deliver(with_hop_by_hop(answer, hop_by_hop), hop_by_hop)

    def forget(self, key: DuplicateKey) -> None:
        """The first copy was not processed (e.g. 3004 TOO_BUSY): a retransmission may try again."""
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.answer is None or entry.expires > now:
                return
            del entries[key]
