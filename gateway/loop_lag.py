"""Event loop lag probe: how late a timer fires, sampled a few times a second.

A timer due at ``t`` that runs at ``t + lag`` waited ``lag`` behind whatever held the loop (a
long callback, the GIL held by another thread, the process descheduled). Each sample goes to an
``observe`` callable (the ``eir_event_loop_lag_seconds`` histogram, gateway.metrics), so a stall
shows on a dashboard. A stall shorter than the interval is caught with the probability
``stall / interval``; a loop that stalls often shows in the upper buckets within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 0.2  # seconds between samples: five a second


class LoopLagProbe:
    """Samples the running loop's lag every ``interval`` seconds; ``start``/``stop`` on the loop."""

    def __init__(
        self,
        observe: Callable[[float], None],
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.observe = observe
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock, interval, observe = self.clock, self.interval, self.observe
        while True:
            due = clock() + interval
            await asyncio.sleep(interval)
            observe(clock() - due)
