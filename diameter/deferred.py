"""An answer a handler gives later, from a callback of its own (RFC 6733 §5.6 "Process": the
request is answered when the application is ready), without an asyncio future.

A handler that waits on something which settles many requests in one call (the shared clone
count: one round trip to Redis answers the checks of a tick) returns a :class:`DeferredAnswer`
and calls :meth:`DeferredAnswer.give` from that call. The owner of the request (the transport
connection) :meth:`~DeferredAnswer.bind`\\ s it to the function that sends the answer: the answer
is sent inside ``give``, with no future, no done callback and no event loop callback per
request (a future schedules one per callback). The owner :meth:`~DeferredAnswer.withdraw`\\ s
it when nobody is left to answer (the connection stops): a later ``give`` then does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DeferredAnswer:
    """Subclassed by an application to carry what it needs to make the answer (gateway.s13)."""

    def __init__(self) -> None:
        self._to: Callable[[DeferredAnswer], object] | None = None
        # The answer given (bytes or a Message), None until then.
        self.answer: Any = None
        # The request it answers, as its owner knows it (set by bind).
        self.request: Any = None
        # Given or withdrawn: a handler may skip the work of an answer nobody waits for.
        self.settled = False
        # Given (not withdrawn): what was given goes to the owner, whatever it is (one that is
        # not an answer gets 5012 there), bound before or after.
        self.given = False

    def bind(self, to: Callable[[DeferredAnswer], object], request: Any) -> None:
        """``to(self)`` once the answer is given (at once if it already is)."""
        self.request = request
        if self.settled:
            if self.given:
                to(self)
            return
        self._to = to

    def give(self, answer: Any) -> None:
        """The answer (bytes or a Message): sent through what it is bound to; once only."""
        if self.settled:
            return
        self.settled = True
        self.given = True
        self.answer = answer
        to, self._to = self._to, None
        if to is not None:
            to(self)

    def withdraw(self) -> None:
        """Nobody waits for the answer any more: a later :meth:`give` does nothing."""
        self.settled = True
        self._to = None


__all__ = ["DeferredAnswer"]
