"""When Python's cyclic garbage collector runs in a serving gateway: on a timer, never by count.

Measured under real traffic (bench/fresh_path.py, bench/e2e.py): the caches (decisions, registry
verdicts, clone tracker) hold about a million GC-tracked objects and replace tens of thousands
a second. With the collector's own triggers:

* every full (generation 2) collection walked all of them, holding the event loop 25-470 ms,
  every few seconds while the caches filled;
* the young collections grew as well, to 13-74 ms of CPU each: the collector triggers on
  allocations minus deallocations, and a cache that frees an old entry for every new one keeps
  that count near zero while its young generation fills with every new entry.

The checks themselves leave no cyclic garbage (3,000 checks: 2 objects); a closed connection
leaves a few dozen objects in cycles. So the schedule is: what start-up loaded is frozen out of
the collector, automatic collection is off, generations 0 and 1 are collected every
``young_interval`` seconds, and a full collection runs only when ``closed()`` (connections
closed so far) moved since the last one, at most every ``full_interval`` seconds.

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


class CollectorSchedule:
    """``start()`` on the running loop once the long-lived state is loaded; ``stop()`` gives
    the collector back its automatic triggers."""

    def __init__(
        self,
        closed: Callable[[], int],
        young_interval: float = YOUNG_INTERVAL,
        full_interval: float = FULL_INTERVAL,
    ) -> None:
        self.closed = closed
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
        collected_at = self.closed()
        while True:
            await asyncio.sleep(self.young_interval)
            if loop.time() >= next_full and self.closed() != collected_at:
                collected_at = self.closed()
                gc.collect()
                self.full_collections += 1
                next_full = loop.time() + self.full_interval
            else:
                gc.collect(1)
                self.young_collections += 1
