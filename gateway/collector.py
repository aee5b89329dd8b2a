"""When Python's cyclic garbage collector runs in a serving gateway: on a timer, never by count.

Measured under real traffic (bench/fresh_path.py, bench/e2e.py): the caches (decisions, registry
verdicts, clone tracker) hold about a million GC-tracked objects and replace tens of thousands
a second. With the collector's own triggers:

* every full (generation 2) collection walked all of them, holding the event loop 25-470 ms,
  every few seconds while the caches filled;
* the young collections grew as well, to 13-74 ms of CPU each: the collector triggers on
  allocations minus deallocations, and a cache that frees an old entry for every new one keeps
  that count near zero while its young generation fills with every new entry.

The checks themselves leave no cyclic garbage, and neither does a closed Diameter connection
(it drops its references back to itself: diameter.transport.connection; before, each left 37
objects in cycles). A full collection walks every object the caches hold: 113-620 ms measured
with them full (bench/fresh_path.py, bench/stalls.py: 619 ms once 10 minutes had passed after a
connection closed). So the schedule is: what start-up loaded is frozen out of the collector,
automatic collection is off, generations 0 and 1 are collected every ``young_interval``
seconds, and a full collection runs only when the young collections found at least
``full_after`` objects in cycles since the last one (something makes cycles, and some may have
grown old before becoming garbage), at most every ``full_interval`` seconds.

A young collection's cost grows faster than the objects it walks (bench/fresh_path.py, CPU time
at 10,000 checks/s): every 50 ms, median 1.7 ms and up to 3-5 ms; every 20 ms, 0.4 / 1.4 ms;
every 10 ms, 0.2 / 1.2 ms, the least in total too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable

YOUNG_INTERVAL = 0.01  # seconds between collections of generations 0 and 1
FULL_INTERVAL = 600.0  # at least this long between two full collections
FULL_AFTER = 1_000  # objects found in cycles by young collections before a full one is run


def young_garbage() -> int:
    """Objects the young collections found in cycles, since the process started."""
    stats = gc.get_stats()
    return int(stats[0]["collected"]) + int(stats[1]["collected"])


class CollectorSchedule:
    """``start()`` on the running loop once the long-lived state is loaded; ``stop()`` gives
    the collector back its automatic triggers."""

    def __init__(
        self,
        young_interval: float = YOUNG_INTERVAL,
        full_interval: float = FULL_INTERVAL,
        full_after: int = FULL_AFTER,
        garbage: Callable[[], int] = young_garbage,
    ) -> None:
        self.garbage = garbage
        self.full_after = full_after
        self.young_interval = young_interval
        self.full_interval = full_interval
        self.young_collections = 0
        self.full_collections = 0
        self._task: asyncio.Task[None] | None = None
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        if self._task is not None:
            return
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.full_interval
        collected_at = self.garbage()
        while True:
            await asyncio.sleep(self.young_interval)
            if loop.time() >= next_full and self.garbage() - collected_at >= self.full_after:
                gc.collect()
                collected_at = self.garbage()
                self.full_collections += 1
                next_full = loop.time() + self.full_interval
            else:
                gc.collect(1)
                self.young_collections += 1
