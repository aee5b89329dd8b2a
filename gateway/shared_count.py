"""The clone count of one IMEI shared by every gateway, once the shared store answers.

Compiled (``eir_compiled``): every check that waits for the shared count makes one, and the
checks one round trip settles are answered from :meth:`SharedCount.settle`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("eir.shared")


class SharedCount:
    """The distinct IMSIs of one IMEI over every gateway sharing the tracker, once the shared
    store holds the sighting a check just made. Not an asyncio future: its callbacks run inside
    :meth:`settle`, so the checks one round trip settles are answered in that one call, with
    no event loop callback for each (a future schedules one per callback)."""

    __slots__ = ("_callback", "_callbacks", "value")

    def __init__(self) -> None:
        self.value: int | None = None
        # Almost always one check waits: its callback held as it is, a list only for more
        # (one allocation less a check).
        self._callback: Callable[[int], object] | None = None
        self._callbacks: list[Callable[[int], object]] | None = None

    def add_callback(self, callback: Callable[[int], object]) -> None:
        """``callback(count)`` once settled (at once if it is)."""
        if self.value is not None:
            callback(self.value)
        elif self._callback is None:
            self._callback = callback
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def settle(self, count: int) -> None:
        """The count is known (0: not in time, the local count stands); later calls do nothing."""
        if self.value is not None:
            return
        self.value = count
        first, more = self._callback, self._callbacks
        self._callback = self._callbacks = None
        if first is not None:
            _call(first, count)
        if more is not None:
            for callback in more:
                _call(callback, count)

    async def wait(self) -> int:
        if self.value is not None:
            return self.value
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def settled(count: int) -> None:
            if not future.done():  # not cancelled meanwhile
                future.set_result(count)

        self.add_callback(settled)
        return await future


def _call(callback: Callable[[int], object], count: int) -> None:
    try:
        callback(count)
    except Exception:  # one check's failure must not leave the others unanswered
        log.exception("a check waiting for the shared clone count failed")
