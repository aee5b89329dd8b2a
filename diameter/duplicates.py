"""Duplicate request detection (RFC 6733 §3 End-to-End Identifier, §5.5.4), bounded in memory.

A request is known by (Origin-Host in lower case, End-to-End Identifier), with or without the
T flag. The first copy is processed; a copy arriving after its answer gets the same answer bytes
(with its own Hop-by-Hop Identifier, which is per hop); a copy arriving while the first is still
being processed waits and is answered when the first completes (so a retransmission on another
connection after a failover still gets its answer; should the first copy never be answered, the
waiting copies are dropped with it and their senders retransmit). Entries expire ``window`` seconds after the
answer; the cache holds at most ``max_size`` entries, the oldest evicted first (above
``SHARD_SIZE`` entries, the oldest of its shard), besides the entries duplicates wait on, which
stay until their answer.

One table under constant churn (an entry in and one out per request) is rebuilt whenever its
deleted slots fill it: an O(n) pause inside one insert (0.7 ms at 10,000 entries, 6.5 ms at
65,536, measured). So above ``SHARD_SIZE`` entries the cache is split by key hash into shards of
at most that many, each expiring and evicting its own oldest: a rebuild touches one shard only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

DuplicateKey = tuple[str, int]
# Delivers a cached answer to a waiting duplicate: (answer bytes, duplicate's Hop-by-Hop).
Waiter = tuple[Callable[[bytes, int], None], int]

_INF = float("inf")
SHARD_SIZE = 1024


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


class _Shard:
    """Entries in the order they were answered (the oldest first), at most ``max_size``."""

    __slots__ = (
        "entries", "front_e2e", "front_host", "horizon", "max_size", "move_to_end", "newest",
        "newest_e2e", "newest_host", "window",
    )

    def __init__(self, window: float, max_size: int) -> None:
        self.window = window
        self.max_size = max_size
        self.entries: OrderedDict[DuplicateKey, _Entry] = OrderedDict()
        # Bound once: compiled, ``entries.move_to_end(key)`` looks the method up by name on
        # every call (~800 instructions an answer given later, a shared clone count's check).
        self.move_to_end: Callable[[Any], None] = self.entries.move_to_end
        # Expiry looks at the oldest entry only. Once it found that entry answered and not yet
        # expired, nothing can expire before its time (horizon) while it stays the oldest
        # (front, its key in two fields as newest's below): until then begin() skips the look.
        self.front_host = ""
        self.front_e2e = -1
        self.horizon = -_INF
        # The entry begin() added last and its key, while nothing has moved since (None
        # otherwise): a request answered before the next one begins is already where its
        # answer goes, the newest, so complete() finds it without a look-up and leaves the
        # order as it is. The key in two fields: compiled, a (str, int) is unboxed, and
        # storing it whole would box it again.
        self.newest: _Entry | None = None
        self.newest_host = ""
        self.newest_e2e = -1  # End-to-End Identifiers are unsigned

    def begin(
        self, key: DuplicateKey, waiter: Waiter, now: float
    ) -> tuple[bool, bytes | None]:
        if now >= self.horizon:
            self.expire(now)
        entries = self.entries
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
            if key[1] == self.front_e2e and key[0] == self.front_host:
                self.horizon = -_INF
            del entries[key]  # re-added at the end, as the newest
        entry = entries[key] = _Entry()
        if len(entries) > self.max_size:
            self.horizon = -_INF  # the oldest goes
            if self._evict() or key not in entries:
                # No room at all (max_size 0), or entries kept behind it: not the newest.
                self.newest = None
                return False, None
        self.newest = entry
        self.newest_host, self.newest_e2e = key
        return False, None

    def _evict(self) -> bool:
        """The oldest entries go, down to ``max_size``; but an entry that duplicates wait on is
        kept (as the newest) until its answer, which they get: evicted, the answer found no
        entry and they were never answered. Such entries are few, each a retransmission of a
        request in flight. True when one was kept."""
        entries = self.entries
        excess = len(entries) - self.max_size
        kept = False
        for _ in range(len(entries)):
            if excess <= 0:
                break
            key, entry = entries.popitem(last=False)
            if entry.waiters:
                entries[key] = entry
                kept = True
            else:
                excess -= 1
        return kept

    def complete(self, key: DuplicateKey, answer: bytes, now: float) -> None:
        entry = self.newest
        self.newest = None
        if entry is None or key[1] != self.newest_e2e or key[0] != self.newest_host:
            boxed: Any = key  # compiled, a (str, int) is unboxed: boxed once, not per use
            entry = self.entries.get(boxed)
            if entry is None:
                return  # evicted meanwhile: nothing to remember it by
            self.move_to_end(boxed)
        entry.answer = answer
        entry.expires = now + self.window
        if key[1] == self.front_e2e and key[0] == self.front_host:
            self.horizon = -_INF
        waiters = entry.waiters
        if waiters:
            entry.waiters = None
            for deliver, hop_by_hop in waiters:
                deliver(with_hop_by_hop(answer, hop_by_hop), hop_by_hop)

    def forget(self, key: DuplicateKey) -> None:
        if key[1] == self.front_e2e and key[0] == self.front_host:
            self.horizon = -_INF
        if key[1] == self.newest_e2e and key[0] == self.newest_host:
            self.newest = None
        self.entries.pop(key, None)

    def expire(self, now: float) -> None:
        entries = self.entries
        self.horizon = -_INF
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.answer is None:
                return
            if entry.expires > now:
                self.front_host, self.front_e2e = key
                self.horizon = entry.expires
                return
            del entries[key]


class DuplicateCache:
    __slots__ = ("_shards", "max_size", "window")

    def __init__(self, window: float, max_size: int) -> None:
        self.window = window
        self.max_size = max_size
        count = max(1, -(-max_size // SHARD_SIZE))
        self._shards = [_Shard(window, max_size // count) for _ in range(count)]

    def __len__(self) -> int:
        return sum(len(shard.entries) for shard in self._shards)

    def __contains__(self, key: DuplicateKey) -> bool:
        return key in self._shard(key).entries

    def _shard(self, key: DuplicateKey) -> _Shard:
        shards = self._shards
        return shards[hash(key) % len(shards)]

    def begin(
        self, key: DuplicateKey, waiter: Waiter, now: float
    ) -> tuple[bool, bytes | None]:
        """Register a request. Returns (is_duplicate, answer to replay now or None).

        A duplicate whose first copy is in flight is queued with ``waiter`` and gets (True, None).
        """
        shards = self._shards  # inline: one call less per request
        return shards[hash(key) % len(shards)].begin(key, waiter, now)

    def complete(self, key: DuplicateKey, answer: bytes, now: float) -> None:
        """Record the answer of the first copy and deliver it to the duplicates waiting for it."""
        shards = self._shards
        shards[hash(key) % len(shards)].complete(key, answer, now)

    def forget(self, key: DuplicateKey) -> None:
        """The first copy was not processed (e.g. 3004 TOO_BUSY): a retransmission may try again."""
        self._shard(key).forget(key)
