"""The observation log written by a process of its own (``observations.writer = "process"``).

:class:`ObservationProcessLog` aggregates on the event loop as :class:`ObservationLog` does and
hands each aggregate to a writer process (gateway.observation_writer, its own interpreter:
its SQLite and Python work never holds this process's GIL, and an unpinned gateway lets it run
on another core). The channel is a Unix SEQPACKET socket pair driven by the event loop without
ever blocking it: an aggregate goes out as packed slices of at most ``SLICE_PAIRS`` pairs
(gateway.observation_wire, marshal), one ``send`` each, each slice encoded in a loop callback of
its own (the whole aggregate at once held the loop 1.0-1.9 ms every 1,000 pairs: its objects are
cold by then); what the socket cannot take yet waits in order and is sent when it is writable.
Lookups (``last_imsi``) travel the same way, several a tick in one message, and are answered
after the writes sent before them.

Pairs handed over and not yet acknowledged as written count in :attr:`waiting`, bounded by
``queue_size`` as with the thread: a new pair past it is dropped and counted.

A writer process that dies (or garbles a message) is restarted after RESTART_DELAY, with a log
line and ``eir_observations_writer_restarts_total``: the slices it had not acknowledged are
sent again (at least once: a transaction committed just before the crash counts twice), its
unanswered lookups fail (new_imsi then decides from memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import selectors
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from gateway import observation_wire as wire
from gateway.observations import Aggregate, LastImsi, LastImsiReply, ObservationLog, history
from gateway.stream_drain import DRAIN_VARIABLE, DrainSettings

log = logging.getLogger("eir.observations")

RESTART_DELAY = 1.0  # seconds between a writer's death and its successor
START_TIMEOUT = 30.0  # seconds for a new writer to open the database
SEND_BUFFER = 4 << 20  # bytes asked for the socket's send buffer (capped by net.core.wmem_max)

# A LOOKUPS message being gathered: (IMEI, before, reply) each.
_Lookups = list[tuple[str, float, LastImsiReply]]


class _Unsliced:
    """The part of a handed-over aggregate not encoded yet (the aggregate itself is never
    changed once handed over)."""

    __slots__ = ("items", "pairs")

    def __init__(self, aggregate: Aggregate) -> None:
        self.items: Iterator[tuple[tuple[str, str], tuple[float, float, int]]] = iter(
            aggregate.items()
        )
        self.pairs = len(aggregate)

    def next_slices(self) -> list[tuple[bytes, int]]:
        """The next SLICE_PAIRS pairs as PAIRS messages (more than one only when cut to fit)."""
        chunk = dict(islice(self.items, wire.SLICE_PAIRS))
        self.pairs -= len(chunk)
        return wire.encode_slices(chunk)


def _pairs_in(item: tuple[bytes, int] | _Lookups | _Unsliced) -> int:
    if isinstance(item, list):
        return 0
    return item.pairs if isinstance(item, _Unsliced) else item[1]


class WriterFailed(sqlite3.OperationalError):
    """The writer process could not open the database, or did not start."""


class ObservationProcessLog(ObservationLog):
    """:class:`ObservationLog` whose writer is a child process (see the module)."""

    def __init__(self, database: str | Path, queue_size: int = 100_000, batch_size: int = 1_000,
                 flush_interval: float = 1.0) -> None:
        super().__init__(database, queue_size, batch_size, flush_interval)
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._attached = False  # reader registered on the loop: the loop drives the socket
        self._writing = False  # writer registered on the loop: a message waits for room
        # In order: (PAIRS message, its pairs), an aggregate not encoded yet, or a LOOKUPS
        # being gathered.
        self._outgoing: deque[tuple[bytes, int] | _Lookups | _Unsliced] = deque()
        self._resume_scheduled = False  # a _pump is due on the loop to encode the next slice
        self._unacked: deque[tuple[bytes, int]] = deque()  # PAIRS sent, not acknowledged
        self._replies: deque[list[LastImsiReply]] = deque()  # LOOKUPS sent, not answered
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._drain: DrainSettings | None = None  # the stream this log's writer drains
        # While close() runs in another thread than the loop's: replies go through the loop.
        self._replies_via: asyncio.AbstractEventLoop | None = None

    @property
    def _is_open(self) -> bool:
        return self._started and not self._stop

    # -- start and stop -----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Spawn the writer and wait until it has opened the database (blocking: the loop's
        work is scheduled onto ``loop``, default the running one, which may be another
        thread's). Raises :class:`WriterFailed` when it cannot."""
        if loop is None:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        self._loop = loop
        self._sock, self._process = self._spawn()
        self._started = True
        if loop is not None:
            loop.call_soon_threadsafe(self._attach)
        else:
            self._pump()  # what was handed over before

    def _spawn(self) -> tuple[socket.socket, subprocess.Popen[bytes]]:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(OSError):
            mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        store, variables = self._writer_store()
        if self._drain is not None:
            variables[DRAIN_VARIABLE] = self._drain.encode()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.observation_writer", str(theirs.fileno()),
                 *store],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                env={**os.environ, **variables},
            )
        except OSError as exc:
            mine.close()
            raise WriterFailed(f"observation writer not started: {exc}") from exc
        finally:
            theirs.close()
        mine.settimeout(START_TIMEOUT)
        try:
            first = mine.recv(wire.MAX_MESSAGE)
        except OSError as exc:  # including the timeout
            first = wire.encode_failed(f"no answer: {exc}")
        if first[:1] != bytes((wire.READY,)):
            mine.close()
            process.kill()
            process.wait()
            reason = wire.decode_failed(first) if first else f"exit code {process.returncode}"
            raise WriterFailed(f"observation writer failed: {reason}")
        mine.setblocking(False)
        return mine, process

    def _writer_store(self) -> tuple[list[str], dict[str, str]]:
        """The writer's store: its command-line arguments and environment variables."""
        return [str(self.path)], {}

    def drain_stream(self, settings: DrainSettings) -> None:
        """Before :meth:`start`: the writer process also drains the observation stream into
        the store (gateway.stream_drain), as a consumer of its group."""
        self._drain = settings

    def _attach(self) -> None:
        """On the loop: drive the socket from it, hand over on a timer."""
        loop, sock = self._loop, self._sock
        if loop is None or sock is None or self._stop:
            return
        loop.add_reader(sock.fileno(), self._readable)
        self._attached = True
        self._schedule_tick()
        self._pump()

    def _detach(self) -> None:
        loop, sock = self._loop, self._sock
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if loop is None or sock is None or not self._attached:
            return
        loop.remove_reader(sock.fileno())
        if self._writing:
            loop.remove_writer(sock.fileno())
            self._writing = False
        self._attached = False

    def close(self, timeout: float | None = None) -> None:
        """Hand everything over, let the writer write it and end (blocking; from the loop's
        thread or, once nothing records, any). After ``timeout`` seconds, stop waiting: what
        was sent is still written by the writer, which ends once done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop = True
        loop = self._loop
        if loop is not None and not _runs_loop(loop) and not loop.is_closed():
            self._replies_via = loop
        if loop is not None and self._attached:
            if _runs_loop(loop):
                self._detach()
            else:
                detached = threading.Event()

                def detach() -> None:
                    self._detach()
                    detached.set()

                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to detach
                    loop.call_soon_threadsafe(detach)
                    detached.wait(timeout)
        sock, process = self._sock, self._process
        if sock is not None and process is not None:
            self._hand_over()
            self._settle(deadline, finish=True)
            sock.close()
            self._sock = None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(remaining)
        self._fail_lookups()

    def flush(self) -> int:
        """Write everything recorded so far and wait for it (blocking). Returns how many
        observations were written. From another thread than a running loop's that drives the
        socket, the flush runs on the loop's thread: both waiting on the socket, the loop's
        reader could take the answer this one waits for."""
        loop = self._loop
        if loop is not None and self._attached and loop.is_running() and not _runs_loop(loop):
            return asyncio.run_coroutine_threadsafe(self._flush_on_loop(), loop).result()
        before = self.stats.written
        self._hand_over()
        if self._sock is not None:
            self._settle(None, finish=False)
        return self.stats.written - before

    async def _flush_on_loop(self) -> int:
        return self.flush()

    # -- the loop's side ----------------------------------------------------------------------

    def _schedule_tick(self) -> None:
        if self._loop is not None and not self._stop:
            self._timer = self._loop.call_later(self.flush_interval, self._tick)

    def _tick(self) -> None:
        self._hand_over()
        self._schedule_tick()

    def _hand_over(self) -> None:
        batch = self._pending
        if not batch:
            return
        self._pending = {}
        self._handed_pairs += len(batch)
        self._outgoing.append(_Unsliced(batch))
        self._pump()

    def last_imsi(self, imei: str, before: float, reply: LastImsiReply) -> None:
        if not self._is_open:
            reply(None, True)
            return
        last = self._outgoing[-1] if self._outgoing else None
        if isinstance(last, list):
            last.append((imei, before, reply))  # the tick's lookups go in one message
            return
        self._outgoing.append([(imei, before, reply)])
        if self._loop is not None:
            self._loop.call_soon(self._pump)
        else:
            self._pump()

    def _pump(self) -> None:
        """Send what waits, in order, as far as the socket takes it; never blocks."""
        sock = self._sock
        if sock is None or (self._loop is not None and not self._attached):
            return  # not started, restarting, or not attached yet: sent once it is
        outgoing = self._outgoing
        encoded = False
        while outgoing:
            item = outgoing[0]
            if isinstance(item, _Unsliced):
                if encoded and self._loop is not None:
                    # One slice per loop callback: reads waiting meanwhile go first.
                    if not self._resume_scheduled:
                        self._resume_scheduled = True
                        self._loop.call_soon(self._resume)
                    return
                slices = item.next_slices()
                if not item.pairs:
                    outgoing.popleft()
                outgoing.extendleft(reversed(slices))
                encoded = True
                continue
            if isinstance(item, list):
                message = wire.encode_lookups([(imei, before) for imei, before, _ in item])
            else:
                message = item[0]
            try:
                sock.send(message)
            except BlockingIOError:
                if self._attached and not self._writing:
                    assert self._loop is not None
                    self._loop.add_writer(sock.fileno(), self._pump)
                    self._writing = True
                return
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE and not isinstance(item, list):
                    outgoing.popleft()  # one pair larger than the socket takes: refused
                    self.stats.errors += 1
                    self._written_pairs += item[1]
                    log.error("observation slice of %d bytes too large for the writer's socket",
                              len(message))
                    continue
                self._writer_lost(f"send failed: {exc}")
                return
            outgoing.popleft()
            if isinstance(item, list):
                self._replies.append([reply for _, _, reply in item])
            else:
                self._unacked.append(item)
        if self._writing and self._loop is not None:  # (not while _pump_now drives it)
            self._loop.remove_writer(sock.fileno())
            self._writing = False

    def _resume(self) -> None:
        self._resume_scheduled = False
        self._pump()

    def _readable(self) -> None:
        self._receive(self._sock)

    def _receive(self, sock: socket.socket | None) -> bool:
        """Handle every answer waiting; False once the writer is gone (then handled)."""
        while sock is not None:
            try:
                message = sock.recv(wire.MAX_MESSAGE)
            except BlockingIOError:
                return True
            except OSError as exc:
                self._writer_lost(f"receive failed: {exc}")
                return False
            if not message:
                self._writer_lost("it closed its socket")
                return False
            try:
                self._answered(message)
            except (wire.WireError, IndexError, UnicodeDecodeError) as exc:
                self._writer_lost(f"unreadable answer: {exc!r}")
                return False
        return False

    def _answered(self, message: bytes) -> None:
        kind = message[0]
        if kind == wire.WRITTEN:
            messages, observations, committed = wire.decode_written(message)
            pairs = 0
            for _ in range(messages):
                pairs += self._unacked.popleft()[1]
            self._written_pairs += pairs
            if committed:
                self.stats.written += observations
                self.stats.batches += 1
            else:
                self.stats.errors += 1
        elif kind == wire.DRAINED:
            observations, committed = wire.decode_drained(message)
            if committed:
                self.stats.written += observations
                self.stats.batches += 1
            else:
                self.stats.errors += 1
        elif kind == wire.FOUND:
            replies = self._replies.popleft()
            answers = wire.decode_found(message)
            if len(answers) != len(replies):
                raise wire.WireError("FOUND does not answer its LOOKUPS")
            for reply, (found, failed) in zip(replies, answers, strict=True):
                self._reply(reply, found, failed)
        else:
            raise wire.WireError(f"unexpected message {kind}")

    # -- a writer gone ------------------------------------------------------------------------

    def _writer_lost(self, why: str) -> None:
        sock, process = self._sock, self._process
        if sock is None:
            return
        self._detach()
        sock.close()
        self._sock = None
        code = None if process is None else process.poll()
        self.stats.writer_restarts += 1
        log.error("observation writer process %s ended (%s, exit code %s): restarting it in "
                  "%.0f s; %d slices not acknowledged will be sent again",
                  None if process is None else process.pid, why, code, RESTART_DELAY,
                  len(self._unacked))
        self._outgoing.extendleft(reversed(self._unacked))
        self._unacked.clear()
        self._fail_lookups()
        if self._loop is not None and not self._stop:
            self._loop.call_later(RESTART_DELAY, self._restart, process)
        elif process is not None:
            process.kill()
            process.wait()

    def _fail_lookups(self) -> None:
        """Lookups sent and never to be answered, and those not sent, fail (in order)."""
        waiting = list(self._replies)
        self._replies.clear()
        if self._stop:
            waiting.extend([reply for _, _, reply in item]
                           for item in self._outgoing if isinstance(item, list))
        for replies in waiting:
            for reply in replies:
                self._reply(reply, None, True)

    def _reply(self, reply: LastImsiReply, found: LastImsi, failed: bool) -> None:
        """Call a lookup's reply on the loop's thread."""
        via = self._replies_via
        if via is None:
            reply(found, failed)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            via.call_soon_threadsafe(reply, found, failed)

    def _restart(self, old: subprocess.Popen[bytes] | None) -> None:
        """On the loop: a new writer spawned off the loop (process start and the database
        opening take tens of ms), then attached; tried again after RESTART_DELAY if it fails."""
        loop = self._loop
        if loop is None or self._stop:
            return

        def spawn() -> tuple[socket.socket, subprocess.Popen[bytes]]:
            if old is not None:
                old.kill()
                old.wait()
            return self._spawn()

        def spawned(done: asyncio.Future[tuple[socket.socket, subprocess.Popen[bytes]]]) -> None:
            try:
                sock, process = done.result()
            except WriterFailed as exc:
                log.error("%s; trying again in %.0f s", exc, RESTART_DELAY)
                if not self._stop:
                    loop.call_later(RESTART_DELAY, self._restart, None)
                return
            if self._stop:
                sock.close()
                return
            self._sock, self._process = sock, process
            log.warning("observation writer process %d started again", process.pid)
            self._attach()

        loop.run_in_executor(None, spawn).add_done_callback(spawned)

    # -- blocking: flush and close ------------------------------------------------------------

    def _settle(self, deadline: float | None, finish: bool) -> bool:
        """Send everything and wait for every answer (``finish``: then end the writer and wait
        for it to close its end); False at ``deadline``, or when the writer is gone."""
        sock = self._sock
        assert sock is not None
        shut = False
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while True:
                self._pump_now(sock)
                if self._sock is None:  # the send failed: the writer is gone
                    self._lost_at_close()
                    return False
                idle = not self._outgoing and not self._unacked and not self._replies
                if idle and not finish:
                    return True
                if finish and not self._outgoing and not shut:
                    sock.shutdown(socket.SHUT_WR)  # the writer reads the end after the rest
                    shut = True
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outgoing else 0)
                selector.modify(sock, events)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                selector.select(remaining)
                try:
                    message = sock.recv(wire.MAX_MESSAGE)
                except BlockingIOError:
                    continue
                except OSError:
                    message = b""
                if not message:
                    if finish and shut:
                        return True  # the writer answered everything and ended
                    self._lost_at_close()
                    return False
                try:
                    self._answered(message)
                except (wire.WireError, IndexError, UnicodeDecodeError):
                    self._lost_at_close()
                    return False

    def _pump_now(self, sock: socket.socket) -> None:
        """:meth:`_pump` while the loop does not drive the socket."""
        attached, self._attached = self._attached, False
        loop, self._loop = self._loop, None
        try:
            self._pump()
        finally:
            self._attached, self._loop = attached, loop

    def _lost_at_close(self) -> None:
        lost = sum(pairs for _, pairs in self._unacked)
        lost += sum(_pairs_in(item) for item in self._outgoing)
        if lost:
            self.stats.errors += 1
            log.error("observation writer process ended before writing %d pairs", lost)
        self._written_pairs += lost
        self._unacked.clear()
        self._outgoing = deque(item for item in self._outgoing if isinstance(item, list))
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._fail_lookups()

    def lookup(self, imei: str) -> list[tuple[str, float, float, int]]:
        """(imsi, first_seen, last_seen, count) rows written for an IMEI body (a read-only
        connection of its own; blocking)."""
        return history(self.path, imei)


def _runs_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
