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
    request whose handler returned an awaitable or a ``DeferredAnswer``, with it, to be
    answered later with ``Peer.send_answer``."""

    __slots__ = ("budget", "on_event", "on_pending", "peer", "write")

    def __init__(
        self,
        peer: Peer,
        budget: int,
        write: Callable[[bytes], None],
        on_event: Callable[[Event], None],
        on_pending: Callable[[AnyRequest, object], None],
    ) -> None:
        self.peer = peer
        self.budget = budget
        self.write = write
        self.on_event = on_event
        self.on_pending = on_pending

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
