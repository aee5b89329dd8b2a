"""The observation stream drained into the durable log by the writer process.

With ``[shared] observation_stream`` and a writer process (``observations.writer =
"process"``, SQLite or PostgreSQL), the gateway only appends to the stream
(gateway.redis_observations); its writer process (gateway.observation_writer) is the consumer
of the group, in a thread of its own (:class:`StreamDrain`): it reads up to
:data:`PER_ROUND_TRIP` v1 entries and :data:`PACKED_PER_ROUND_TRIP` v2 entries (each of up to
100 sightings: gateway.stream_entries) a round trip (:data:`READ`, both streams in one script),
writes them into the store in one transaction, and acknowledges them with its next read, once
committed. So the stream's reading, parsing and writing never hold the gateway's GIL.

Guarantees:

* Each entry is read by one consumer of the group: a sighting is counted once whichever
  gateway made it; at least once, exactly once unless a writer dies between a commit and the
  read that acknowledges it (its entries are then written again).
* The consumer is named after the gateway process (``HOST:PID:writer``), so a restarted writer
  first takes the entries its predecessor read and never acknowledged (``XREADGROUP`` from
  ``0``); entries of a consumer that is gone for good (its gateway ended) are claimed by another
  after :data:`CLAIM_IDLE` seconds (XAUTOCLAIM), whatever release read them.
* A rolling upgrade loses nothing: gateways of the release before append v1 entries and their
  consumers read only those; this release appends v2 entries and reads both (the group is
  created on both keys), so every entry has a consumer whichever gateways run.
* The store refusing a batch (PostgreSQL away): nothing is acknowledged, the same entries are
  read again after ``retry_interval``.
* Redis unreachable: one line on stderr per transition, tried again every ``retry_interval``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from gateway.stream_entries import (
    FIELD,
    YEAR_10000,
    EntryError,
    Sighting,
    packed_key,
    unpack,
)

GROUP = "eir"
CLAIM_IDLE = 60.0  # seconds an entry may stay read and unacknowledged before another takes it
IDLE_POLL = 0.05  # seconds between reads of a drained stream
PER_ROUND_TRIP = 1_000  # v1 entries read per round trip, written in one transaction
# v2 entries read per round trip (up to 100 sightings each: at most 10,000 in a transaction;
# real traffic packs 10-20 sightings an entry, one event loop tick's).
PACKED_PER_ROUND_TRIP = 100
# The writer process reads its settings from here (the Redis URL may hold a password: the
# command line is shown to every user by ps, a process's environment only to its owner).
DRAIN_VARIABLE = "EIR_OBSERVATIONS_STREAM"

# Acknowledge what the previous read took, now committed, then read as consumer ARGV[2] of group
# ARGV[1] up to ARGV[3] entries of the v1 stream KEYS[1] and up to ARGV[4] of the v2 stream
# KEYS[2] (gateway.stream_entries: one hash slot), from ARGV[5] ('>': new to the group; '0':
# those this consumer read and never acknowledged); ARGV[6] 'NOACK' takes them off the pending
# list at once (the gateway's own consumer, which folds them into its aggregate as it receives
# them), anything else leaves them pending until acknowledged. ARGV[7] says how many of the IDs
# after it are v1's; the rest are v2's. Returns {v1, v2}, each flat: v1 4 an entry (ID, imei,
# imsi, ts), v2 2 an entry (ID, sightings); false where the entry lacks the field, or was
# trimmed away while pending. Fields go by name, so v1 entries of every release are read.
# Then, of each stream, how many entries were trimmed (XADD MAXLEN ~) before the group read
# them: when a read from '>' leaves none unread, the group's lag (XINFO GROUPS, Redis 7) is
# exactly those, as every entry ever added was read or trimmed; XGROUP SETID ... ENTRIESREAD
# then counts them as read, so that they are told once, by one consumer (Redis 6: no lag, 0).
READ = """
local v1_acks = tonumber(ARGV[7])
if v1_acks > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 8, 7 + v1_acks))
end
if #ARGV > 7 + v1_acks then
  redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, 8 + v1_acks))
