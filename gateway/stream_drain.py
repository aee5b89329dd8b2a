"""The observation stream drained into the durable log by the writer process.

With ``[shared] observation_stream`` and a writer process (``observations.writer =
"process"``, SQLite or PostgreSQL), the gateway only appends to the stream
(gateway.redis_observations); its writer process (gateway.observation_writer) is the consumer
of the group, in a thread of its own (:class:`StreamDrain`): it reads up to
:data:`PER_ROUND_TRIP` entries a round trip (:data:`READ`), writes them into the store in one
transaction, and acknowledges them with its next read, once committed. So the stream's
reading, parsing and writing never hold the gateway's GIL.

Guarantees:

* Each entry is read by one consumer of the group: a sighting is counted once whichever
  gateway made it; at least once, exactly once unless a writer dies between a commit and the
  read that acknowledges it (its entries are then written again).
* The consumer is named after the gateway process (``HOST:PID:writer``), so a restarted writer
  first takes the entries its predecessor read and never acknowledged (``XREADGROUP`` from
  ``0``); entries of a consumer that is gone for good (its gateway ended) are claimed by another
  after :data:`CLAIM_IDLE` seconds (XAUTOCLAIM), whatever release read them.
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

GROUP = "eir"
CLAIM_IDLE = 60.0  # seconds an entry may stay read and unacknowledged before another takes it
IDLE_POLL = 0.05  # seconds between reads of a drained stream
PER_ROUND_TRIP = 1_000  # entries read per round trip, written in one transaction
# The writer process reads its settings from here (the Redis URL may hold a password: the
# command line is shown to every user by ps, a process's environment only to its owner).
DRAIN_VARIABLE = "EIR_OBSERVATIONS_STREAM"

# Acknowledge ARGV[6..] (the entries of the previous read, now committed), then read up to
# ARGV[3] entries as consumer ARGV[2] of group ARGV[1] from ARGV[4] ('>': new to the group;
# '0': those this consumer read and never acknowledged); ARGV[5] 'NOACK' takes them off the
# pending list at once (the gateway's own consumer, which folds them into its aggregate as it
# receives them), anything else leaves them pending until acknowledged. Flat, 4 an entry: ID,
# imei, imsi, ts (false where the entry lacks the field, or was trimmed away while pending).
# Fields go by name, so entries of every release are read.
READ = """
if #ARGV > 5 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 6))
end
local reply
if ARGV[5] == 'NOACK' then
  reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'NOACK',
                     'STREAMS', KEYS[1], ARGV[4])
else
  reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], ARGV[4])
end
local out = {}
if reply then
  for _, entry in ipairs(reply[1][2]) do
    local fields, named = entry[2], {}
    if type(fields) == 'table' then
      for i = 1, #fields, 2 do
        named[fields[i]] = fields[i + 1]
      end
    end
    out[#out + 1] = entry[1]
    out[#out + 1] = named.imei or false
    out[#out + 1] = named.imsi or false
    out[#out + 1] = named.ts or false
  end
end
return out
"""

# Consumer ARGV[2] leaves group ARGV[1] of stream KEYS[1] if nothing is pending to it (an
# entry it read and never acknowledged stays for another to claim). 1 when it left.
_LEAVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
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
    key: str  # the stream, PREFIX:observations
    consumer: str
    cluster: bool = False
    timeout: float = 1.0
    retry_interval: float = 1.0

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> DrainSettings:
        return cls(**json.loads(text))


def rows_of(flat: list[Any]) -> tuple[list[Row], list[Any], int]:
    """(rows, every entry's ID, entries that are not observations) of :data:`READ`'s
    reply."""
    rows: list[Row] = []
    ids = flat[0::4]
    skipped = 0
    for i in range(0, len(flat), 4):
        try:  # every argument is evaluated before the row is built
            ts = float(flat[i + 3])
            rows.append((flat[i + 1].decode(), flat[i + 2].decode(), ts, ts, 1))
        except (AttributeError, TypeError, ValueError, UnicodeDecodeError):
            skipped += 1  # a field missing (False/None), not text, or not a number
    return rows, ids, skipped


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
        self.store = store
        self.lock = lock
        self.report = report
        self.redis = client if client is not None else redis_client(settings)
        self._read = self.redis.register_script(READ)
        self._leave = self.redis.register_script(_LEAVE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acks: list[Any] = []  # committed, acknowledged with the next read
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
        flat = self._read(keys=[settings.key], args=[
            GROUP, settings.consumer, PER_ROUND_TRIP, self._start_id, "ACK", *self._acks])
        self._acks = []
        rows, ids, skipped = rows_of(flat)
        if skipped:
            _say(f"observation stream: {skipped} entries are not observations; skipped")
        if not self._write(rows):
            self._start_id = "0"  # not acknowledged: read again
            return settings.retry_interval
        self._acks = ids
        if self._start_id == "0" and not ids:
            self._start_id = ">"  # every entry read before is written: new ones now
            return 0.0
        return IDLE_POLL if len(ids) < PER_ROUND_TRIP and self._start_id == ">" else 0.0

    def _write(self, rows: list[Row]) -> bool:
        if not rows:
            return True
        try:
            with self.lock:
                self.store.upsert(rows)
        except self.store.errors as exc:
            _say(f"observation stream: {len(rows)} observations not written: {exc}")
            self.report(0, False)
            return False
        self.report(len(rows), True)
        return True

    def _acknowledge(self) -> None:
        """At stop: the last committed batch's XACK, then this consumer leaves the group if
        nothing is pending to it (else every gateway process that ever ran would stay listed
        in XINFO CONSUMERS); left as is when Redis is away."""
        try:
            if self._acks:
                self.redis.xack(self.settings.key, GROUP, *self._acks)
                self._acks = []
            self._leave(keys=[self.settings.key], args=[GROUP, self.settings.consumer])
        except Exception as exc:
            if self._acks:
                _say(f"observation stream: {len(self._acks)} entries written and not "
                     f"acknowledged ({exc!r}): another consumer will write them again")

    def _join_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            self.redis.xgroup_create(self.settings.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _claim_abandoned(self) -> None:
        """Entries another consumer read and never acknowledged for CLAIM_IDLE seconds:
        written, then acknowledged."""
        settings = self.settings
        start: Any = "0-0"
        while not self._stop.is_set():
            reply = self.redis.xautoclaim(settings.key, GROUP, settings.consumer,
                                          int(CLAIM_IDLE * 1000), start, count=PER_ROUND_TRIP)
            start, entries = reply[0], reply[1]
            flat: list[Any] = []
            for entry_id, fields in entries:
                fields = fields or {}
                flat += [entry_id, fields.get(b"imei"), fields.get(b"imsi"), fields.get(b"ts")]
            rows, ids, skipped = rows_of(flat)
            if skipped:
                _say(f"observation stream: {skipped} entries are not observations; skipped")
            if not self._write(rows):
                self._start_id = "0"  # claimed, so pending to this consumer: read again
                return
            if ids:
                self.redis.xack(settings.key, GROUP, *ids)
            if start in (b"0-0", "0-0") or not entries:
                return


def _say(line: str) -> None:
    print(f"observation writer: {line}", file=sys.stderr, flush=True)
