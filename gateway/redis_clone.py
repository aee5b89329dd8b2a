"""Clone detection shared by every worker and host through Redis (Valkey-compatible).

:class:`SharedCloneTracker` is a :class:`~gateway.observations.CloneTracker` whose count spans
every gateway using the same Redis. Per IMEI, one sorted set of the IMSIs seen with it, scored by
when each was last seen, trimmed to the window and to ``threshold + 1`` members and expiring
with the window; one Lua script updates it atomically and returns the distinct count. Keys are
hash-tagged by IMEI (``eir:clone:{35693803564380}``) so that Redis Cluster places each on one
slot; with ``[shared] redis_cluster`` each script call carries the observations of one slot. IMSIs are stored as keyed digests, never in clear.

On a standalone Redis the calls go over this module's own RESP connection
(:mod:`gateway.redis_connection`): the tick's EVALSHA is assembled as bytes and its reply, an
array of integers, parsed from bytes, without redis-py's command objects (whose cost per call
and per key was most of what sharing added to a check). A Redis Cluster goes through redis-py's
cluster client, which follows the slot map and its redirections.

The hot path stays synchronous: :meth:`suspected` answers from this process's own tracker at
once and queues the observation; the observations of one event loop tick go to Redis in one
pipeline (one round trip however many checks; up to :data:`MAX_IN_FLIGHT` under way at once,
see there), and :meth:`shared_count` gives the check a future
of the shared count, which the classifier awaits at most ``budget`` seconds. Once the
connection is open and the script loaded, a round trip is written from a plain callback and
its reply handled in the connection's ``data_received``: no task, coroutine, future or
timeout context per tick (they cost ~17 µs of the worker's CPU a tick, measured with one
sighting a tick on uvloop: 61 -> 44 µs). Other commands can ride along (:meth:`carry`, a
:class:`~gateway.redis_connection.Rider`: the observation stream's XADDs), written after the
tick's calls and their replies read with them: one write, one read and one wake a tick.

Redis unreachable: checks go on with the local count (no waiting), observations are kept
(bounded) and replayed once Redis answers again; tried again every ``retry_interval`` seconds;
``eir_shared_state_up`` and ``eir_shared_state_requests_total`` count it, and one log line is
written per transition (down, up again), like the registry client's circuit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.clone_tracker import CloneTracker
from gateway.config import SharedConfig
from gateway.errors import ScriptMissing as ScriptMissing
from gateway.redis_connection import RedisConnection, Replied, RespError, Rider, open_connection
from gateway.resp import Reply, bulk
from gateway.shared_count import SharedCount

log = logging.getLogger("eir.shared")

# Several observations per call: KEYS[i] the i-th IMEI's set; ARGV: window (s), members kept
# (threshold + 1), then the observations in one argument, "DIGEST MS DIGEST MS ..." (the i-th
# IMSI digest and when it was seen, in integer milliseconds: the client formats an integer, not
# a float): the client encodes one argument, not two per observation. Scores are seconds, as
# they were when the argument carried seconds, so gateways of either version count together
# on the same keys during a rolling upgrade (each loads its own script). Returns the distinct
# count of each. ZADD GT: a replayed (older) sighting never moves a later one back.
# Real traffic makes almost every key fresh, and Redis's CPU is per call inside the script
# (INFO commandstats: ZADD 2.4, ZREMRANGEBYSCORE 1.2, PEXPIRE 0.9 µs, plus the call's own
# overhead): a set of one member holds only the sighting just made (its score, by GT, at least
# this one's), so nothing in it can be out of the window or over ``keep``, and the trims are
# skipped (3 calls, not 4: 6.1 -> 3.9 µs of Redis CPU a fresh sighting). The score goes to ZADD
# as the milliseconds' decimal text ("1733389100.123"), which Redis parses to the double
# ``ms / 1000`` made before, without a Lua number's "%.17g" formatting; the expiry as integer
# text, formatted once a call.
_OBSERVE = """
local window = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local ttl = string.format('%d', math.ceil(window * 1000))
local counts = {}
local i = 0
for digest, ms in string.gmatch(ARGV[3], '(%x+) (%d+)') do
  i = i + 1
  local key = KEYS[i]
  if #ms < 4 then  -- "5" ms is "0.005" s
    ms = string.rep('0', 4 - #ms) .. ms
  end
  redis.call('ZADD', key, 'GT', string.sub(ms, 1, -4) .. '.' .. string.sub(ms, -3), digest)
  local n = redis.call('ZCARD', key)
  if n > 1 then  -- ZREMRANGEBYSCORE answers how many it removed
    n = n - redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (tonumber(ms) / 1000 - window))
    if n > keep then
      redis.call('ZREMRANGEBYRANK', key, 0, n - keep - 1)
      n = keep
    end
  end
  redis.call('PEXPIRE', key, ttl)
  counts[i] = n