end
local function read(key, count)
  if ARGV[6] == 'NOACK' then
    return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count, 'NOACK',
                      'STREAMS', key, ARGV[5])
  end
  return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count,
                    'STREAMS', key, ARGV[5])
end
local function named(fields)
  local out = {}
  if type(fields) == 'table' then
    for i = 1, #fields, 2 do
      out[fields[i]] = fields[i + 1]
    end
  end
  return out
end
local function trimmed(key, count, reply)
  if ARGV[5] ~= '>' or (reply and #reply[1][2] >= tonumber(count)) then
    return 0  -- more may be unread
  end
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local info = named(group)
    if info.name == ARGV[1] then
      local lag, read_ = info.lag, info['entries-read']
      if type(lag) ~= 'number' or type(read_) ~= 'number' or lag <= 0 then
        return 0
      end
      redis.call('XGROUP', 'SETID', key, ARGV[1], info['last-delivered-id'],
                 'ENTRIESREAD', read_ + lag)
      return lag
    end
  end
  return 0
end
local v1, v2 = {}, {}
local reply = read(KEYS[1], ARGV[3])
if reply then
  for _, entry in ipairs(reply[1][2]) do
    local fields = named(entry[2])
    v1[#v1 + 1] = entry[1]
    v1[#v1 + 1] = fields.imei or false
    v1[#v1 + 1] = fields.imsi or false
    v1[#v1 + 1] = fields.ts or false
  end
end
local lost_v1 = trimmed(KEYS[1], ARGV[3], reply)
reply = read(KEYS[2], ARGV[4])
if reply then
  for _, entry in ipairs(reply[1][2]) do
    v2[#v2 + 1] = entry[1]
    v2[#v2 + 1] = named(entry[2]).sightings or false
  end
end
return {v1, v2, lost_v1, trimmed(KEYS[2], ARGV[4], reply)}
"""

# Consumer ARGV[2] leaves group ARGV[1] of each stream of KEYS where nothing is pending to it
# (an entry it read and never acknowledged stays for another to claim). How many it left.
_LEAVE = """
local left = 0
for _, key in ipairs(KEYS) do
  if #redis.call('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
    left = left + 1
  end
end
return left
"""

# Group ARGV[1] made on each stream of KEYS from 0 (MKSTREAM), with ENTRIESREAD 0 (Redis 7) so
# that its count of entries read is known from the start: else Redis guesses it at the first
# read from the first entry left, as if those trimmed before had been read, and READ could not
# tell them. Redis 6.2 refuses ENTRIESREAD: made without it there. A group that exists stays.
JOIN = """
local function made(reply)
  return type(reply) ~= 'table' or not reply.err or string.find(reply.err, 'BUSYGROUP')
end
for _, key in ipairs(KEYS) do
  if not made(redis.pcall('XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM',
                          'ENTRIESREAD', '0')) then
    local reply = redis.pcall('XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM')
    if not made(reply) then
      return reply
    end
  end
end
return #KEYS
"""

# A row as the store upserts it: IMEI, IMSI, first seen, last seen, count.
Row = tuple[str, str, float, float, int]


class Store(Protocol):
    errors: tuple[type[Exception], ...]

    def upsert(self, rows: list[Row]) -> None: ...


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """Which stream to drain, as whom (what the gateway tells its writer process)."""

    redis_url: str
    key: str  # the v1 stream, PREFIX:observations (the v2 stream's name follows from it)
    consumer: str
    cluster: bool = False
    timeout: float = 1.0
    retry_interval: float = 1.0

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> DrainSettings:
        return cls(**json.loads(text))


@dataclass(slots=True)
class Taken:
    """What one read (or claim) took: the sightings, each stream's entry IDs (all of them, to
    acknowledge), and the entries that hold no sightings (skipped)."""

    sightings: list[Sighting]
    v1_ids: list[Any]
    v2_ids: list[Any]
    skipped: int = 0

    @property
    def entries(self) -> int:
        return len(self.v1_ids) + len(self.v2_ids)


def taken(v1: list[Any], v2: list[Any]) -> Taken:
    """:data:`READ`'s reply, ``{v1, v2}``, as sightings."""
    sightings: list[Sighting] = []
    skipped = 0
    for i in range(0, len(v1), 4):
        try:
            imei, imsi, ts = v1[i + 1].decode(), v1[i + 2].decode(), float(v1[i + 3])
        except (AttributeError, TypeError, ValueError):
            skipped += 1  # a field missing (False/None), not text, or not a number
            continue
        # As v2 reads them: the IMEI decimal digits, the time from 1970 to 9999 (float() takes
        # "nan", which SQLite's NOT NULL then refused with the whole batch, again and again).
        if 0 <= ts < YEAR_10000 and imei.isascii() and imei.isdigit() and len(imei) <= 20:
            sightings.append((imei, imsi, ts))
        else:
            skipped += 1
    for i in range(1, len(v2), 2):
        value = v2[i]
        try:
            if not isinstance(value, bytes):
                raise EntryError("no sightings field")
            sightings += unpack(value)
        except EntryError:
            skipped += 1
    return Taken(sightings, v1[0::4], v2[0::2], skipped)


def lost_to_trimming(keys: list[str], trimmed: list[int]) -> str:
    """What :data:`READ` says was trimmed unread (counts of the v1 and v2 streams ``keys``)."""
    lost = " and ".join([f"{n} entries of {key}" for key, n in zip(keys, trimmed, strict=True)
                         if n])
    return (f"observation stream: {lost} trimmed (XADD MAXLEN ~) before any consumer read "
            "them: their sightings are lost (the consumers fell behind the stream's cap)")


def claimed(entries: list[tuple[Any, Any]], packed: bool) -> Taken:
    """XAUTOCLAIM's entries (as redis-py gives them: ID, fields) of the v1 or v2 stream."""
    flat: list[Any] = []
    for entry_id, fields in entries:
        fields = fields or {}
        if packed:
            flat += [entry_id, fields.get(FIELD)]
        else:
            flat += [entry_id, fields.get(b"imei"), fields.get(b"imsi"), fields.get(b"ts")]
    return taken([], flat) if packed else taken(flat, [])


def redis_client(settings: DrainSettings) -> Any:
    """redis-py's blocking client (this runs in a thread of the writer process)."""
    import redis  # the "shared" extra: imported only when configured

    if settings.cluster:
        return redis.cluster.RedisCluster.from_url(
            settings.redis_url, socket_connect_timeout=settings.timeout,
            socket_timeout=settings.timeout)
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.timeout,
                                socket_timeout=settings.timeout)


class StreamDrain:
    """The group's consumer in the writer process (see the module). ``store`` is shared with
    the writer's socket loop, each call under ``lock``; ``report(observations, committed)``
    after each batch written or refused."""

    def __init__(self, settings: DrainSettings, store: Store, lock: threading.Lock,
                 report: Callable[[int, bool], None], client: Any = None) -> None:
        self.settings = settings
        self.keys = [settings.key, packed_key(settings.key)]  # v1, v2: one hash slot
        self.store = store
        self.lock = lock
        self.report = report
        self.redis = client if client is not None else redis_client(settings)
        self._read = self.redis.register_script(READ)
        self._leave = self.redis.register_script(_LEAVE)
        self._join = self.redis.register_script(JOIN)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acks = Taken([], [], [])  # committed, acknowledged with the next read
        self._start_id = "0"  # this consumer's own unacknowledged entries first
        self._joined = False
        self._down = False
        self._claimed_at = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="stream-drain", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch under way, acknowledge what was committed, end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.round()
            except Exception as exc:  # any failure of Redis: try again later
                self._joined = False
                if not self._down:
                    self._down = True
                    _say(f"observation stream {self.settings.key} unreachable ({exc!r}); "
                         f"trying again every {self.settings.retry_interval:g} s")
                wait = self.settings.retry_interval
            else:
                if self._down:
                    self._down = False
                    _say(f"observation stream {self.settings.key} reachable again")
            if wait:
                self._stop.wait(wait)
        self._acknowledge()

    def round(self) -> float:
        """One read and its write; how long to wait before the next."""
        settings = self.settings
        if not self._joined:  # once per connection: Redis may have restarted empty
            self._join_group()
            self._joined = True
        if time.monotonic() - self._claimed_at >= CLAIM_IDLE:
            self._claim_abandoned()
            self._claimed_at = time.monotonic()
        acks = self._acks
        v1, v2, *trimmed = self._read(keys=self.keys, args=[
            GROUP, settings.consumer, PER_ROUND_TRIP, PACKED_PER_ROUND_TRIP, self._start_id,
            "ACK", len(acks.v1_ids), *acks.v1_ids, *acks.v2_ids])
        self._acks = Taken([], [], [])
        read = taken(v1, v2)
        if read.skipped:
            _say(f"observation stream: {read.skipped} entries are not observations; skipped")
        if any(trimmed):
            _say(lost_to_trimming(self.keys, trimmed))
        if not self._write(read.sightings):
            self._start_id = "0"  # not acknowledged: read again
            return settings.retry_interval
        self._acks = Taken([], read.v1_ids, read.v2_ids)
        if self._start_id == "0" and not read.entries:
            self._start_id = ">"  # every entry read before is written: new ones now
            return 0.0
        full = len(read.v1_ids) >= PER_ROUND_TRIP or len(read.v2_ids) >= PACKED_PER_ROUND_TRIP
        return IDLE_POLL if not full and self._start_id == ">" else 0.0

    def _write(self, sightings: list[Sighting]) -> bool:
        if not sightings:
            return True
        try:
            with self.lock:
                self.store.upsert([(imei, imsi, ts, ts, 1) for imei, imsi, ts in sightings])
        except self.store.errors as exc:
            _say(f"observation stream: {len(sightings)} observations not written: {exc}")
            self.report(0, False)
            return False
        self.report(len(sightings), True)
        return True

    def _acknowledge(self) -> None:
        """At stop: the last committed batch's XACK, then this consumer leaves the group of
        each stream where nothing is pending to it (else every gateway process that ever ran
        would stay listed in XINFO CONSUMERS); left as is when Redis is away."""
        try:
            for key, ids in zip(self.keys, (self._acks.v1_ids, self._acks.v2_ids),
                                strict=True):
                if ids:
                    self.redis.xack(key, GROUP, *ids)
            self._acks = Taken([], [], [])
            self._leave(keys=self.keys, args=[GROUP, self.settings.consumer])
        except Exception as exc:
            if self._acks.entries:
                _say(f"observation stream: {self._acks.entries} entries written and not "
                     f"acknowledged ({exc!r}): another consumer will write them again")

    def _join_group(self) -> None:
        self._join(keys=self.keys, args=[GROUP])

    def _claim_abandoned(self) -> None:
        """Entries another consumer read and never acknowledged for CLAIM_IDLE seconds, of
        either stream: written, then acknowledged."""
        settings = self.settings
        for packed, key in enumerate(self.keys):
            start: Any = "0-0"
            while not self._stop.is_set():
                reply = self.redis.xautoclaim(key, GROUP, settings.consumer,
                                              int(CLAIM_IDLE * 1000), start,
                                              count=PACKED_PER_ROUND_TRIP if packed
                                              else PER_ROUND_TRIP)
                start, entries = reply[0], reply[1]
                read = claimed(entries, bool(packed))
                if read.skipped:
                    _say(f"observation stream: {read.skipped} entries are not observations; "
                         "skipped")
                if not self._write(read.sightings):
                    self._start_id = "0"  # claimed, so pending to this consumer: read again
                    return
                ids = read.v2_ids if packed else read.v1_ids
                if ids:
                    self.redis.xack(key, GROUP, *ids)
                if start in (b"0-0", "0-0") or not entries:
                    break


def _say(line: str) -> None:
    print(f"observation writer: {line}", file=sys.stderr, flush=True)
