"""The IMEI-IMSI observation stream through Redis Streams (``[shared] observation_stream``).

Every gateway appends its observations to one stream, ``{PREFIX:observations}:v2``: the
observations of one event loop tick in one round trip, packed up to 100 an entry
(gateway.stream_entries: Redis's cost is per entry, not per sighting), the stream capped near
:data:`MAX_LENGTH` entries (XADD MAXLEN ~). One consumer group, ``eir``, drains it into the
durable observation log (gateway.observations, SQLite or PostgreSQL), and with it the stream
``PREFIX:observations``, one entry a sighting, which gateways of the release before append to
(and only read) during a rolling upgrade. With a writer process (``observations.writer =
"process"``, the default) that process is the group's consumer (gateway.stream_drain: read,
written, then acknowledged, none of it on the gateway's GIL) and this object only appends.
With the writer thread, each gateway process is a consumer of the group, reading both streams
in one script a round trip (gateway.stream_drain.READ: XREADGROUP with NOACK, the entries'
fields flat) and folding the sightings into its log's aggregate (written by the log's writer).
Each entry is read by one consumer, so a sighting is counted once whichever gateway made it. A
sighting is acknowledged as it is read, which is when the consumer folded it into its
aggregate before: what a dying process loses is that aggregate (at most ``flush_interval``),
as without the stream. Entries a consumer read and never acknowledged (it died) are claimed by
another after :data:`CLAIM_IDLE` seconds (XAUTOCLAIM).

Redis unreachable: observations go straight to this process's own log (local state, nothing
lost), ``eir_shared_state_up{store="redis_stream"}`` turns 0 and one line is logged per
transition (down, up again), as for the shared clone tracker; Redis is tried again every
``retry_interval``.

The object stands where an :class:`~gateway.observations.ObservationLog` does: ``record`` is
O(1) on the event loop and never blocks; reads (``lookup``, ``last_imsi``) go to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.config import SharedConfig
from gateway.observation_process import ObservationProcessLog
from gateway.observations import LastImsiReply, ObservationLog
from gateway.redis_clone import MAX_PENDING, Availability, SharedStateMetrics, redis_client
from gateway.redis_connection import Replied
from gateway.resp import Reply, bulk
from gateway.stream_drain import (
    CLAIM_IDLE,
    GROUP,
    IDLE_POLL,
    JOIN,
    PACKED_PER_ROUND_TRIP,
    READ,
    DrainSettings,
    Taken,
    claimed,
    lost_to_trimming,
    taken,
)
from gateway.stream_entries import FIELD, pack_counted, packed_key

if TYPE_CHECKING:
    from gateway.redis_clone import SharedCloneTracker

log = logging.getLogger("eir.shared")
T = TypeVar("T")

# v2 entries kept in the stream (XADD MAXLEN ~, counted in entries as Redis counts them; the
# oldest go first, read or not): 100,000 entries of 1 to 100 sightings, one event loop tick's
# each, so 1,000,000-1,700,000 sightings at real traffic's 10-17 a tick, at most 10,000,000.
MAX_LENGTH = 100_000
PER_ROUND_TRIP = 1_000  # observations appended per round trip, v1 entries per XREADGROUP


class ObservationStream(ObservationLog):
    """An observation log whose sightings travel through a Redis stream (see the module); the
    log it wraps (``local``) does the writing and the reading."""

    def __init__(
        self,
        local: ObservationLog,
        redis: Any,  # redis.asyncio.Redis
        metrics: SharedStateMetrics,
        *,
        key_prefix: str = "eir",
        timeout: float = 1.0,
        retry_interval: float = 1.0,
        consumer: str | None = None,
    ) -> None:
        super().__init__(local.path, local.queue_size, local.batch_size, local.flush_interval)
        self.local = local
        self.stats = local.stats
        self.redis = redis
        self.key = f"{key_prefix}:observations"  # v1: read only
        self.keys = [self.key, packed_key(self.key)]  # v1, v2: one hash slot
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._state = Availability(
            metrics, "redis_stream", retry_interval,
            "observations go to this process's own log",
            f"observations go through the stream {self.keys[1]}",
        )
        self._queued: deque[tuple[str, str, float]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._sending: asyncio.Task[None] | None = None
        self._consuming: asyncio.Task[None] | None = None
        self._shas: dict[str, str] = {}  # script -> its SHA1, once loaded into Redis
        self._joined = False  # the group exists (XGROUP CREATE since the last failure)
        self.consumes = True  # False: the log's writer process drains the stream instead
        self._closing = False  # aclose() under way: the consuming task ends at its next turn
        # On a standalone Redis, the appends go with the shared clone count's round trips
        # (:meth:`ride`): XADDs written after its EVALSHA, from its callbacks.
        self._carrier: SharedCloneTracker | None = None
        self._asked = False  # the carrier will ask for this tick's appends (carried())
        self._carried = 0  # batches in a carrier's round trip
        self._carried_done: asyncio.Future[None] | None = None  # aclose() waiting for them
        self._xadd = b"*8\r\n" + b"".join([bulk(part) for part in (
            b"XADD", self.keys[1].encode(), b"MAXLEN", b"~", b"%d" % MAX_LENGTH, b"*", FIELD)])
        from redis.exceptions import NoScriptError  # the "shared" extra: only when configured

        self._no_script: tuple[type[Exception], ...] = (NoScriptError,)

    # -- what the gateway asks of an observation log ---------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._queued) + self.local.waiting

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the log (blocking: may be called in a thread with the loop given)."""
        self.local.start(loop)
        self._loop = loop

    async def start_consuming(self) -> None:
        """On the event loop, once started: join the group and drain the stream (unless the
        log's writer process does)."""
        self._loop = asyncio.get_running_loop()
        self._consuming = asyncio.create_task(self._consume() if self.consumes else self._watch())

    def record(self, imei: str, imsi: str, now: float | None = None) -> bool:
        ts = time.time() if now is None else now
        if not self._state.available or len(self._queued) >= MAX_PENDING:
            return self.local.record(imei, imsi, ts)
        self._queued.append((imei, imsi, ts))
        self._schedule()
        return True

    def last_imsi(self, imei: str, before: float, reply: LastImsiReply) -> None:
        self.local.last_imsi(imei, before, reply)

    def lookup(self, imei: str) -> list[tuple[str, float, float, int]]:
        return self.local.lookup(imei)

    def flush(self) -> int:
        return self.local.flush()

    def close(self, timeout: float | None = None) -> None:
        """The log's close (blocking); :meth:`aclose` first, on the loop."""
        self.local.close(timeout)

    async def aclose(self) -> None:
        """Send what is queued (one last try; what fails goes to the log), stop consuming."""
        self._closing = True  # nothing more to a carrier: what is queued goes below
        if self._carried:  # a carrier's round trip ends within its timeout
            done = self._carried_done = asyncio.get_running_loop().create_future()
            await asyncio.wait([done], timeout=self.timeout * 2)
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)
        while self._queued and self._state.available:
            self._send_now()
            assert self._sending is not None
            await asyncio.gather(self._sending, return_exceptions=True)
        self._to_local(list(self._queued))
        self._queued.clear()
        if self._consuming is not None:
            # The flag as well as the cancel: Python 3.11's asyncio.wait_for loses a
            # cancellation that arrives as the awaited read completes (gh-86296), and the task
            # would read on forever, this await with it (seen as a 300 s test teardown hang).
            self._closing = True
            self._consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consuming
        await self.redis.aclose()

    # -- appending: one round trip per loop tick -------------------------------------------
    def ride(self, carrier: SharedCloneTracker) -> None:
        """Append with ``carrier``'s round trips while it is carrying (standalone Redis)."""
        self._carrier = carrier
        carrier.carry(self)

    def carried(self) -> tuple[bytes, int, Replied] | None:
        """The carrier's round trip is written now: this tick's appends with it
        (gateway.redis_connection.Rider)."""
        self._asked = False
        queued = self._queued
        if not queued or self._closing or not self._state.available:
            return None
        count = min(len(queued), PER_ROUND_TRIP)
        batch = [queued.popleft() for _ in range(count)]
        try:
            entries, counts = pack_counted(batch)
        except UnicodeError:  # a lone surrogate (no User-Name decodes to one): kept locally
            self._to_local(batch)
            return None
        self._carried += 1
        head = self._xadd
        payload = b"".join([head + bulk(entry) for entry in entries])
        return payload, len(entries), _Carried(self, batch, counts).replied

    def uncarried(self) -> None:
        """The carrier will not make the round trip it was asked for: redis-py's instead."""
        self._asked = False
        if self._queued:
            self._schedule()

    def _carried_replied(self, batch: list[tuple[str, str, float]], counts: list[int],
                         result: list[Reply] | BaseException) -> None:
        self._carried -= 1
        if not self._carried and self._carried_done is not None:
            if not self._carried_done.done():
                self._carried_done.set_result(None)
        if isinstance(result, BaseException):  # any failure of Redis: they stay local
            self._to_local(batch)
            failure: BaseException | None = result
        else:
            failure = self._keep_refused(batch, counts, result)
        if failure is not None:
            self._state.failed(failure)
            self._to_local(list(self._queued))
            self._queued.clear()
            return
        self._state.ok()
        if self._queued:
            self._schedule()

    def _schedule(self) -> None:
        if self._asked:
            return  # the carrier takes them with its next round trip
        carrier = self._carrier
        if carrier is not None and not self._closing and carrier.carrying:
            self._asked = True
            carrier.carry_soon()
            return
        if self._scheduled or (self._sending is not None and not self._sending.done()):
            return  # the round trip under way schedules the next when it ends
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._scheduled = True
        loop.call_soon(self._send_now)

    def _send_now(self) -> None:
        self._scheduled = False
        if not self._queued:
            return
        count = min(len(self._queued), PER_ROUND_TRIP)
        batch = [self._queued.popleft() for _ in range(count)]
        assert self._loop is not None
        self._sending = self._loop.create_task(self._send(batch))

    async def _send(self, batch: list[tuple[str, str, float]]) -> None:
        try:
            refused = await self._bounded(self._append(batch))
        except Exception as exc:  # any failure of Redis: the observations stay local
            self._state.failed(exc)
            self._to_local(batch)
        else:
            if refused is None:
                self._state.ok()
            else:
                self._state.failed(refused)
        finally:
            self._sending = None
            if self._queued:
                if self._state.available:
                    self._schedule()
                else:
                    self._to_local(list(self._queued))
                    self._queued.clear()

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        """``awaitable`` within ``timeout``; past it a TimeoutError that says so (the line
        logged names it: asyncio's has no text)."""
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except TimeoutError:
            raise TimeoutError(f"no reply within {self.timeout:g} s") from None

    async def _append(self, batch: list[tuple[str, str, float]]) -> BaseException | None:
        """One round trip: the batch packed into v2 entries, an XADD each (pipelined when
        several); the first refusal of an entry (its sightings kept locally), or None."""
        entries, counts = pack_counted(batch)
        key = self.keys[1]
        if len(entries) == 1:  # most ticks: one command, without a pipeline's bookkeeping
            await self.redis.xadd(key, {FIELD: entries[0]}, maxlen=MAX_LENGTH,
                                  approximate=True)
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(key, {FIELD: entry}, maxlen=MAX_LENGTH, approximate=True)
            replies = await pipe.execute(raise_on_error=False)
        return self._keep_refused(batch, counts, replies)

    def _keep_refused(self, batch: list[tuple[str, str, float]], counts: list[int],
                      replies: list[Any]) -> BaseException | None:
        """The sightings of the entries whose XADD Redis refused (an error reply: OOM past
        maxmemory refuses each XADD from the first over it on) go to the local log, and only
        those: the entries before are in the stream, and kept as well they would be written
        twice. The first refusal, or None."""
        refused: BaseException | None = None
        start = 0
        for count, reply in zip(counts, replies, strict=True):
            if isinstance(reply, Exception):  # RespError, or redis-py's ResponseError
                refused = refused or reply
                self._to_local(batch[start:start + count])
            start += count
        return refused

    def _to_local(self, batch: list[tuple[str, str, float]]) -> None:
        for imei, imsi, ts in batch:
            self.local.record(imei, imsi, ts)

    # -- draining into the durable log -----------------------------------------------------
    async def _consume(self) -> None:
        claimed_at = 0.0
        while not self._closing:
            if not self._state.available and time.monotonic() < self._state.retry_at:
                await asyncio.sleep(self._state.retry_at - time.monotonic())
            try:
                if not self._joined:  # once per connection: Redis may have restarted empty
                    await self._join_group()
                    self._joined = True
                if time.monotonic() - claimed_at >= CLAIM_IDLE:
                    await self._claim_abandoned()
                    claimed_at = time.monotonic()
                full = await self._bounded(self._read())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._joined = False
                self._state.failed(exc)
                continue
            self._state.ok()
            if not full:  # drained: a script cannot block, so wait a little
                await asyncio.sleep(IDLE_POLL)

    async def _watch(self) -> None:
        """While the writer process consumes: after a failed append, a PING every
        ``retry_interval`` tells when Redis answers again (appends resume then)."""
        while not self._closing:
            await asyncio.sleep(self.retry_interval)
            if self._state.available or time.monotonic() < self._state.retry_at:
                continue
            try:
                await self._bounded(self.redis.ping())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._state.failed(exc)
            else:
                self._state.ok()

    async def _read(self) -> bool:
        """One round trip: the entries READ took, folded into the log; whether it was a full
        read (more may be waiting)."""
        v1, v2, *trimmed = await self._script(READ, GROUP, self.consumer, PER_ROUND_TRIP,
                                              PACKED_PER_ROUND_TRIP, ">", "NOACK", 0)
        self._fold(taken(v1, v2))
        if any(trimmed):
            log.warning("%s", lost_to_trimming(self.keys, trimmed))
        return len(v1) // 4 >= PER_ROUND_TRIP or len(v2) // 2 >= PACKED_PER_ROUND_TRIP

    def _fold(self, read: Taken) -> None:
        record = self.local.record
        for imei, imsi, ts in read.sightings:
            record(imei, imsi, ts)
        if read.skipped:
            log.warning("observation stream: %d entries are not observations; skipped",
                        read.skipped)

    async def _script(self, script: str, *args: object) -> Any:
        """EVALSHA of ``script`` on the streams' keys, loaded when Redis does not have it."""
        sha = await self._sha(script)
        try:
            return await self.redis.evalsha(sha, 2, *self.keys, *args)
        except self._no_script:  # Redis restarted (or SCRIPT FLUSH): load it again
            self._shas.clear()
            return await self.redis.evalsha(await self._sha(script), 2, *self.keys, *args)

    async def _sha(self, script: str) -> str:
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = await self.redis.script_load(script)
        return sha

    async def _join_group(self) -> None:
        await self._script(JOIN, GROUP)

    async def _claim_abandoned(self) -> None:
        """Entries another consumer read and never acknowledged for CLAIM_IDLE seconds, of
        either stream."""
        for packed, key in enumerate(self.keys):
            start = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    key, GROUP, self.consumer, int(CLAIM_IDLE * 1000), start,
                    count=PACKED_PER_ROUND_TRIP if packed else PER_ROUND_TRIP)
                start, entries = reply[0], reply[1]
                read = claimed(entries, bool(packed))
                self._fold(read)
                ids = read.v2_ids if packed else read.v1_ids
                if ids:
                    await self.redis.xack(key, GROUP, *ids)
                if start in (b"0-0", "0-0") or not entries:
                    break


