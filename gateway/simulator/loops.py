"""The load drivers every simulated client shares (MMEs over S13, AMFs over N5g-eir).

A run connects, drives, drains, disconnects and reports; what differs per interface is how a
connection is opened and closed, how one request is sent and how an answer is read. Those are
the abstract methods of :class:`LoadRun`; the loops, limits, timeouts, progress and the
bookkeeping of an answer are here, once.

* closed loop: each connection keeps ``window`` requests outstanding and sends the next one when
  an answer (or a timeout) frees a slot: the capacity of the server. (The S13 simulator sends
  the requests of the slots a read's answers freed once that read is handled, together.)
* open loop: requests are scheduled at ``rate`` per second over all connections, whatever the
  answers do, and latency is measured from the *scheduled* send time, so a stalled server shows
  as latency instead of silently lowering the load (coordinated omission). The scheduler spins
  (``asyncio.sleep(0)``) during the last ``spin`` seconds (2 ms) before a send, since the event
  loop's timers are only millisecond-precise; the report gives the send lag it achieved. Above
  500 requests/s that is a core kept busy all the time: two such generators on one core take
  turns in scheduler slices of milliseconds, and each one's answers wait in its socket
  meanwhile. ``spin`` 0 sleeps on the timer instead (at least ``TIMER_TICK``), sending what is
  due in each tick.

A run stops by itself: after ``count`` requests, after ``duration`` seconds, and in any case at
``max_duration``; requests still outstanding then are given their answer timeout to finish.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.simulator.report import Report, Stats
from gateway.simulator.settings import SimulatorSettings
from gateway.simulator.traffic import Check

TIMER_TICK = 0.001  # the event loop's timer resolution (uvloop: milliseconds)


@dataclass(slots=True)
class Outstanding:
    """A request waiting for its answer."""

    started: float  # send time (closed loop) or scheduled time (open loop)
    index: int  # into the checks
    check: Check


class Link:
    """What the drivers know of one connection: requests outstanding by the key its protocol
    matches answers with (Hop-by-Hop, stream id), and whether it can still send."""

    __slots__ = ("alive", "closed", "index", "outstanding", "timed_out")

    def __init__(self, index: int) -> None:
        self.index = index
        self.outstanding: dict[int, Outstanding] = {}
        self.timed_out: set[int] = set()  # keys of requests that timed out (late answers)
        self.alive = True  # may send new requests
        self.closed = False  # the connection is gone (a draining one is neither)


L = TypeVar("L", bound=Link)


class LoadRun(abc.ABC, Generic[L]):
    """One run of simulated clients: connect, drive, drain, disconnect, report."""

    def __init__(self, settings: SimulatorSettings, checks: Sequence[Check]) -> None:
        settings.validate()
        if not checks:
            raise ValueError("no checks to send")
        self.settings = settings
        # A Sequence is used as it is (bench/real_traffic.py builds a million checks on demand).
        self.checks = checks if isinstance(checks, Sequence) else list(checks)
        self._check_count = len(self.checks)  # asked once: a Sequence's __len__ may be Python
        self.stats = Stats(good_results=self.good_results)
        self.connections: list[L] = []
        self.cut_short: list[str] = []
        self._loop = asyncio.get_running_loop()
        self._seq = 0  # requests started (closed loop budget)
        self._stopping = False  # no new requests
        self._closing = False  # the run is over: connections closing at our request
        self._started = 0.0
        self._last_answer = 0.0
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._verify = settings.verify and any(c.expected is not None for c in self.checks)
        self._closed_loop = settings.mode == "closed"

    # -- what each interface provides ------------------------------------------------------------
    good_results: frozenset[str] = frozenset()  # result keys that are answers, not errors

    @abc.abstractmethod
    async def _connect(self, index: int) -> L:
        """Open connection number ``index``, ready for requests."""

    @abc.abstractmethod
    async def _close(self, conn: L) -> None:
        """Leave politely (DPR, GOAWAY)."""

    @abc.abstractmethod
    def _send(self, conn: L, seq: int, started: float) -> bool:
        """Queue request number ``seq`` on ``conn``; False when the connection cannot send."""

    @abc.abstractmethod
    def _flush(self, conn: L) -> None:
        """Write what was queued on ``conn``."""

    @abc.abstractmethod
    def _unmatched(self) -> int:
        """Answers that matched no request (unknown Hop-by-Hop, unknown stream)."""

    def _refill_on_sweep(self) -> bool:
        """Whether the sweep tops up closed-loop windows even without timeouts."""
        return False

    # -- the run -------------------------------------------------------------------------------
    async def run(self) -> Report:
        s = self.settings
        results = await asyncio.gather(
            *(self._connect(i) for i in range(s.connections)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        self.connections = [r for r in results if not isinstance(r, BaseException)]
        if failures:
            await self._close_all()
            raise failures[0]
        # The checks, templates and connections live for the whole run: move them out of the
        # collector's way, so its passes over the heap do not stall the hot path for
        # milliseconds (every request allocates a few tracked objects).
        gc.collect()
        gc.freeze()
        progress = self._loop.create_task(self._progress()) if s.progress else None
        sweeper = self._loop.create_task(self._sweep())
        self._started = time.perf_counter()
        cpu_started = time.thread_time()
        hard_stop = self._loop.call_later(s.max_duration, self._stop_sending)
        duration_stop = (
            self._loop.call_later(s.duration, self._stop_sending) if s.duration else None
        )
        driver: asyncio.Task[None] | None = None
        try:
            if s.mode == "closed":
                self._start_closed()
            else:
                driver = self._loop.create_task(self._open_loop())
            # Outstanding requests get their answer timeout after sending stops.
            await asyncio.wait_for(asyncio.shield(self._done), s.max_duration + s.timeout + 1.0)
        except TimeoutError:
            pass
        finally:
            self._stopping = True
            hard_stop.cancel()
            if duration_stop is not None:
                duration_stop.cancel()
            for task in (driver, sweeper, progress):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if progress is not None:
                sys.stderr.write("\n")
            gc.unfreeze()
        cpu = time.thread_time() - cpu_started
        cpu_wall = time.perf_counter() - self._started
        end = self._last_answer or time.perf_counter()
        duration = max(end - self._started, 1e-9)
        unmatched = self._unmatched()
        up = sum(1 for c in self.connections if c.alive)
        self._closing = True
        await self._close_all()
        return Report(
            s.method(), self.stats, duration, max(unmatched, 0), up, list(self.cut_short),
            cpu, cpu_wall,
        )

    async def _close_all(self) -> None:
        async def close(conn: L) -> None:
            with contextlib.suppress(Exception):
                await self._close(conn)

        await asyncio.gather(*(close(c) for c in self.connections))

    def _connection_closed(self, conn: L, why: str) -> None:
        """The connection is gone; ``why``: what ended it, when it was not the end of the run."""
        if conn.closed:
            return
        conn.closed = True
        was_alive, conn.alive = conn.alive, False
        if was_alive and not self._closing and not self._done.done():
            # Not our own leaving at the end of the run: the server ended it early (it is
            # stopping, or it dropped us); the report must say so, not "OK" over fewer requests.
            self.cut_short.append(why)
        lost = len(conn.outstanding)
        conn.outstanding.clear()
        if not self._closing:  # leaving at the end of the run loses nothing
            self.stats.lost += lost
        self._check_done()

    # -- answers ---------------------------------------------------------------------------------
    def _answered(self, conn: L, request: Outstanding, result: str, outcome: str,
                  now: float) -> None:
        """Count an answer matched to its request: result key, outcome, latency, verification;
        then the closed loop's next request."""
        stats = self.stats
        stats.answered += 1
        self._last_answer = now
        stats.latencies.append(now - request.started)
        stats.results[result] += 1
        stats.outcomes[outcome] += 1
        if self._verify:
            check = request.check
            if check.expected is not None:
                stats.verified += 1
                if outcome != check.expected:
                    stats.add_mismatch(
                        check.imei, check.expected, outcome, request.index, check.line
                    )
        if self._closed_loop:
            self._slot_freed(conn)
        elif self._stopping:
            self._check_done()

    def _slot_freed(self, conn: L) -> None:
        """Closed loop: an answer freed a slot of ``conn``'s window; its next request now."""
        self._refill(conn)

    def _late(self, conn: L, key: int) -> None:
        """An answer whose request is no longer outstanding: late if it had timed out."""
        if key in conn.timed_out:
            conn.timed_out.discard(key)
            self.stats.late += 1

    # -- limits ----------------------------------------------------------------------------------
    def _stop_sending(self) -> None:
        self._stopping = True
        self._check_done()

    def _check_done(self) -> None:
        """Done when nothing is outstanding and nothing more will be sent (closed connections
        hold nothing outstanding; a draining one still waits for its answers)."""
        if self._done.done():
            return
        conns = self.connections
        if any(c.outstanding for c in conns):
            return
        if self._stopping or not any(c.alive for c in conns):
            self._done.set_result(None)

    # -- closed loop -----------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        count = self.settings.count
        return not self._stopping and (count is None or self._seq < count)

    def _refill(self, conn: L) -> None:
        window = self.settings.window
        count = self.settings.count
        outstanding = conn.outstanding
        # _budget_left() inline: once a request in the closed loop.
        while (conn.alive and len(outstanding) < window and not self._stopping
               and (count is None or self._seq < count)):
            seq = self._seq
            self._seq += 1
            if not self._send(conn, seq, time.perf_counter()):
                break
        if self._stopping:
            self._check_done()
        elif count is not None and self._seq >= count:
            self._stopping = True
            self._check_done()

    def _start_closed(self) -> None:
        # Fill the windows round-robin, so a count smaller than the windows spreads out.
        window = self.settings.window
        for _ in range(window):
            for conn in self.connections:
                if conn.alive and len(conn.outstanding) < window and self._budget_left():
                    seq = self._seq
                    self._seq += 1
                    self._send(conn, seq, time.perf_counter())
        count = self.settings.count
        if count is not None and self._seq >= count:
            self._stopping = True
        for conn in self.connections:
            self._flush(conn)
        self._check_done()

    # -- open loop -------------------------------------------------------------------------------
    async def _open_loop(self) -> None:
        s = self.settings
        interval = 1.0 / s.rate
        start = self._started
        conns = self.connections
        n = len(conns)
        limit = s.count
        seq = 0
        stats = self.stats
        lag = stats.send_lag
        spin = s.spin
        while not self._stopping:
            now = time.perf_counter()
            due = start + seq * interval
            if due > now:
                delay = due - now
                if spin:
                    await asyncio.sleep(delay - spin if delay > spin * 1.5 else 0)
                else:
                    await asyncio.sleep(max(delay, TIMER_TICK))
                continue
            touched: set[int] = set()
            while due <= now:
                if limit is not None and seq >= limit:
                    self._stopping = True
                    break
                if s.duration is not None and due - start >= s.duration:
                    self._stopping = True
                    break
                conn = conns[seq % n]
                if conn.alive:
                    if len(conn.outstanding) >= s.max_outstanding:
                        stats.dropped += 1
                    elif self._send(conn, seq, due):
                        lag.append(now - due)
                        touched.add(seq % n)
                else:
                    stats.lost += 1
                seq += 1
                due = start + seq * interval
            for i in touched:
                self._flush(conns[i])
            await asyncio.sleep(0)
        self._check_done()

    # -- timeouts and progress -------------------------------------------------------------------
    async def _sweep(self) -> None:
        timeout = self.settings.timeout
        tick = min(max(timeout / 4, 0.005), 0.1)
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            for conn in self.connections:
                outstanding = conn.outstanding
                expired = 0
                while outstanding:
                    key = next(iter(outstanding))
                    if now - outstanding[key].started < timeout:
                        break
                    del outstanding[key]
                    conn.timed_out.add(key)
                    expired += 1
                closed_loop = self.settings.mode == "closed" and conn.alive
                if expired:
                    self.stats.timed_out += expired
                if closed_loop and (expired or self._refill_on_sweep()):
                    self._refill(conn)
                    self._flush(conn)
            self._check_done()

    async def _progress(self) -> None:
        stream = sys.stderr
        last_answered, last = 0, time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            s = self.stats
            rate = (s.answered - last_answered) / (now - last)
            last_answered, last = s.answered, now
            stream.write(
                f"\r{now - self._started:6.1f} s  sent {s.sent}  answered {s.answered}  "
                f"{rate:,.0f}/s  timed out {s.timed_out}  errors {s.errors}  "
                f"mismatches {s.mismatches + s.id_mismatches}   "
            )
            stream.flush()
