"""Per-request timestamps on both sides of the wire, joined: where a slow answer spent its time.

bench/stalls.py installs both halves. Every time is ``time.perf_counter()``, CLOCK_MONOTONIC on
Linux: one clock for the simulator's process and the gateway's.

* In the gateway, :class:`GatewayTap` wraps each accepted connection's protocol (at
  ``diameter.transport.server.Server._protocol``, so the connection itself is untouched): a read
  records, for every request it completes, (client port, Hop-by-Hop, time the read was
  delivered); a write records, for every answer in it, (client port, Hop-by-Hop, time the write
  was issued).
* In the simulator, :class:`TracingSimulation` records per answered MICR (client port,
  Hop-by-Hop, scheduled send time, actual send time, time the read holding the answer was
  delivered, category).

:func:`components` joins them on (port, Hop-by-Hop) and splits each end-to-end latency into

* ``send_lag``: the simulator sent late (its own loop was busy or off its core);
* ``inbound``: sent, not yet read by the gateway (the gateway's loop was busy with something
  else, or the gateway was off its core);
* ``gateway``: read to written (the gateway's own work on the request and on what it was read
  with);
* ``outbound``: written, not yet read by the simulator (the simulator's loop busy or off its
  core).

The taps cost a few microseconds per message on each side; they are for attribution, not for
the headline figures (bench/e2e.py).
"""

from __future__ import annotations

import asyncio
import bisect
import os
import resource
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.simulator.report import Samples
from gateway.simulator.runner import Simulation, _Connection

HEADER = 20  # RFC 6733 §3: the Diameter header
READ_FIELDS = 8  # doubles per read in GatewayTap.cpu
RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
FLAG_REQUEST = 0x80


def _hop_by_hops(data: bytes | bytearray, requests: bool, start: int = 0) -> tuple[list[int], int]:
    """Hop-by-Hop Identifiers of the whole messages in ``data`` from ``start`` that are
    requests (``requests``) or answers; and where the first incomplete message begins."""
    out: list[int] = []
    pos, end = start, len(data)
    while end - pos >= HEADER:
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        if length < HEADER or end - pos < length:
            break
        if bool(data[pos + 4] & FLAG_REQUEST) == requests:
            out.append(int.from_bytes(data[pos + 12 : pos + 16], "big"))
        pos += length
    return out, pos


# ---------------------------------------------------------------------------------------------
# The gateway's side


class _TapTransport:
    """The transport a tapped connection writes through: records each answer written."""

    def __init__(self, inner: Any, port: int, writes: Samples) -> None:
        self._inner = inner
        self._port = port
        self._writes = writes

    def write(self, data: bytes | bytearray | memoryview) -> None:
        now = time.perf_counter()  # before: the simulator may read it before write() returns
        port, writes = self._port, self._writes
        for hop in _hop_by_hops(bytes(data), False)[0]:
            writes.extend((port, hop, now))
        self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_schedstat: dict[int, int] = {}  # thread id -> its open /proc/self/task/TID/schedstat


def run_queue_wait() -> float:
    """Seconds the calling thread has spent runnable but not running, since it started (the
    kernel's schedstat; 0.0 where there is none)."""
    tid = threading.get_native_id()
    fd = _schedstat.get(tid)
    if fd is None:
        try:
            fd = _schedstat[tid] = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
        except OSError:
            fd = _schedstat[tid] = -1
    return int(os.pread(fd, 128, 0).split()[1]) / 1e9 if fd >= 0 else 0.0


