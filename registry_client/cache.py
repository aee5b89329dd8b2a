"""Bounded LRU + TTL cache of verdicts, keyed by the 14-digit IMEI body.

``get`` is the hot path of ``cached()``: a dict lookup, an expiry comparison and an LRU touch.
Time comes from the ``clock`` given to the constructor (monotonic seconds), so tests move it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from registry_client.model import RegistryVerdict


@dataclass(frozen=True, slots=True)
class CacheEntry:
    verdict: RegistryVerdict
    expires: float


class VerdictCache:
    def __init__(self, max_size: int, clock: Callable[[], float]):
        self.max_size = max(0, max_size)
        self._clock = clock
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.on_event: Callable[[str], None] = lambda event: None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, imei: str) -> CacheEntry | None:
        """The fresh entry, or None (an expired entry is dropped and reported). Misses are
        counted by the client, once per check that goes to the registry: a peek that finds
        nothing is not one."""
        entry = self._entries.get(imei)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[imei]
            self.on_event("expired")
            return None
        self._entries.move_to_end(imei)
        return entry

    def put(self, imei: str, verdict: RegistryVerdict, ttl: float) -> None:
        if ttl <= 0 or self.max_size == 0:
            return
        self._entries[imei] = CacheEntry(verdict, self._clock() + ttl)
        self._entries.move_to_end(imei)
        self.on_event("store")
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            self.on_event("evict")

    def clear(self) -> None:
        self._entries.clear()
