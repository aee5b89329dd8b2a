"""The IMEI-IMSI observation stream through Redis Streams (``[shared] observation_stream``).

Every gateway appends its observations to one stream, ``PREFIX:observations``: the
observations of one event loop tick in one round trip, a script (:data:`_APPEND`) making the
XADDs of up to :data:`PER_CALL` of them a call (the stream capped at :data:`MAX_LENGTH`
entries). One consumer group, ``eir``, drains it into the durable observation log
(gateway.observations, SQLite or PostgreSQL). With a writer process (``observations.writer =
"process"``, the default) that process is the group's consumer (gateway.stream_drain: read,
written, then acknowledged, none of it on the gateway's GIL) and this object only appends.
With the writer thread, each gateway process is a consumer of the group, reading up to
:data:`PER_ROUND_TRIP` entries a round trip with a script (gateway.stream_drain.READ:
XREADGROUP with NOACK, the entries' fields flat in one array) and folding them into its log's
aggregate (written by the log's writer). Each entry is read by one consumer, so a sighting is
counted once whichever gateway made it. A sighting is acknowledged as it is read, which is
when the consumer folded it into its aggregate before: what a dying process loses is that
aggregate (at most ``flush_interval``), as without the stream. Entries a consumer of the
release before read and never acknowledged (it died) are claimed by another after
:data:`CLAIM_IDLE` seconds (XAUTOCLAIM).

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
from typing import Any

from gateway.config import SharedConfig
from gateway.observation_process import ObservationProcessLog
from gateway.observations import LastImsiReply, ObservationLog
from gateway.redis_clone import MAX_PENDING, Availability, SharedStateMetrics, redis_client
from gateway.stream_drain import CLAIM_IDLE, GROUP, IDLE_POLL, READ, DrainSettings

log = logging.getLogger("eir.shared")

MAX_LENGTH = 1_000_000  # entries kept in the stream (XADD MAXLEN ~): read ones are trimmed first
PER_ROUND_TRIP = 1_000  # observations appended per round trip, entries per XREADGROUP
# Observations per script call: the client's cost is per command (redis-py packing one XADD
# and parsing its reply cost ~20 µs an observation), Redis's per entry.
PER_CALL = 100

# The XADDs of up to PER_CALL observations in one call. KEYS[1] the stream, ARGV[1] its
# approximate MAXLEN, ARGV[2] the observations, each "IMEI MS LENGTH IMSI " (when it was seen
# in integer milliseconds; the IMSI, User-Name's UTF-8 text, may hold any byte, so it goes by
# its length in bytes). Each entry is what a gateway of the release before wrote, field by
# field (ts in seconds as decimal text), so the two read each other's during a rolling upgrade.
# Returns how many were added.
_APPEND = """
local s = ARGV[2]
local pos, n = 1, 0
while pos <= #s do
  local imei, ms, length, start = string.match(s, '^(%d+) (%d+) (%d+) ()', pos)
  if not imei then
    return redis.error_reply('observation ' .. (n + 1) .. ' is malformed')
  end
  local stop = start + tonumber(length)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'imei', imei,
             'imsi', string.sub(s, start, stop - 1),
             'ts', string.sub(ms, 1, -4) .. '.' .. string.sub(ms, -3))
  pos = stop + 1
  n = n + 1