class _Carried:
    """A batch of appends in a carrier's round trip: its replies go back to the stream."""

    __slots__ = ("batch", "counts", "stream")

    def __init__(self, stream: ObservationStream, batch: list[tuple[str, str, float]],
                 counts: list[int]) -> None:
        self.stream = stream
        self.batch = batch
        self.counts = counts  # sightings an entry

    def replied(self, result: list[Reply] | BaseException) -> None:
        self.stream._carried_replied(self.batch, self.counts, result)


def observation_stream(
    local: ObservationLog, config: SharedConfig, metrics: SharedStateMetrics,
    carrier: SharedCloneTracker | None = None,
) -> ObservationStream:
    """``local`` fed through the stream of ``config.redis_url``; drained by ``local``'s writer
    process when it has one (consumer ``HOST:PID:writer``), else by this process. On a
    standalone Redis the appends go with ``carrier``'s round trips (the shared clone count's)
    when there is one."""
    stream = ObservationStream(local, redis_client(config), metrics,
                               key_prefix=config.key_prefix, timeout=config.timeout,
                               retry_interval=config.retry_interval)
    if isinstance(local, ObservationProcessLog):
        local.drain_stream(DrainSettings(
            config.redis_url, stream.key, f"{stream.consumer}:writer",
            cluster=config.redis_cluster, timeout=config.timeout,
            retry_interval=config.retry_interval))
        stream.consumes = False
    if carrier is not None and not carrier.cluster:
        stream.ride(carrier)
    return stream
