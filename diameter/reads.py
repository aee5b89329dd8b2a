"""Serving the messages of one read, sans-IO: the per-read budget, the handlers' calls and the
answers' early writes (compiled; diameter.transport.connection is the asyncio adapter around it).

``Peer.receive_each`` yields each message's events as soon as the message is processed; here a
request's handler is called at once (``call_handler``: a synchronous answer is sent by the
peer, an awaitable goes to the owner), so that a request is answered while its objects are
still young, instead of a whole read's worth of decoded messages piling up for the garbage
collector. Answers are written after the 1st, 3rd, 7th, 15th... message and at the end of the
read: the peer gets its first answers (and can send more requests) while the rest of a large
read is processed, for a few writes per read rather than one per answer.

A read of thousands of small messages must not hold the loop while other connections (and new
ones, and signals) wait: at most ``budget`` messages, and about ``READ_BUDGET_OCTETS`` octets,
are served per call; ``DEFERRED`` tells the owner to serve the rest from a later callback with
reading paused meanwhile, so that nothing overtakes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Final

from diameter.codec import Message
from diameter.deferred import DeferredAnswer
from diameter.events import AnyRequest, Event, LaneRequest, RequestReceived
from diameter.peer import Peer, call_handler

log = logging.getLogger(__name__)

# Besides ``budget`` messages, a call hands the loop back after this many octets of messages:
# a few large messages cost as much as many small ones.
READ_BUDGET_OCTETS: Final = 1 << 16

# What ``ReadServer.serve`` left to the owner.
DONE: Final = 0  # every message of the read served
DEFERRED: Final = 1  # the budget is spent: serve the rest (the same iterator) later
FAILED: Final = 2  # an unexpected error on this peer's bytes: close this connection only


class ReadServer:
    """Serves one connection's reads. ``write`` sends bytes now (the owner checks that its
    transport is still open), ``on_event`` gets every event but requests, ``on_pending`` each
    request whose handler returned an awaitable (or a ``DeferredAnswer`` when there is no
    ``deferred``), with it, to be answered later with ``Peer.send_answer``; ``deferred``
    (:class:`DeferredAnswers`) each ``DeferredAnswer``, bound and later sent by compiled code
    (a check waiting for the shared clone count: ``bench/instructions.py --modes
    server-deferred`` 45,978 -> 42,844 instructions a request)."""

    __slots__ = ("budget", "deferred", "on_event", "on_pending", "peer", "write")

    def __init__(
        self,
        peer: Peer,
        budget: int,
        write: Callable[[bytes], None],
        on_event: Callable[[Event], None],
        on_pending: Callable[[AnyRequest, object], None],
        deferred: DeferredAnswers | None = None,
    ) -> None:
        self.peer = peer
        self.budget = budget
        self.write = write
        self.on_event = on_event
        self.on_pending = on_pending
        # A DeferredAnswer goes straight to it (compiled), not through on_pending.
        self.deferred = deferred

    def serve(self, each: Iterator[list[Event]], now: float) -> int:
        """Serve messages of ``each`` (``Peer.receive_each`` of one read) until it is done or
        the budget is spent; the answers left in the peer are the owner's to write."""
        peer = self.peer
        budget = self.budget
        handled = 0
        octets = peer.processed_bytes + READ_BUDGET_OCTETS
        while True:
            try:
                events = next(each, None)
            except Exception:
                # A bug met by one peer's bytes closes that connection only, never the server.
                log.exception("%r: unexpected error on received data; closing", peer)
                return FAILED
            if events is None:
                return DONE
            for event in events:
                if isinstance(event, (RequestReceived, LaneRequest)):
                    result = call_handler(peer, event, now)
                    if result is not None:
                        deferred = self.deferred
                        if deferred is not None and isinstance(result, DeferredAnswer):
                            deferred.bind(result, event)
                        else:
                            self.on_pending(event, result)
                else:
                    self.on_event(event)
            handled += 1
            if handled >= budget or peer.processed_bytes >= octets:
                return DEFERRED
            if not handled & (handled + 1):  # handled is 2**k - 1
                out = peer.data_to_send()
                if out:
                    self.write(out)


class DeferredAnswers:
    """The answers a connection's handlers give later (:class:`DeferredAnswer`), each sent
    through the peer as it is given, here rather than by the interpreted owner: one for every
    check waiting for the shared clone count. ``given()`` tells the owner when it must act: the
    first answer sent since it last wrote (``write_due``, which the owner clears when it
    writes), and whenever none is left waiting (a stop may wait for that)."""

    def __init__(self, clock: Callable[[], float], given: Callable[[], None]) -> None:
        self.peer: Peer | None = None  # set once the connection is made
        self.waiting: set[DeferredAnswer] = set()
        self.write_due = False
        self._clock = clock
        self._given = given
        # The clock read by the first answer since the owner last wrote: the answers one call
        # gives (a round trip to Redis: a tick's checks) are sent at one time, read once
        # (asyncio's loop.time() cost ~900 instructions an answer). The owner writes them
        # within the loop iteration, so the time is at most one iteration old; once the
        # connection is closed (nobody writes), every answer reads it.
        self._now = 0.0
        self._closed = False

    def bind(self, answer: DeferredAnswer, request: AnyRequest) -> None:
        self.waiting.add(answer)
        # Bound to this object itself (``__call__``), not to ``self.send``: a bound method
        # made per answer cost ~450 instructions (compiled, a generic attribute look-up).
        answer.bind(self, request)

    def __call__(self, answer: DeferredAnswer) -> None:
        self.send(answer)

    def send(self, answer: DeferredAnswer) -> None:
        waiting = self.waiting
        waiting.discard(answer)
        write_due = self.write_due
        peer = self.peer
        if peer is not None:
            if not write_due or self._closed:
                self._now = self._clock()
            result = answer.answer
            if isinstance(result, bytes) or isinstance(result, Message):
                peer.send_answer(answer.request, result, self._now)
            else:
                log.error("handler returned %r, not an answer", type(result))
                peer.fail_request(answer.request, self._now, "handler returned no answer")
        if not write_due or not waiting:
            self.write_due = True
            self._given()

    def withdraw(self) -> set[DeferredAnswer]:
        """Stop waiting for every answer (a stop past its time): the ones withdrawn."""
        withdrawn, self.waiting = self.waiting, set()
        for answer in withdrawn:
            answer.withdraw()
        return withdrawn

    def close(self) -> None:
        """The connection is gone: the owner is told nothing more (nothing is left to write
        to), and the reference back to it is dropped (no cycle left for the collector). The
        answers still waiting go through the peer all the same as they are given: closed, it
        writes none, but each releases its request's place in flight and is recorded for
        duplicate detection, so that the request sent again on another connection (T flag,
        RFC 6733 §5.5.4) gets it. Withdrawn, they left the node's count of requests in flight
        up for good (towards 3004 for every peer) and their first copies in progress, the
        copies sent again waiting for them for ever."""
        self._given = _nothing
        self._closed = True


def _nothing() -> None:
    pass