end
return n
"""


def _appended(batch: list[tuple[str, str, float]]) -> str:
    """:data:`_APPEND`'s observations argument."""
    return "".join([
        f"{imei} {int(ts * 1000)} {len(imsi) if imsi.isascii() else len(imsi.encode())} {imsi} "
        for imei, imsi, ts in batch
    ])


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
        self.key = f"{key_prefix}:observations"
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._state = Availability(
            metrics, "redis_stream", retry_interval,
            "observations go to this process's own log",
            f"observations go through the stream {self.key}",
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
    def _schedule(self) -> None:
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
            await asyncio.wait_for(self._append(batch), self.timeout)
        except Exception as exc:  # any failure of Redis: the observations stay local
            self._state.failed(exc)
            self._to_local(batch)
        else:
            self._state.ok()
        finally:
            self._sending = None
            if self._queued:
                if self._state.available:
                    self._schedule()
                else:
                    self._to_local(list(self._queued))
                    self._queued.clear()

    async def _append(self, batch: list[tuple[str, str, float]]) -> None:
        """One round trip: the batch's XADDs made by :data:`_APPEND`, :data:`PER_CALL`
        observations a call (pipelined when several)."""
        calls = [_appended(batch[start:start + PER_CALL])
                 for start in range(0, len(batch), PER_CALL)]
        if len(calls) == 1:  # most ticks: one command, without a pipeline's bookkeeping
            added = int(await self._script(_APPEND, MAX_LENGTH, calls[0]))
        else:
            try:
                added = await self._append_pipelined(await self._sha(_APPEND), calls)
            except self._no_script:
                self._shas.clear()
                added = await self._append_pipelined(await self._sha(_APPEND), calls)
        if added != len(batch):
            raise ValueError(f"the stream took {added} of {len(batch)} observations")

    async def _append_pipelined(self, sha: str, calls: list[str]) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(sha, 1, self.key, MAX_LENGTH, call)
            return sum(int(n) for n in await pipe.execute())

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
                taken = await asyncio.wait_for(self._read(), self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._joined = False
                self._state.failed(exc)
                continue
            self._state.ok()
            if taken < PER_ROUND_TRIP:  # drained: a script cannot block, so wait a little
                await asyncio.sleep(IDLE_POLL)

    async def _watch(self) -> None:
        """While the writer process consumes: after a failed append, a PING every
        ``retry_interval`` tells when Redis answers again (appends resume then)."""
        while not self._closing:
            await asyncio.sleep(self.retry_interval)
            if self._state.available or time.monotonic() < self._state.retry_at:
                continue
            try:
                await asyncio.wait_for(self.redis.ping(), self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._state.failed(exc)
            else:
                self._state.ok()

    async def _read(self) -> int:
        """One round trip: the entries READ took, folded into the log; how many."""
        flat = await self._script(READ, GROUP, self.consumer, PER_ROUND_TRIP, ">", "NOACK")
        record = self.local.record
        for i in range(0, len(flat), 4):
            try:  # every argument is evaluated before record is called
                record(flat[i + 1].decode(), flat[i + 2].decode(), float(flat[i + 3]))
            except (AttributeError, ValueError):  # a field missing (None), or not text
                log.warning("observation stream: entry %s is not an observation; skipped",
                            flat[i])
        return len(flat) // 4

    async def _script(self, script: str, *args: object) -> Any:
        """EVALSHA of ``script`` on the stream's key, loaded when Redis does not have it."""
        sha = await self._sha(script)
        try:
            return await self.redis.evalsha(sha, 1, self.key, *args)
        except self._no_script:  # Redis restarted (or SCRIPT FLUSH): load it again
            self._shas.clear()
            return await self.redis.evalsha(await self._sha(script), 1, self.key, *args)

    async def _sha(self, script: str) -> str:
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = await self.redis.script_load(script)
        return sha

    async def _join_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _claim_abandoned(self) -> None:
        """Entries another consumer read and never acknowledged for CLAIM_IDLE seconds."""
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(self.key, GROUP, self.consumer,
                                                int(CLAIM_IDLE * 1000), start,
                                                count=PER_ROUND_TRIP)
            start, entries = reply[0], reply[1]
            await self._take(entries)
            if start in (b"0-0", "0-0") or not entries:
                return

    async def _take(self, entries: list[tuple[Any, dict[Any, Any]]]) -> None:
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            try:
                imei, imsi = fields[b"imei"].decode(), fields[b"imsi"].decode()
                ts = float(fields[b"ts"])
            except (KeyError, ValueError, AttributeError):
                log.warning("observation stream: entry %s is not an observation; skipped",
                            entry_id)
                continue
            self.local.record(imei, imsi, ts)
        if ids:
            await self.redis.xack(self.key, GROUP, *ids)


def observation_stream(
    local: ObservationLog, config: SharedConfig, metrics: SharedStateMetrics
) -> ObservationStream:
    """``local`` fed through the stream of ``config.redis_url``; drained by ``local``'s writer
    process when it has one (consumer ``HOST:PID:writer``), else by this process."""
    stream = ObservationStream(local, redis_client(config), metrics,
                               key_prefix=config.key_prefix, timeout=config.timeout,
                               retry_interval=config.retry_interval)
    if isinstance(local, ObservationProcessLog):
        local.drain_stream(DrainSettings(
            config.redis_url, stream.key, f"{stream.consumer}:writer",
            cluster=config.redis_cluster, timeout=config.timeout,
            retry_interval=config.retry_interval))
        stream.consumes = False
    return stream