class _TapProtocol(asyncio.Protocol):
    """Forwards to the gateway's connection; records each request as its last byte is read."""

    def __init__(self, inner: Any, reads: Samples, writes: Samples, cpu: Samples) -> None:
        self.inner = inner
        self._reads = reads
        self._writes = writes
        self._cpu = cpu
        self._buffer = bytearray()
        self._port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._port = int(peer[1]) if peer else 0
        self.inner.connection_made(_TapTransport(transport, self._port, self._writes))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buffer = self._buffer
        buffer += data
        hops, used = _hop_by_hops(buffer, True)
        del buffer[:used]
        port, reads = self._port, self._reads
        for hop in hops:
            reads.extend((port, hop, now))
        faults, cpu = resource.getrusage(RUSAGE_THREAD).ru_minflt, time.thread_time()
        queued = run_queue_wait()
        self.inner.data_received(data)
        self._cpu.extend((
            now, time.thread_time() - cpu,
            resource.getrusage(RUSAGE_THREAD).ru_minflt - faults, len(hops),
            cpu, queued, run_queue_wait(), time.perf_counter(),
        ))

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GatewayTap:
    """Installed in the gateway process before it starts serving."""

    def __init__(self) -> None:
        # Chunked (gateway.simulator.report.Samples): one growing array may be copied whole as
        # it grows, a stall of its own in the process measured.
        self.reads = Samples()  # (port, Hop-by-Hop, time) per request
        self.writes = Samples()  # (port, Hop-by-Hop, time) per answer
        # Per read handled: (time, CPU s, page faults, requests, the loop thread's CPU time
        # before it, its run-queue wait before and after it, time at its end): the loop
        # thread's whole timeline between reads is accounted for (attribute()).
        self.cpu = Samples()

    def install(self) -> None:
        from diameter.transport.server import Server

        protocol = Server._protocol
        reads, writes, cpu = self.reads, self.writes, self.cpu

        def tapped(self: Server, name: str, local: tuple[str, ...] = ()) -> Any:
            return _TapProtocol(protocol(self, name, local), reads, writes, cpu)

        Server._protocol = tapped  # type: ignore[assignment,method-assign]

    def dump(self, directory: Path) -> None:
        for name, samples in (("reads", self.reads), ("writes", self.writes),
                              ("read_cpu", self.cpu)):
            with open(directory / f"{name}.bin", "wb") as f:
                array("d", samples).tofile(f)


def load(directory: Path, name: str) -> array:
    out = array("d")
    path = directory / name
    out.frombytes(path.read_bytes())
    return out


# ---------------------------------------------------------------------------------------------
# The simulator's side


class TracingSimulation(Simulation):
    """Records each answered request's times (see the module)."""

    def __init__(self, settings: Any, checks: Sequence[Any]) -> None:
        super().__init__(settings, checks)
        # (port, Hop-by-Hop, scheduled, sent, answered, category index) per answer
        self.trace = Samples()
        self.categories: dict[str, int] = {}
        self._sent: dict[tuple[int, int], float] = {}
        self._ports: dict[int, int] = {}

    async def _connect(self, index: int) -> _Connection:
        conn = await super()._connect(index)
        connection = conn.client.connection
        transport = connection.transport if connection is not None else None
        name = transport.get_extra_info("sockname") if transport is not None else None
        self._ports[index] = int(name[1]) if name else 0
        return conn

    def _send(self, conn: _Connection, seq: int, started: float) -> bool:
        sent = super()._send(conn, seq, started)
        if sent:
            hop = next(reversed(conn.outstanding))
            self._sent[(conn.index, hop)] = time.perf_counter()
        return sent

    def _on_answer(self, conn: _Connection, hop_by_hop: int, raw: bytes) -> None:
        now = getattr(conn.client.connection, "read_at", 0.0)  # as Simulation counts it
        request = conn.outstanding.get(hop_by_hop)
        sent = self._sent.pop((conn.index, hop_by_hop), None)
        if request is not None and sent is not None:
            category = self.categories.setdefault(request.check.category, len(self.categories))
            self.trace.extend(
                (self._ports[conn.index], hop_by_hop, request.started, sent, now, category)
            )
        super()._on_answer(conn, hop_by_hop, raw)


# ---------------------------------------------------------------------------------------------
# Loop lag, either side


