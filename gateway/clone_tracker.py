"""Clone detection's count in this process: the distinct IMSIs seen with each IMEI within a time
window, bounded LRU in memory; the classifier's ``clone_suspected`` reason (DIRBS
``duplicate_threshold``, standards.md §6.2). :class:`gateway.redis_clone.SharedCloneTracker`
extends it to every gateway sharing a Redis.

Compiled (``eir_compiled``): every check with an IMSI is counted here when clone detection is
on, and the shared tracker, its subclass, is compiled with it (a compiled class cannot extend
an interpreted one).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from pathlib import Path

from gateway.shared_count import SharedCount
from registry_client.bounded import SHARD_SIZE


class CloneTracker:
    """Distinct IMSIs seen with one IMEI within ``window`` seconds (bounded LRU of IMEIs; above
    SHARD_SIZE IMEIs, the least recently seen of its shard goes first).

    Each IMEI keeps at most ``threshold + 1`` IMSIs (enough to tell "more than threshold").
    """

    def __init__(self, threshold: int, window: float, max_imeis: int = 100_000) -> None:
        self.threshold = threshold
        self.window = window
        self.max_imeis = max_imeis
        # IMEIs in shards of at most SHARD_SIZE by hash, each its own LRU: one OrderedDict of
        # 100,000 IMEIs under churn rebuilt its table inside one check (registry_client.bounded).
        count = max(1, -(-max_imeis // SHARD_SIZE))
        self._per_shard = max(1, max_imeis // count)
        self._shards: list[OrderedDict[str, dict[str, float]]] = [
            OrderedDict() for _ in range(count)
        ]

    def __len__(self) -> int:
        """IMEIs held."""
        return sum(len(shard) for shard in self._shards)

    def observe(self, imei: str, imsi: str, now: float) -> int:
        """Note (imei, imsi) at ``now``; return how many distinct IMSIs the IMEI has.

        Expired IMSIs are pruned only once the count passes the threshold, so the number is
        exact whenever it is above the threshold (the only case that matters) and an upper
        bound below it."""
        shards = self._shards
        seen = shards[hash(imei) % len(shards)]
        imsis = seen.get(imei)
        if imsis is None:
            imsis = seen[imei] = {}
            if len(seen) > self._per_shard:
                seen.popitem(last=False)
        else:
            seen.move_to_end(imei)
        imsis[imsi] = now
        if len(imsis) > self.threshold:
            horizon = now - self.window
            for old in [k for k, t in imsis.items() if t < horizon]:
                del imsis[old]
            while len(imsis) > self.threshold + 1:
                oldest = min(imsis, key=imsis.__getitem__)
                del imsis[oldest]
        return len(imsis)

    def seed(self, database: str | Path, now: float) -> int:
        """Replay the observation log's pairs last seen within the window (oldest first), so a
        restart does not forget who was seen with whom. Returns how many pairs were read; 0 when
        the log does not exist yet. At most ``max_imeis x (threshold + 1)`` pairs, the newest."""
        path = Path(database)
        if not path.exists():
            return 0
        limit = self.max_imeis * (self.threshold + 1)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows: list[tuple[str, str, float]] = conn.execute(
                "SELECT imei, imsi, last_seen FROM observations WHERE last_seen >= ? "
                "ORDER BY last_seen DESC LIMIT ?",
                (now - self.window, limit),
            ).fetchall()
        finally:
            conn.close()
        for imei, imsi, seen in reversed(rows):
            self.observe(imei, imsi, seen)
        return len(rows)

    def imsis(self, imei: str, now: float) -> dict[str, float]:
        """IMSI -> last seen, of the IMSIs seen with ``imei`` within the window (no change)."""
        horizon = now - self.window
        shards = self._shards
        seen = shards[hash(imei) % len(shards)].get(imei, {})
        return {k: t for k, t in seen.items() if t >= horizon}

    def peek(self, imei: str, imsi: str, now: float) -> int:
        """What :meth:`suspected` would answer, without recording anything (a diagnostic check
        must not count as a sighting)."""
        seen = self.imsis(imei, now)
        n = len(seen) + (imsi not in seen)
        return n if n > self.threshold else 0

    def suspected(self, imei: str, imsi: str, now: float) -> int:
        """The distinct count when it exceeds the threshold, else 0."""
        n = self.observe(imei, imsi, now)
        return n if n > self.threshold else 0

    def shared_count(self, imei: str) -> SharedCount | None:
        """The count over every gateway sharing the tracker, once the observation
        :meth:`suspected` just made is stored there; None when this process's is the whole."""
        return None

    async def wait_shared(self, count: SharedCount) -> int:
        return await count.wait()
