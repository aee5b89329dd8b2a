"""The clone count of one IMEI shared by every gateway, once the shared store answers.

Compiled (``eir_compiled``): every check that waits for the shared count makes one, and the
checks one round trip settles are answered from :meth:`SharedCount.settle`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from diameter.deferred import DeferredAnswer

log = logging.getLogger("eir.shared")


class CountedAnswer(DeferredAnswer):
    """An answer given once the shared count is known: :meth:`SharedCount.add_answer` holds
    it and :meth:`SharedCount.settle` calls :meth:`counted`, a compiled call, where a callback
    would be a bound method made per check (~450 instructions compiled, and an object more for
    the collector while the check waits)."""

    def counted(self, n: int) -> None:
        """The count is ``n`` (0: not in time): decide, then :meth:`give` the answer."""
        raise NotImplementedError


class SharedCount:
    """The distinct IMSIs of one IMEI over every gateway sharing the tracker, once the shared
    store holds the sighting a check just made. Not an asyncio future: its callbacks run inside
    :meth:`settle`, so the checks one round trip settles are answered in that one call, with
    no event loop callback for each (a future schedules one per callback)."""

    __slots__ = ("_answer", "_callback", "_callbacks", "value")

    def __init__(self) -> None:
        self.value: int | None = None
        self._answer: CountedAnswer | None = None  # the first answer waiting (add_answer)
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

    def add_answer(self, answer: CountedAnswer) -> None:
        """``answer.counted(count)`` once settled (at once if it is), in turn with the
        callbacks: held as it is when it waits first (almost always: one check a count)."""
        if self.value is None and self._answer is None and self._callback is None:
            self._answer = answer
        else:
            self.add_callback(answer.counted)

    def settle(self, count: int) -> None:
        """The count is known (0: not in time, the local count stands); later calls do nothing."""
        if self.value is not None:
            return
        self.value = count
        answer, first, more = self._answer, self._callback, self._callbacks
        self._answer = None
        self._callback = self._callbacks = None
        if answer is not None:
            try:
                answer.counted(count)
            except Exception:  # one check's failure must not leave the others unanswered
                log.exception("a check waiting for the shared clone count failed")
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