class LoopSampler:
    """A timer every ``tick`` seconds on the loop: each lag with what the loop's thread did over
    the interval, its CPU time and its time runnable but not running (the kernel's
    ``/proc/self/task/TID/schedstat``: another process, or another thread, had the core)."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.lags: list[tuple[float, float, float, float]] = []  # (time, lag, cpu, run-queue)
        self.last_tick = time.perf_counter()
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            fd: int | None = os.open(
                f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY
            )
        except OSError:
            fd = None  # a kernel without schedstat: no run-queue split

        def waited() -> float:
            return int(os.pread(fd, 128, 0).split()[1]) / 1e9 if fd is not None else 0.0

        state = [time.thread_time(), waited()]
        tick = self.tick

        def sample(due: float) -> None:
            now = time.perf_counter()
            cpu, queued = time.thread_time(), waited()
            self.lags.append((now, now - due, cpu - state[0], queued - state[1]))
            state[:] = [cpu, queued]
            self.last_tick = now
            self._handle = loop.call_later(tick, sample, time.perf_counter() + tick)

        self._handle = loop.call_later(tick, sample, time.perf_counter() + tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


# ---------------------------------------------------------------------------------------------
# The join

COMPONENTS = ("send_lag", "inbound", "gateway", "outbound")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return {}
    return {
        name: round(ordered[min(n - 1, int(q * n))] * 1e3, 3)
        for name, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))
    }


def components(
    trace: Samples, categories: dict[str, int], reads: array, writes: array, started: float
) -> dict[str, Any]:
    """Percentiles of each component (ms), and how the slowest requests split."""
    simulator = array("d", trace)
    read_at = {(int(reads[i]), int(reads[i + 1])): reads[i + 2] for i in range(0, len(reads), 3)}
    written_at = {
        (int(writes[i]), int(writes[i + 1])): writes[i + 2] for i in range(0, len(writes), 3)
    }
    names = {index: name for name, index in categories.items()}
    rows: list[tuple[float, float, float, float, float, str]] = []
    unjoined = 0
    for i in range(0, len(simulator), 6):
        port, hop, due, sent, answered, category = simulator[i : i + 6]
        if due < started:
            continue
        key = (int(port), int(hop))
        read, written = read_at.get(key), written_at.get(key)
        if read is None or written is None or not sent <= read <= written <= answered:
            unjoined += 1
            continue
        rows.append((
            answered - due, sent - due, read - sent, written - read, answered - written,
            names[int(category)],
        ))
    out: dict[str, Any] = {"requests": len(rows), "unjoined": unjoined}
    out["end_to_end_ms"] = _percentiles([r[0] for r in rows])
    for i, name in enumerate(COMPONENTS, 1):
        out[f"{name}_ms"] = _percentiles([r[i] for r in rows])
    rows.sort(key=lambda r: r[0], reverse=True)
    for label, share in (("slowest_1pct", 0.01), ("slowest_0.1pct", 0.001)):
        top = rows[: max(1, int(len(rows) * share))] if rows else []
        if not top:
            continue
        dominant: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
        cats: dict[str, int] = {}
        for r in top:
            dominant[COMPONENTS[max(range(4), key=lambda k: r[k + 1])]] += 1
            cats[r[5]] = cats.get(r[5], 0) + 1
        out[label] = {
            "count": len(top),
            "end_to_end_from_ms": round(top[-1][0] * 1e3, 3),
            "mean_ms": {
                name: round(sum(r[i] for r in top) / len(top) * 1e3, 3)
                for i, name in enumerate(COMPONENTS, 1)
            },
            "dominant": dominant,
            "categories": dict(sorted(cats.items(), key=lambda kv: -kv[1])),
        }
    all_cats: dict[str, int] = {}
    for r in rows:
        all_cats[r[5]] = all_cats.get(r[5], 0) + 1
    out["categories_all"] = dict(sorted(all_cats.items(), key=lambda kv: -kv[1]))
    return out


def read_cpu(cpu: array, started: float) -> dict[str, Any]:
    """The loop thread's CPU time per read handled (the gateway's own work, whatever the machine
    does meanwhile), ms, its page faults, and the reads that took the most."""
    rows = [tuple(cpu[i : i + 4]) for i in range(0, len(cpu), READ_FIELDS) if cpu[i] >= started]
    out: dict[str, Any] = {"reads": len(rows), **_percentiles([r[1] for r in rows])}
    out["page_faults"] = int(sum(r[2] for r in rows))
    # Per second: requests, loop CPU per request (µs) and page faults: whether the slow
    # stretches are the ones that fault (fresh memory, which a VM may have to fetch from its
    # host) or not.
    seconds: dict[int, list[float]] = {}
    for t, c, f, n in rows:
        bucket = seconds.setdefault(int(t - started), [0.0, 0.0, 0.0])
        bucket[0] += n
        bucket[1] += c
        bucket[2] += f
    out["per_second"] = [
        (s, int(n), round(c / n * 1e6, 1) if n else None, int(f))
        for s, (n, c, f) in sorted(seconds.items())
    ]
    rows.sort(key=lambda r: r[1], reverse=True)
    out["longest"] = [
        {"at_s": round(t - started, 3), "cpu_ms": round(c * 1e3, 3), "page_faults": int(f),
         "requests": int(n)}
        for t, c, f, n in rows[:5]
    ]
    return out


# ---------------------------------------------------------------------------------------------
# Attribution of each slow answer

CAUSES = (
    "simulator",  # sent late, or its answer read late, by the load generator
    "gateway_reads",  # the loop thread computing reads: this request's and those queued before
    "gateway_collections",  # the loop thread in a garbage collection
    "gateway_other_callbacks",  # the loop thread computing anything else (timers, writer sends)
    "gateway_run_queue",  # the loop thread runnable, another thread or process on its core
    "gateway_sleeping",  # neither: the GIL held by another thread, or not yet delivered
)


class _Cumulative:
    """A quantity that only grows, known at points in time, linear between them."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        points.sort()
        self.times = [t for t, _ in points]
        self.values = [v for _, v in points]

    def at(self, t: float) -> float:
        times, values = self.times, self.values
        i = bisect.bisect_right(times, t)
        if i == 0:
            return values[0] if values else 0.0
        if i == len(times):
            return values[-1]
        t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1

    def over(self, start: float, end: float) -> float:
        return max(0.0, self.at(end) - self.at(start))