end
if i ~= #KEYS then
  return redis.error_reply('observations and keys differ: ' .. i .. ' vs ' .. #KEYS)
end
return counts
"""

MAX_PIPELINE = 1_000  # observations per round trip
# Round trips in flight on the connection at once (RESP answers a connection's commands in
# order). With one, a saturated worker whose 1,024 checks all waited for the round trip under
# way, or for the batch queued behind it, idled until Redis answered (2-11 % of its time at
# ~400 checks a round trip, ~10 ms each). Another round trip starts while some are under way
# only once its batch holds FOLLOW_UP observations: each round trip costs the worker a write,
# a read and a wake, and Redis a call, so a light load still makes one round trip at a time.
MAX_IN_FLIGHT = 4
FOLLOW_UP = 100
# Observations per script call: the client's cost is per command (building it, parsing its
# reply: measured 25-50 µs in redis-py), Redis's per observation; a call of 100 holds Redis
# for about 1 ms.
PER_CALL = 100
MAX_PENDING = 100_000  # kept while Redis is unreachable; the oldest go first
CLOCK_RESOLUTION = 0.001  # seconds: libuv's (uvloop's) loop time is in milliseconds


def _observations(calls: list[tuple[str, str, float]]) -> str:
    """The script's observations argument, ``DIGEST MS DIGEST MS ...``: when each was seen in
    integer milliseconds (a float's shortest repr cost ~7,000 instructions an observation),
    its text made once for the observations of one millisecond (a tick's checks mostly)."""
    texts: list[str] = []
    last = -1
    text = ""
    for _, digest, seen in calls:
        ms = int(seen * 1000)
        if ms != last:
            last = ms
            text = str(ms)
        texts.append(digest)
        texts.append(text)
    return " ".join(texts)


class SharedStateMetrics:
    """eir_shared_state_up{store} and eir_shared_state_requests_total{store,outcome}."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "eir_shared_state_up",
            "1 while the shared store answers, 0 while checks use this process's own state.",
            ("store",),
            registry=registry,
        )
        self.requests = Counter(
            "eir_shared_state_requests",
            "Round trips to the shared store by outcome (ok, error, timeout); one round trip "
            "carries the observations of one event loop tick.",
            ("store", "outcome"),
            registry=registry,
        )
        self.dropped = Counter(
            "eir_shared_state_dropped",
            "Observations not sent to the shared store: more than "
            f"{MAX_PENDING} were waiting while it was unreachable.",
            ("store",),
            registry=registry,
        )


class Availability:
    """Whether a shared store answers: ``eir_shared_state_up{store}``, the round trips by
    outcome, when to try again, and one log line per transition (lost, back), like the
    registry client's circuit. ``lost`` and ``back`` say what the process does meanwhile."""

    def __init__(self, metrics: SharedStateMetrics, store: str, retry_interval: float,
                 lost: str, back: str) -> None:
        self.available = True
        self.retry_at = 0.0
        self.retry_interval = retry_interval
        self._lost, self._back = lost, back
        self._up = metrics.up.labels(store)
        self._requests = {o: metrics.requests.labels(store, o) for o in ("ok", "error", "timeout")}
        self._up.set(1)

    def ok(self) -> None:
        self._requests["ok"].inc()
        self._set(True, None)

    def failed(self, exc: BaseException) -> None:
        self._requests["timeout" if isinstance(exc, TimeoutError) else "error"].inc()
        self.retry_at = time.monotonic() + self.retry_interval
        self._set(False, exc)

    def _set(self, available: bool, exc: BaseException | None) -> None:
        if available == self.available:
            return
        self.available = available
        self._up.set(1 if available else 0)
        if available:
            log.warning("Redis answers again: %s", self._back)
        else:
            log.error("Redis unreachable (%s): %s until it answers; retried every %g s",
                      exc or "no answer", self._lost, self.retry_interval)


class SharedCloneTracker(CloneTracker):
    def __init__(
        self,
        threshold: int,
        window: float,
        max_imeis: int,
        redis: Any,  # redis.asyncio.RedisCluster with cluster, else the redis:// URL (str)
        metrics: SharedStateMetrics,
        *,
        key_prefix: str = "eir",
        budget: float = 0.05,
        timeout: float = 1.0,
        retry_interval: float = 1.0,
        secret: bytes = b"",
        cluster: bool = False,
    ) -> None:
        super().__init__(threshold, window, max_imeis)
        self.redis = redis
        self._connection: RedisConnection | None = None  # standalone: opened when first needed
        self.budget = budget
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._prefix = key_prefix
        # Keyed once: each digest copies this state rather than keying afresh (a third of
        # the cost of hashlib.blake2b(..., key=...) per IMSI).
        self._hasher = hashlib.blake2b(digest_size=8, key=secret)
        self._key_head = f"{key_prefix}:clone:{{"
        self._sha: str | None = None  # of _OBSERVE, once loaded into Redis
        self.cluster = cluster  # a Redis Cluster: one script call per hash slot
        from redis.crc import key_slot  # the "shared" extra: only when configured
        from redis.exceptions import NoScriptError

        self._key_slot = key_slot
        self._no_script: tuple[type[Exception], ...] = (NoScriptError, ScriptMissing)
        self._state = Availability(
            metrics, "redis", retry_interval,
            "clone detection counts this process's checks only",
            "clone detection counts over every gateway",
        )
        self._dropped = metrics.dropped.labels("redis")
        self._pending: deque[tuple[str, str, float]] = deque()
        self._counts: dict[str, SharedCount] = {}  # IMEI -> count, this batch
        self._expiring: list[SharedCount] = []  # this tick's, under one deadline
        # The ticks' counts by deadline (``budget`` after the tick), oldest first, and the one
        # timer that settles those past it and times the round trip out: one timer for all
        # (armed about once a budget under load), not two a tick.
        self._groups: deque[tuple[float, list[SharedCount]]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False  # a flush is due (this tick's end, or the retry's time)
        self._tick_due = False  # _tick is scheduled
        self._task: asyncio.Task[None] | None = None  # a round trip that opens or loads first
        # The steady state's round trips under way, oldest first (their replies come in order).
        self._trips: deque[_RoundTrip] = deque()
        self._quiet: list[asyncio.Future[None]] = []  # flush() waiting for a round trip's end
        self._riders: list[Rider] = []  # whose commands go with the steady state's round trips
        self._riders_waiting = False  # a rider asked for a round trip (carry_soon)

    @classmethod
    def taking_over(cls, local: CloneTracker, redis: Any, metrics: SharedStateMetrics,
                    **options: Any) -> SharedCloneTracker:
        """Built from the process's tracker, keeping what it was seeded with: the fallback."""
        shared = cls(local.threshold, local.window, local.max_imeis, redis, metrics, **options)
        shared._shards, shared._per_shard = local._shards, local._per_shard
        return shared

    @property
    def available(self) -> bool:
        return self._state.available

    def key(self, imei: str) -> str:
        return f"{self._prefix}:clone:{{{imei}}}"

    def _digest(self, imsi: str) -> str:
        digest = self._hasher.copy()
        digest.update(imsi.encode())
        return digest.hexdigest()

    # -- other commands with the round trips (the observation stream's appends) ---------------
    def carry(self, rider: Rider) -> None:
        """``rider``'s commands go with this tracker's round trips while it is
        :attr:`carrying`: one write, one reply read and one wake a tick for both."""
        self._riders.append(rider)

    @property
    def carrying(self) -> bool:
        """Whether a round trip asked for now is written on the steady state's connection
        (standalone Redis, connection open, script loaded, Redis answering)."""
        connection = self._connection
        return (not self.cluster and self._sha is not None and connection is not None
                and connection.is_open and self._state.available)

    def carry_soon(self) -> None:
        """A rider has commands waiting: a round trip at this tick's end, or as soon as the
        one under way ends (its riders then ask again, or are told :meth:`Rider.uncarried`)."""
        self._riders_waiting = True
        self._schedule()

    # -- the hot path --------------------------------------------------------------------------
    def suspected(self, imei: str, imsi: str, now: float) -> int:
        """The local answer at once; the observation goes to Redis with this tick's batch."""
        n = self.observe(imei, imsi, now)
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            pending.popleft()
            self._dropped.inc()
        digest = self._hasher.copy()  # _digest, inline: once per check
        digest.update(imsi.encode())
        pending.append((imei, digest.hexdigest(), now))
        if self._state.available and imei not in self._counts:
            count = self._counts[imei] = SharedCount()
            expiring = self._expiring
            # One deadline per tick, not one per check: the checks of this tick stop waiting
            # together, ``budget`` seconds from now, if Redis has not answered by then.
            if not expiring:
                deadline = self._event_loop().time() + self.budget
                self._groups.append((deadline, expiring))
                self._arm(deadline)
                self._tick_soon()
            expiring.append(count)
        if not self._scheduled:
            self._schedule()
        return n if n > self.threshold else 0

    def shared_count(self, imei: str) -> SharedCount | None:
        """The distinct IMSIs of ``imei`` over every gateway, once the observation
        :meth:`suspected` just queued is stored (0 past ``budget`` seconds: the local answer
        stands); None while Redis is unreachable."""
        return self._counts.get(imei)

    def _tick_soon(self) -> None:
        if not self._tick_due:
            self._tick_due = True
            self._event_loop().call_soon(self._tick)

    def _tick(self) -> None:
        """After this loop iteration's reads: their checks' deadline closed, their batch sent
        (one callback a tick for both)."""
        self._tick_due = False
        self._expiring = []  # _groups holds the list of the tick that ended
        if self._scheduled and self._state.available:
            self._flush()

    def _arm(self, when: float) -> None:
        """The sweep at ``when`` at the latest."""
        if self._sweep is not None:
            if self._sweep_at <= when:
                return
            self._sweep.cancel()
        self._sweep_at = when
        self._sweep = self._event_loop().call_at(when, self._swept)

    def _swept(self) -> None:
        """Checks past their deadline stop waiting (the local count stands; their round trip
        may still finish: it only counts then); a round trip past ``timeout`` fails."""
        self._sweep = None
        # Within the loop clock's resolution of the deadline counts as past it: uvloop's clock
        # moves in milliseconds, and a timer it fires a little early, re-armed for the same
        # deadline, would fire again every iteration until the clock caught up.
        now = self._event_loop().time() + CLOCK_RESOLUTION
        groups = self._groups
        while groups and groups[0][0] <= now:
            for count in groups.popleft()[1]:
                count.settle(0)
        trips = self._trips
        if trips and trips[0].deadline <= now:
            self._timed_out()
        if groups:
            self._arm(groups[0][0])
        if trips:
            self._arm(trips[0].deadline)

    # -- batching ------------------------------------------------------------------------------
    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _schedule(self) -> None:
        if self._scheduled or (self._task is not None and not self._task.done()):
            return  # the round trip under way schedules the next one when it ends
        trips = self._trips
        if trips and (len(trips) >= MAX_IN_FLIGHT or len(self._pending) < FOLLOW_UP):
            return  # the round trips under way schedule the next one as they end
        self._scheduled = True
        if self._state.available:  # at the tick's end: this iteration's reads' checks together
            self._tick_soon()
        else:
            self._event_loop().call_later(
                max(0.0, self._state.retry_at - time.monotonic()), self._flush
            )

    def _flush(self) -> None:
        if not self._scheduled:
            return  # sent already (a tick's end came first), or nothing was due
        self._scheduled = False
        riders, self._riders_waiting = self._riders_waiting, False
        if not self._pending and not riders:
            return
        pending = self._pending
        if len(pending) <= MAX_PIPELINE:
            batch = list(pending)
            pending.clear()
        else:
            batch = [pending.popleft() for _ in range(MAX_PIPELINE)]
        counts = self._counts
        waiting = {imei: c for imei, _, _ in batch if (c := counts.pop(imei, None))}
        loop = self._event_loop()
        connection = self._connection
        if self.cluster or self._sha is None or connection is None or not connection.is_open:
            if riders:
                for rider in self._riders:
                    rider.uncarried()
            if batch:
                self._task = loop.create_task(self._send(batch, waiting))
            return
        # The steady state: the tick's calls written now and their replies handled in the
        # connection's data_received, with no task, coroutine, future or timeout context per
        # round trip (they cost more than the rest of a tick's round trip together). The
        # riders' commands follow the calls in the same write.
        payload, calls = self._payload(batch)
        carried: list[tuple[int, Replied]] = []
        if riders:
            payloads = [payload]
            for rider in self._riders:
                commands = rider.carried()
                if commands is not None:
                    payloads.append(commands[0])
                    carried.append((commands[1], commands[2]))
            payload = b"".join(payloads)
        total = calls + sum([count for count, _ in carried])
        if not total:
            return
        trip = _RoundTrip(self, batch, waiting, loop.time() + self.timeout, calls, carried)
        self._trips.append(trip)
        self._arm(trip.deadline)
        connection.request_then(payload, total, trip.replied)

    def _replied(self, trip: _RoundTrip, result: list[Reply] | BaseException) -> None:
        """A steady state's round trip ended: ``result`` its replies, or why there are none."""
        trips = self._trips
        if not trips or trips[0] is not trip:
            return  # failed already, with the round trip before it
        trips.popleft()
        batch, waiting = trip.batch, trip.waiting
        if trip.carried:
            _hand_over(trip, result)
        try:
            if isinstance(result, BaseException):
                raise result
            replies = self._counted(result[:trip.calls], len(batch))
        except ScriptMissing:
            # Redis restarted (or SCRIPT FLUSH): the batch is sent again, its checks still
            # waiting, once the script is loaded again (the next flush loads it). The round
            # trips after it meet the same and do the same.
            self._sha = None
            self._pending.extendleft(reversed(batch))
            counts = self._counts
            for imei, count in waiting.items():
                newer = counts.get(imei)
                if newer is None:
                    counts[imei] = count
                else:  # a later check of the IMEI waits in the batch too: one count for both
                    newer.add_callback(count.settle)
            self._ended({}, {})
            return
        except Exception as exc:  # any failure of the store: checks go on locally
            self._failed_all([trip], exc)
            return
        if batch:  # not a round trip of the riders' alone
            self._state.ok()
        self._ended(waiting, {imei: n for (imei, _, _), n in zip(batch, replies, strict=True)})

    def _timed_out(self) -> None:
        self._failed_all([], TimeoutError(f"no reply within {self.timeout:g} s"))

    def _failed_all(self, ended: list[_RoundTrip], exc: BaseException) -> None:
        """The connection is given up (``exc``): the round trips ``ended`` (their riders told
        already) and every one still under way, their batches back in order ahead of what
        came meanwhile, their checks answered with the local count."""
        trips = [*ended, *self._trips]
        self._trips.clear()  # before the connection closes: it calls each of them back
        for trip in trips[len(ended):]:
            if trip.carried:
                _hand_over(trip, exc)
        self._failed([item for trip in trips for item in trip.batch], exc)
        for trip in trips:  # an IMEI may wait in two of them: each its own count
            for count in trip.waiting.values():
                count.settle(0)
        self._ended({}, {})

    async def _send(
        self, batch: list[tuple[str, str, float]], waiting: dict[str, SharedCount]
    ) -> None:
        """A round trip that may have to open the connection or load the script first (and
        every round trip to a Redis Cluster)."""
        counts: dict[str, int] = {}
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    replies = await self._observe(batch)
            except self._no_script:
                # Redis restarted (or SCRIPT FLUSH): its script cache is empty. Load it again.
                self._sha = None
                async with asyncio.timeout(self.timeout):
                    replies = await self._observe(batch)
            for (imei, _, _), n in zip(batch, replies, strict=True):
                counts[imei] = n
        except Exception as exc:  # any failure of the store: checks go on locally
            self._failed(batch, exc)
        else:
            self._state.ok()
        finally:
            self._task = None
            self._ended(waiting, counts)

    def _failed(self, batch: list[tuple[str, str, float]], exc: BaseException) -> None:
        if self._connection is not None:  # a timeout may have left it mid-reply
            self._connection.close()
            self._connection = None
        # Nothing was lost: the batch goes back, ahead of what came meanwhile.
        self._pending.extendleft(reversed(batch))
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self._dropped.inc()
        self._state.failed(exc)

    def _ended(self, waiting: dict[str, SharedCount], counts: dict[str, int]) -> None:
        """A round trip is over: its checks answered (0 for those without a count: the local
        answer stands), the next one scheduled."""
        for imei, count in waiting.items():
            count.settle(counts.get(imei, 0))
        if self._pending or self._riders_waiting:
            self._schedule()
        quiet, self._quiet = self._quiet, []
        for future in quiet:
            if not future.done():
                future.set_result(None)

    def _calls(self, batch: list[tuple[str, str, float]]) -> list[list[int]]:
        """The observations (indices into ``batch``) of each script call: :data:`PER_CALL`
        at most. On a Redis Cluster a script's keys must share one hash slot (CROSSSLOT
        otherwise), so the calls go by slot there; the pipeline still makes one round trip
        per master."""
        if not self.cluster:
            return [list(range(start, min(start + PER_CALL, len(batch))))
                    for start in range(0, len(batch), PER_CALL)]
        by_slot: dict[int, list[int]] = {}
        for i, (imei, _, _) in enumerate(batch):
            by_slot.setdefault(self._key_slot(self.key(imei).encode()), []).append(i)
        return [indices[start:start + PER_CALL] for indices in by_slot.values()
                for start in range(0, len(indices), PER_CALL)]

    async def _observe(self, batch: list[tuple[str, str, float]]) -> list[int]:
        """One round trip: the script calls of :meth:`_calls`, pipelined when several (not
        MULTI: each call is atomic by itself, and one call's failure must not undo the others').
        The distinct count of each observation, in ``batch``'s order."""
        if not self.cluster:
            return await self._observe_standalone(batch)
        if self._sha is None:
            self._sha = await self.redis.script_load(_OBSERVE)
        calls = self._calls(batch)
        key, keep = self.key, self.threshold + 1
        commands = [
            (len(indices), *(key(batch[i][0]) for i in indices), self.window, keep,
             _observations([batch[i] for i in indices]))
            for indices in calls
        ]
        replies: list[list[Any]]
        if len(commands) == 1:  # most ticks: one command, without a pipeline's bookkeeping
            replies = [await self.redis.evalsha(self._sha, *commands[0])]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.evalsha(self._sha, *command)
                replies = await pipe.execute()
        counts = [0] * len(batch)
        for indices, reply in zip(calls, replies, strict=True):
            for i, n in zip(indices, reply, strict=True):
                counts[i] = int(n)
        return counts

    async def _observe_standalone(self, batch: list[tuple[str, str, float]]) -> list[int]:
        """:meth:`_observe` over this module's RESP connection: the calls as one ``bytes``."""
        connection = self._connection
        if connection is None or not connection.is_open:
            connection = self._connection = await open_connection(self.redis)
        if self._sha is None:
            sha = await connection.call("SCRIPT", "LOAD", _OBSERVE)
            assert isinstance(sha, bytes)
            self._sha = sha.decode()
        payload, calls = self._payload(batch)
        return self._counted(await connection.request(payload, calls), len(batch))

    def _payload(self, batch: list[tuple[str, str, float]]) -> tuple[bytes, int]:
        """The batch's EVALSHA calls as one ``bytes``, and how many calls."""
        assert self._sha is not None
        head = b"$7\r\nEVALSHA\r\n" + bulk(self._sha.encode())
        tail = bulk(repr(self.window).encode()) + bulk(b"%d" % (self.threshold + 1))
        key_head = self._key_head
        size = len(key_head.encode()) + 1  # the prefix may be any UTF-8; IMEIs are digits
        payload = []
        for start in range(0, len(batch), PER_CALL):
            calls = batch[start:start + PER_CALL]
            n = len(calls)
            # Each key's bulk string header and head made once for the IMEIs of one length
            # (all of them, mostly), not formatted per key.
            parts: list[str] = []
            length = -1
            line = ""
            for imei, _, _ in calls:
                if len(imei) != length:
                    length = len(imei)
                    line = f"${size + length}\r\n{key_head}"
                parts.append(line)
                parts.append(imei)
                parts.append("}\r\n")
            keys = "".join(parts)
            observations = _observations(calls).encode()
            payload.append(b"*%d\r\n%b%b%b%b%b" % (
                n + 6, head, bulk(b"%d" % n), keys.encode(), tail, bulk(observations)
            ))
        return b"".join(payload), len(payload)

    @staticmethod
    def _counted(replies: list[Reply], observations: int) -> list[int]:
        """The counts in the script calls' replies; an error reply raised."""
        counts: list[int] = []
        for reply in replies:
            if isinstance(reply, RespError):
                if reply.prefix == "NOSCRIPT":
                    raise ScriptMissing(str(reply))
                raise reply
            if not isinstance(reply, list):
                raise TypeError(f"the script answered {type(reply).__name__}, not counts")
            counts.extend(reply)  # type: ignore[arg-type]  # the script returns integers
        if len(counts) != observations:
            raise ValueError(f"{len(counts)} counts for {observations} observations")
        return counts

    async def flush(self) -> None:
        """Send what is queued now (while Redis answers), each round trip bounded by timeout."""
        while True:
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            elif self._trips:
                quiet = self._event_loop().create_future()
                self._quiet.append(quiet)
                await quiet
                continue
            if not (self._pending and self._state.available):
                return
            self._scheduled = True
            self._flush()

    async def close(self) -> None:
        """Send what is queued (one last try), then disconnect."""
        await self.flush()
        if self.cluster:
            await self.redis.aclose()
        elif self._connection is not None:
            self._connection.close()
            self._connection = None


class _RoundTrip:
    """One round trip of the steady state (several may be under way): the batch, the checks waiting for it, when it
    fails (``timeout``, loop time), how many replies are the batch's calls', and the riders'
    commands after them (how many, whom to call with their replies)."""

    def __init__(self, tracker: SharedCloneTracker, batch: list[tuple[str, str, float]],
                 waiting: dict[str, SharedCount], deadline: float, calls: int,
                 carried: list[tuple[int, Replied]]) -> None:
        self.tracker = tracker
        self.batch = batch
        self.waiting = waiting
        self.deadline = deadline
        self.calls = calls
        self.carried = carried

    def replied(self, result: list[Reply] | BaseException) -> None:
        self.tracker._replied(self, result)


def _hand_over(trip: _RoundTrip, result: list[Reply] | BaseException) -> None:
    """The riders' replies (those after the batch's calls), or the round trip's failure."""
    position = trip.calls
    for count, replied in trip.carried:
        try:
            if isinstance(result, BaseException):
                replied(result)
            else:
                replied(result[position:position + count])
        except Exception:  # a rider's failure must not stop the checks' answers
            log.exception("a command carried with the shared count failed its callback")
        position += count


def redis_client(config: SharedConfig) -> Any:
    """redis-py's asyncio client of ``config.redis_url``: with ``redis_cluster``, a Redis
    Cluster client, which learns every slot's master from the node named (CLUSTER SLOTS) and
    follows MOVED and ASK redirections."""
    import redis.asyncio  # the "shared" extra: imported only when configured

    # No socket_timeout: each round trip is bounded as a whole (asyncio.timeout), which costs
    # one timer per round trip instead of one per reply.
    if config.redis_cluster:
        return redis.asyncio.RedisCluster.from_url(
            config.redis_url, socket_connect_timeout=config.timeout
        )
    return redis.asyncio.from_url(config.redis_url, socket_connect_timeout=config.timeout)


def shared_clone_tracker(
    local: CloneTracker, config: SharedConfig, metrics: SharedStateMetrics | CollectorRegistry
) -> SharedCloneTracker:
    """``local`` (seeded from the observation log) shared through ``config.redis_url``."""
    return SharedCloneTracker.taking_over(
        local,
        # A standalone Redis is reached over the tracker's own RESP connection (by URL).
        redis_client(config) if config.redis_cluster else config.redis_url,
        metrics if isinstance(metrics, SharedStateMetrics) else SharedStateMetrics(metrics),
        key_prefix=config.key_prefix,
        budget=config.budget,
        timeout=config.timeout,
        retry_interval=config.retry_interval,
        cluster=config.redis_cluster,
    )
