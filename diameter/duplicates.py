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

DuplicateKey = tuple[str, int]
# Delivers a cached answer to a waiting duplicate: (answer bytes, duplicate's Hop-by-Hop).
Waiter = tuple[Callable[[bytes, int], None], int]

_INF = float("inf")


class _Entry:
    # A plain class: one is made per request (a dataclass with a default_factory costs more).
    __slots__ = ("answer", "expires", "waiters")

    def __init__(self) -> None:
        self.answer: bytes | None = None
        self.expires = _INF
        self.waiters: list[Waiter] | None = None  # made when a duplicate first waits


def with_hop_by_hop(answer: bytes, hop_by_hop: int) -> bytes:
    """The same answer with another Hop-by-Hop Identifier (header octets 12-15, RFC 6733 §3)."""
    return answer[:12] + hop_by_hop.to_bytes(4, "big") + answer[16:]


class DuplicateCache:
    __slots__ = ("_entries", "_front", "_horizon", "max_size", "window")

    def __init__(self, window: float, max_size: int) -> None:
        self.window = window
        self.max_size = max_size
        self._entries: OrderedDict[DuplicateKey, _Entry] = OrderedDict()
        # Expiry looks at the oldest entry only. Once it found that entry answered and not yet
        # expired, nothing can expire before its time (_horizon) while it stays the oldest
        # (_front): until then begin() skips the look.
        self._front: DuplicateKey | None = None
        self._horizon = -_INF

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
        if now >= self._horizon:
            self._expire(now)
        entries = self._entries
        entry = entries.get(key)
        if entry is not None and entry.expires > now:
            if entry.answer is not None:
                return True, with_hop_by_hop(entry.answer, waiter[1])
            if entry.waiters is None:
                entry.waiters = [waiter]
            else:
                entry.waiters.append(waiter)
            return True, None
        if entry is not None:
            if key == self._front:
                self._horizon = -_INF
            del entries[key]  # re-added at the end, as the newest
        entries[key] = _Entry()
        if len(entries) > self.max_size:
            self._horizon = -_INF  # the oldest goes
            while len(entries) > self.max_size:
                entries.popitem(last=False)
        return False, None

    def complete(self, key: DuplicateKey, answer: bytes, now: float) -> None:
        """Record the answer of the first copy and deliver it to the duplicates waiting for it."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            return  # evicted meanwhile: nothing to remember it by
        entry.answer = answer
        entry.expires = now + self.window
        if key == self._front:
            self._horizon = -_INF
        entries.move_to_end(key)
        waiters = entry.waiters
        if waiters:
            entry.waiters = None
            for deliver, hop_by_hop in waiters:
                deliver(with_hop_by_hop(answer, hop_by_hop), hop_by_hop)

    def forget(self, key: DuplicateKey) -> None:
        """The first copy was not processed (e.g. 3004 TOO_BUSY): a retransmission may try again."""
        if key == self._front:
            self._horizon = -_INF
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        self._horizon = -_INF
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.answer is None:
                return
            if entry.expires > now:
                self._front, self._horizon = key, entry.expires
                return
            del entries[key]