def attribute(
    trace: Samples, reads: array, writes: array, cpu: array,
    collections: list[Any], started: float, slow: float,
) -> dict[str, Any]:
    """Every answer slower than ``slow`` seconds end to end, attributed: the simulator's share
    (send lag and late read), and over the request's time in the gateway (sent to written) the
    loop thread's CPU in reads, in collections and in other callbacks, its run-queue wait and
    the rest (sleeping). Each answer's dominant cause is counted; episodes (slow answers whose
    times overlap) are listed, the worst first. ``collections``: bench/stalls.py's probes,
    (end, generation, CPU, found, start)."""
    simulator = array("d", trace)
    read_at = {(int(reads[i]), int(reads[i + 1])): reads[i + 2] for i in range(0, len(reads), 3)}
    written_at = {
        (int(writes[i]), int(writes[i + 1])): writes[i + 2] for i in range(0, len(writes), 3)
    }
    rows = [tuple(cpu[i : i + READ_FIELDS]) for i in range(0, len(cpu), READ_FIELDS)]
    loop_cpu: list[tuple[float, float]] = []
    read_cpu: list[tuple[float, float]] = []
    queue: list[tuple[float, float]] = []
    total = 0.0
    for t, used, _faults, _n, before, queued, queued_after, end in rows:
        loop_cpu += [(t, before), (end, before + used)]
        read_cpu += [(t, total), (end, total + used)]
        total += used
        queue += [(t, queued), (end, queued_after)]
    gc_cpu: list[tuple[float, float]] = []
    total = 0.0
    for row in sorted(collections, key=lambda r: r[0]):
        end, used = row[0], row[2]
        begin = row[4] if len(row) > 4 else end - used
        gc_cpu += [(begin, total), (end, total + used)]
        total += used
    c_loop, c_reads, c_gc, c_queue = (
        _Cumulative(p) for p in (loop_cpu, read_cpu, gc_cpu, queue)
    )
    slow_rows: list[tuple[float, float, float, dict[str, float]]] = []
    answers = 0
    for i in range(0, len(simulator), 6):
        port, hop, due, sent, answered, _category = simulator[i : i + 6]
        if due < started:
            continue
        answers += 1
        if answered - due <= slow:
            continue
        key = (int(port), int(hop))
        written = written_at.get(key)
        if written is None or read_at.get(key) is None or not sent <= written <= answered:
            continue
        in_loop = c_loop.over(sent, written)
        in_reads = min(in_loop, c_reads.over(sent, written))
        in_gc = min(in_loop - in_reads, c_gc.over(sent, written))
        queued = c_queue.over(sent, written)
        parts = {
            "simulator": (sent - due) + (answered - written),
            "gateway_reads": in_reads,
            "gateway_collections": in_gc,
            "gateway_other_callbacks": max(0.0, in_loop - in_reads - in_gc),
            "gateway_run_queue": queued,
            "gateway_sleeping": max(0.0, (written - sent) - in_loop - queued),
        }
        slow_rows.append((due, answered, answered - due, parts))
    dominant: dict[str, int] = dict.fromkeys(CAUSES, 0)
    summed: dict[str, float] = dict.fromkeys(CAUSES, 0.0)
    for _due, _answered, _latency, parts in slow_rows:
        dominant[max(parts, key=parts.__getitem__)] += 1
        for k, v in parts.items():
            summed[k] += v
    # Episodes: slow answers whose [due, answered] overlap, one stall or backlog each.
    slow_rows.sort(key=lambda r: r[0])
    episodes: list[dict[str, Any]] = []
    current: list[Any] = []
    for row in slow_rows:
        if current and row[0] > max(r[1] for r in current[-64:]):
            episodes.append(_episode(current, c_loop, c_reads, c_gc, c_queue, started))
            current = []
        current.append(row)
    if current:
        episodes.append(_episode(current, c_loop, c_reads, c_gc, c_queue, started))
    episodes.sort(key=lambda e: e["worst_ms"], reverse=True)
    return {
        "answers": answers,
        "slower_than_ms": slow * 1e3,
        "slow": len(slow_rows),
        "dominant": dominant,
        "mean_ms": {k: round(v / len(slow_rows) * 1e3, 3) for k, v in summed.items()}
        if slow_rows else {},
        "episodes": len(episodes),
        "worst_episodes": episodes[:12],
    }


