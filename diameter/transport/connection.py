"""One transport connection driving one sans-IO ``Peer`` core (the aioquic shape: the adapter
feeds bytes, drains events, writes what the core wants sent and keeps one timer).

Each read is served by the compiled sans-IO core ``diameter.reads`` (the per-read budget, each
request's handler call, the early writes); what stays here is asyncio's: the transport, the
timer, the backlog's callback, and the requests answered later. A synchronous answer is written
at once, an awaitable runs as one task per request (a future is answered from its done callback,
no task; a DeferredAnswer is sent when the handler gives it, no future either) and is answered
when it finishes, the answers finished together written together; a handler that raises gets
5012.
Backpressure: reading pauses while the peer does not drain our writes (write water marks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, cast

from diameter.codec import Message
from diameter.deferred import DeferredAnswer
from diameter.events import AnyRequest, Event, LaneRequest, RequestReceived
from diameter.node import Node
from diameter.peer import Peer, Role, call_handler
from diameter.peer_identity import certificate_names
from diameter.reads import DEFERRED, FAILED, DeferredAnswers, ReadServer
from diameter.settings import TransportSettings
from diameter.transport.sockets import set_nodelay

log = logging.getLogger(__name__)


class PeerConnection(asyncio.Protocol):
    """Drives one ``Peer`` core from an asyncio transport."""

    def __init__(
        self,
        node: Node,
        role: Role,
        *,
        transport_name: str = "tcp",
        settings: TransportSettings | None = None,
        peer: Peer | None = None,
        local_addresses: tuple[str, ...] = (),
        on_event: Callable[[PeerConnection, Event], None] | None = None,
        on_open: Callable[[PeerConnection], bool] | None = None,
    ) -> None:
        self.node = node
        self.on_open = on_open
        self.role = role
        self.transport_name = transport_name
        self.settings = settings or TransportSettings()
        self.peer: Peer | None = peer
        self.local_addresses = local_addresses
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Requests being answered asynchronously: tasks, or futures the handler returned.
        self.tasks: set[asyncio.Future[Any]] = set()
        # Answers the handlers give later from callbacks of their own (DeferredAnswer), sent
        # by compiled code as they are given, and the futures of those waiting for all of them
        # to be given (see answered()).
        self._deferred = DeferredAnswers(self._loop.time, self._answers_given)
        self._answered_waiters: list[asyncio.Future[None]] = []
        self._flush_scheduled = False  # a write of finished answers is due this iteration
        # Our writes are backed up (the peer does not read its answers): reading is paused.
        self.write_paused = False
        # The rest of a read past its budget of messages (see _serve), reading paused meanwhile.
        self._backlog: Iterator[list[Event]] | None = None
        self._reads: ReadServer | None = None  # the compiled core serving each read

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; both have the same methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if self.on_open is not None and not self.on_open(self):
            transport.abort()  # refused by the owner (a connection limit): nothing read
            return
        set_nodelay(transport)
        transport.set_write_buffer_limits(
            high=self.settings.write_high_water, low=self.settings.write_low_water
        )
        peername = transport.get_extra_info("peername")
        remote = (str(peername[0]), int(peername[1])) if peername else None
        local = self.local_addresses
        if not local:
            sockname = transport.get_extra_info("sockname")
            if sockname and sockname[0] not in ("0.0.0.0", "::"):
                local = (str(sockname[0]),)
        now = self._loop.time()
        if self.peer is None:
            tls = transport.get_extra_info("ssl_object")
            self.peer = Peer(
                self.node,
                self.role,
                now,
                remote_address=remote,
                local_addresses=local,
                transport=self.transport_name,
                certificate_names=certificate_names(tls.getpeercert()) if tls else None,
            )
        else:
            self.peer.remote_address = remote
            self.peer.local_addresses = local
        self.peer.on_wakeup = self._wakeup
        self._deferred.peer = self.peer
        self._reads = ReadServer(
            self.peer, self.settings.read_budget, self._write, self._dispatch, self._pending,
            self._deferred,
        )
        if self.role is Role.INITIATOR:
            self._handle(self.peer.connection_made(now))
        else:
            self._flush()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        assert peer is not None
        self._serve(peer.receive_each(data, self._loop.time()))

    def _serve(self, each: Iterator[list[Event]]) -> None:
        """Serve the messages of one read (``diameter.reads``: at most ``read_budget`` of them
        per callback, the rest from a later one with reading paused), then write the answers."""
        reads = self._reads
        assert reads is not None
        started = self._loop.time()
        try:
            outcome = reads.serve(each, started)
            if outcome == FAILED:
                self._backlog = None
                self.abort()
                return
            if outcome == DEFERRED:
                self._defer(each)
            elif self._backlog is not None:
                self._backlog = None
                self._set_reading()
            self._flush()
        finally:
            # Time spent on received messages and their answers' write: the overload
            # sampler's service rate.
            self.node.busy_seconds += self._loop.time() - started

    def _defer(self, each: Iterator[list[Event]]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._backlog is None:
            self._backlog = each
            self._set_reading()
        self._loop.call_soon(self._serve_backlog)

    def _serve_backlog(self) -> None:
        each = self._backlog
        if each is not None and self.transport is not None and not self.transport.is_closing():
            self._serve(each)

    def _set_reading(self) -> None:
        """Read while neither our writes are backed up nor a read is still being served."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.write_paused or self._backlog is not None:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            # The transport dropped the connection (reset, ABORT, a failed write): say so, or a
            # connection that dies this way leaves no trace.
            log.warning(
                "%s connection %s lost: %s", self.transport_name, self.peer or "(no peer)", exc
            )
        self._backlog = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.peer is not None:
            events = self.peer.connection_lost(self._loop.time())
            for event in events:
                self._dispatch(event)
            # Nothing reaches this connection any more: drop the references back to it, so
            # its objects go with their last reference instead of waiting, as a cycle, for a
            # full garbage collection (one that walks every cached object: gateway.collector).
            self.peer.on_wakeup = None
        self._deferred.close()  # nothing to write to: the answers given later only recorded
        self._release_waiters()
        self._reads = None  # it holds this connection's methods: a cycle otherwise
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        # Backpressure: the peer does not read its answers; stop reading its requests.
        self.write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._set_reading()

    # -- events ---------------------------------------------------------------------------------
    def _handle(self, events: list[Event]) -> None:
        for event in events:
            self._dispatch(event)
        self._flush()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, (RequestReceived, LaneRequest)):
            self._request(event)
        elif self.on_event is not None:
            self.on_event(self, event)

    def _request(self, event: AnyRequest) -> None:
        peer = self.peer
        assert peer is not None
        # The handler called and a synchronous answer sent by compiled code (diameter.peer).
        result = call_handler(peer, event, self._loop.time())
        if result is not None:
            self._pending(event, result)

    def _pending(self, event: AnyRequest, result: Any) -> None:
        """A handler returned something to wait for: answered when it is given or done."""
        peer = self.peer
        assert peer is not None
        if isinstance(result, DeferredAnswer):
            # Sent from the handler's own callback when it gives it: no future, no task.
            self._deferred.bind(result, event)
            return
        if isinstance(result, asyncio.Future):
            # A future (the handler settles it from a callback): answered from its done
            # callback, no task. Tracked with the tasks, so that a stop waits for or cancels it.
            self.tasks.add(result)
            result.add_done_callback(partial(self._answered, peer, event))
            return
        # One task per request; answers are written as the tasks finish.
        task = self._loop.create_task(self._await(event, result))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _await(self, event: AnyRequest, awaitable: Awaitable[Any]) -> None:
        peer = self.peer
        assert peer is not None
        try:
            answer = await awaitable
        except asyncio.CancelledError:
            peer.abandon_request(event)
            raise
        except Exception as exc:
            self._failed(peer, event, exc)
        else:
            self._deliver(peer, event, answer)
        self._flush_soon()

    def _answered(self, peer: Peer, event: AnyRequest, future: asyncio.Future[Any]) -> None:
        self.tasks.discard(future)
        if future.cancelled():
            peer.abandon_request(event)
            return
        exc = future.exception()
        if exc is not None:
            self._failed(peer, event, exc)
        else:
            self._deliver(peer, event, future.result())
        self._flush_soon()

    @property
    def deferred(self) -> set[DeferredAnswer]:
        """The deferred answers not yet given."""
        return self._deferred.waiting

    def _answers_given(self) -> None:
        """DeferredAnswers sent one (the first since the last write, or the last waiting)."""
        if self.peer is not None:
            self._flush_soon()
        if not self._deferred.waiting and self._answered_waiters:
            self._release_waiters()

    def answered(self) -> asyncio.Future[None]:
        """Done once every deferred answer now awaited has been given (a stop waits on it)."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self.deferred:
            self._answered_waiters.append(waiter)
        else:
            waiter.set_result(None)
        return waiter

    def withdraw_deferred(self) -> None:
        """Stop waiting for the deferred answers (a stop past its time): never answered."""
        for answer in self._deferred.withdraw():
            if self.peer is not None:
                self.peer.abandon_request(answer.request)
        self._release_waiters()

    def _release_waiters(self) -> None:
        waiters, self._answered_waiters = self._answered_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _deliver(self, peer: Peer, event: AnyRequest, answer: Any) -> None:
        if isinstance(answer, (bytes, Message)):
            peer.send_answer(event, answer, self._loop.time())
        else:
            log.error("handler returned %r, not an answer", type(answer))
            peer.fail_request(event, self._loop.time(), "handler returned no answer")

    def _failed(self, peer: Peer, event: AnyRequest, exc: BaseException) -> None:
        log.error("handler for %r failed", event.message, exc_info=exc)
        peer.fail_request(event, self._loop.time(), f"handler failed: {type(exc).__name__}")

    def _flush_soon(self) -> None:
        """Write the answers finished in this loop iteration together, once they all are:
        one write for the requests that waited on one event (a registry batch, a round trip
        to Redis), not one per answer."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_scheduled_answers)

    def _flush_scheduled_answers(self) -> None:
        self._flush_scheduled = False
        self._deferred.write_due = False
        self._flush()

    def _wakeup(self) -> None:
        """Another connection changed this one (election, duplicate answer): handle it once the
        current callback is over."""
        if self.transport is not None:
            self._loop.call_soon(self._woken)

    def _woken(self) -> None:
        if self.peer is not None:
            self._handle(self.peer.next_events())

    # -- output and timer -----------------------------------------------------------------------
    def _flush(self) -> None:
        peer, transport = self.peer, self.transport
        if peer is None or transport is None:
            return
        data = peer.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
        if peer.should_close:
            if not transport.is_closing():
                transport.close()
                if transport.get_write_buffer_size():
                    # close() waits for the peer to read what is left: one that never reads
                    # would hold the connection (and its place under max_connections) for
                    # ever. It gets dpa_timeout_seconds, then the connection is aborted.
                    self._loop.call_later(peer.settings.dpa_timeout, self.abort)
            return
        deadline = peer.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.peer is not None:
            self._handle(self.peer.handle_timeout(self._loop.time()))

    def stop(self, cause: int) -> None:
        if self.peer is not None:
            self._handle(self.peer.stop(cause, self._loop.time()))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
