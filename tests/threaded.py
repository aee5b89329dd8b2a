"""A service's start/stop coroutines run on their own event loop in a thread, for synchronous
test drivers (schemathesis calls are synchronous)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable


class ThreadedLoop:
    def __init__(self, start: Callable[[], Awaitable[object]],
                 stop: Callable[[], Awaitable[object]], timeout: float = 60) -> None:
        self._start, self._stop, self._timeout = start, stop, timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedLoop:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(self._timeout)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(self._timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(self._timeout)
        self.loop.close()