def _episode(
    rows: list[Any], c_loop: _Cumulative, c_reads: _Cumulative, c_gc: _Cumulative,
    c_queue: _Cumulative, started: float,
) -> dict[str, Any]:
    """One episode's window (first due to last answer) and what the loop thread did in it."""
    start, end = rows[0][0], max(r[1] for r in rows)
    span = end - start
    in_loop = c_loop.over(start, end)
    in_reads = min(in_loop, c_reads.over(start, end))
    in_gc = min(in_loop - in_reads, c_gc.over(start, end))
    queued = c_queue.over(start, end)
    dominant: Counter[str] = Counter(max(r[3], key=r[3].__getitem__) for r in rows)
    return {
        "at_s": round(start - started, 3),
        "window_ms": round(span * 1e3, 2),
        "answers": len(rows),
        "worst_ms": round(max(r[2] for r in rows) * 1e3, 2),
        "dominant": dict(dominant.most_common()),
        "loop_ms": {
            "reads": round(in_reads * 1e3, 2),
            "collections": round(in_gc * 1e3, 2),
            "other_callbacks": round(max(0.0, in_loop - in_reads - in_gc) * 1e3, 2),
            "run_queue": round(queued * 1e3, 2),
            "sleeping": round(max(0.0, span - in_loop - queued) * 1e3, 2),
        },
    }
