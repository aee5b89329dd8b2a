"""A cheap open-loop S13 sender for bench/overload.py: requests encoded before the clock starts,
sent on schedule from processes of their own, every answer counted.

Why not the simulator: at twice a gateway's capacity its asyncio client spends more CPU per
request than it leaves time for, falls behind its own schedule (by 2 s at 87,000/s in session 5)
and so offers less than it claims. Here the requests are encoded before the run (the simulator's
request templates, patched per handset: gateway.simulator.traffic), each connection's requests
one contiguous byte string; sending is one ``send`` of whatever has fallen due since the last,
and answers are read by the Hop-by-Hop Identifier (the request's index) and the simulator's
answer scanner. Nothing of the gateway's serving path runs here.

Schedule: request ``i`` (of all connections) is due at ``start + i / rate``; connection ``c`` of
``n`` sends the requests ``i`` with ``i % n == c``. Latency is measured from the due time (open
loop: a late send counts against the answer, stalls are not hidden). The sender reports its own
slip: when each request was queued (``queued``: its CPU kept up) and when its last octet went to
the kernel (``handed``: also the gateway's TCP backpressure) against its due time.

Every request ends in exactly one class: answered within ``timeout`` as a MICA (2001 with the
expected Equipment-Status, or 5422 where the handset is unknown), a mismatching MICA, a 3004
DIAMETER_TOO_BUSY, another result; answered later than ``timeout`` (late); or never answered
within ``timeout + grace`` after the last due time (never).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import socket
import struct
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.simulator.traffic import (
    AnswerScanner,
    Check,
    RequestFactory,
    RequestIdentity,
    outcome_of,
)
from tests.blocking_socket import recv_message

_U32 = struct.Struct("!I")
_HEAD = struct.Struct("!BBHBBHII")
TOO_BUSY = "RESULT_3004"
# outcome codes stored per request (one octet each)
_NONE, _MATCH, _MISMATCH, _BUSY, _OTHER = 0, 1, 2, 3, 4
_DWR, _DPR = 280, 282


@dataclass(frozen=True, slots=True)
class SenderPlan:
    port: int
    rate: float  # over all connections of all senders
    connections: int  # over all senders
    total: int  # requests over all connections
    timeout: float = 5.0
    grace: float = 5.0  # how long after the last due time (+ timeout) late answers are counted
    origin_host: str = "load{n}.test"
    origin_realm: str = "test"
    destination_realm: str = "localdomain"


@dataclass(slots=True)
class _Connection:
    index: int  # of all connections
    sock: socket.socket
    stream: memoryview  # every request of this connection, in order
    ends: array[int]  # ends[k]: end offset of the k-th request
    queued: int = 0  # requests due so far
    sent: int = 0  # octets handed to the kernel
    handed: int = 0  # requests whose last octet is handed
    inbox: bytearray = field(default_factory=bytearray)


def encode_requests(
    plan: SenderPlan, checks: Sequence[Check], connection: int, expected: list[str | None]
) -> tuple[bytes, array[int]]:
    """Connection ``connection``'s requests (every ``connections``-th check from it), in
    order; Hop-by-Hop and End-to-End Identifiers are the request's index + 1. Each request's
    expected outcome goes into ``expected`` at its index."""
    host = plan.origin_host.format(n=connection)
    factory = RequestFactory(
        RequestIdentity(host, plan.origin_realm, plan.destination_realm, None, int(time.time()))
    )
    out = bytearray()
    ends = array("Q")
    pack = _U32.pack_into
    for i in range(connection, plan.total, plan.connections):
        check = checks[i]
        expected[i] = check.expected
        request = factory.build(factory.prepare(check), i + 1, i)
        pack(request, 12, i + 1)
        out += request
        ends.append(len(out))
    return bytes(out), ends


def _cer(host: str, realm: str) -> bytes:
    from diameter.codec import FLAG_REQUEST, Avp, Message
    from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR

    message = Message(257, 0, FLAG_REQUEST, 1, 1)
    message.add("Origin-Host", host).add("Origin-Realm", realm)
    message.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 0).add("Product-Name", "load")
    message.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
    )
    return message.encode()


def _answer_to(request: bytes, host: str, realm: str) -> bytes:
    """DWA or DPA 2001 to the gateway's DWR or DPR (RFC 6733 §5.5, §5.4)."""
    from diameter.codec import Message

    command = int.from_bytes(request[5:8], "big")
    answer = Message(command, 0, 0, _U32.unpack_from(request, 12)[0], _U32.unpack_from(request, 16)[0])
    answer.add("Result-Code", 2001).add("Origin-Host", host).add("Origin-Realm", realm)
    return answer.encode()


def connect(plan: SenderPlan, connection: int) -> socket.socket:
    host = plan.origin_host.format(n=connection)
    sock = socket.create_connection(("127.0.0.1", plan.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_cer(host, plan.origin_realm))
    answer = recv_message(sock)
    code = AnswerScanner().scan(answer)[1]
    if code != 2001:
        sock.close()
        raise ConnectionError(f"CER of {host} answered {code}")
    sock.setblocking(False)
    return sock


class Sender:
    """One process's connections, driven by one selector."""

    def __init__(self, plan: SenderPlan, checks: Sequence[Check], mine: Sequence[int]) -> None:
        self.plan = plan
        self.expected: list[str | None] = [None] * plan.total
        self.connections: list[_Connection] = []
        for c in mine:
            stream, ends = encode_requests(plan, checks, c, self.expected)
            self.connections.append(_Connection(c, connect(plan, c), memoryview(stream), ends))
        count = plan.total
        self.latency = array("d", bytes(8 * count))  # 0.0: not answered
        self.outcome = array("B", bytes(count))
        # (time, first, end) per connection: requests [first, end) of it queued / handed then
        self.queued_at: list[list[tuple[float, int, int]]] = [[] for _ in self.connections]
        self.handed_at: list[list[tuple[float, int, int]]] = [[] for _ in self.connections]
        self.duplicates = 0
        self.unexpected = 0  # answers with an unknown Hop-by-Hop Identifier
        self.max_unsent_octets = 0
        self.closed_by_gateway = 0

    def run(self, start: float) -> None:
        plan = self.plan
        rate, n, total = plan.rate, plan.connections, plan.total
        last_due = start + (total - 1) / rate
        stop = last_due + plan.timeout + plan.grace
        selector = selectors.DefaultSelector()
        for conn in self.connections:
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        scanner = AnswerScanner()
        waiting = sum(len(conn.ends) for conn in self.connections)
        while waiting > 0:
            now = time.monotonic()
            if now >= stop:
                break
            due = min(total, int((now - start) * rate) + 1) if now >= start else 0
            for k, conn in enumerate(self.connections):
                if conn.sock.fileno() < 0:
                    continue
                mine = (due - conn.index + n - 1) // n if due > conn.index else 0
                if mine > conn.queued:
                    self.queued_at[k].append((now, conn.queued, mine))
                    conn.queued = mine
                end = conn.ends[conn.queued - 1] if conn.queued else 0
                if conn.sent < end:
                    try:
                        conn.sent += conn.sock.send(conn.stream[conn.sent : end])
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._lost(selector, conn)
                        continue
                    self.max_unsent_octets = max(self.max_unsent_octets, end - conn.sent)
                    handed = conn.handed
                    while handed < conn.queued and conn.ends[handed] <= conn.sent:
                        handed += 1
                    if handed > conn.handed:
                        self.handed_at[k].append((now, conn.handed, handed))
                        conn.handed = handed
            # Wake for what falls due next, at most 0.5 ms from now (batches of rate/2000).
            wait = 0.0005 if due < total else min(0.05, max(0.0, stop - now))
            for key, _ in selector.select(wait):
                conn = key.data
                try:
                    data = conn.sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._lost(selector, conn)
                    continue
                waiting -= self._answers(conn, data, time.monotonic(), start, scanner)
        selector.close()
        for conn in self.connections:
            conn.sock.close()

    def _lost(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        self.closed_by_gateway += 1
        selector.unregister(conn.sock)
        conn.sock.close()

    def _answers(
        self, conn: _Connection, data: bytes, now: float, start: float, scanner: AnswerScanner
    ) -> int:
        """Record the answers read; the number of requests newly answered."""
        inbox = conn.inbox
        inbox += data
        rate = self.plan.rate
        answered = 0
        offset = 0
        size = len(inbox)
        while size - offset >= 20:
            length = _U32.unpack_from(inbox, offset)[0] & 0xFFFFFF
            if length < 20 or size - offset < length:
                break
            raw = bytes(inbox[offset : offset + length])
            offset += length
            if raw[4] & 0x80:  # the gateway's DWR or DPR
                command = int.from_bytes(raw[5:8], "big")
                if command in (_DWR, _DPR):
                    host = self.plan.origin_host.format(n=conn.index)
                    with contextlib.suppress(OSError):
                        conn.sock.send(_answer_to(raw, host, self.plan.origin_realm))
                continue
            index = _U32.unpack_from(raw, 12)[0] - 1
            if not 0 <= index < self.plan.total:
                self.unexpected += 1
                continue
            if self.outcome[index]:
                self.duplicates += 1
                continue
            self.latency[index] = max(1e-9, now - (start + index / rate))
            _, result, experimental, status = scanner.scan(raw)
            got = outcome_of(result, experimental, status)
            if got == TOO_BUSY:
                self.outcome[index] = _BUSY
            elif got.startswith("RESULT_"):
                self.outcome[index] = _OTHER
            else:
                expected = self.expected[index]
                self.outcome[index] = _MATCH if expected in (None, got) else _MISMATCH
            answered += 1
        del inbox[:offset]
        return answered

    def results(self, start: float) -> dict[str, Any]:
        """Raw per-request figures of this sender's requests, for ``summarise``."""
        plan = self.plan
        mine = [i for conn in self.connections for i in range(conn.index, plan.total, plan.connections)]
        slips: dict[str, list[float]] = {"queued": [], "handed": []}
        for name, marks in (("queued", self.queued_at), ("handed", self.handed_at)):
            for k, conn in enumerate(self.connections):
                for at, first, end in marks[k]:
                    for j in range(first, end):
                        slips[name].append(at - (start + (conn.index + j * plan.connections) / plan.rate))
        last_handed = max(
            (marks[-1][0] for marks in self.handed_at if marks), default=start
        )
        return {
            "indices": array("Q", mine).tobytes(),
            "latency": self.latency.tobytes(),
            "outcome": self.outcome.tobytes(),
            "slip_queued": array("d", slips["queued"]).tobytes(),
            "slip_handed": array("d", slips["handed"]).tobytes(),
            "handed": sum(conn.handed for conn in self.connections),
            "last_handed": last_handed,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "max_unsent_octets": self.max_unsent_octets,
            "closed_by_gateway": self.closed_by_gateway,
        }


def _sender_main(plan: SenderPlan, checks: Sequence[Check], mine: list[int], cpu: int | None,
                 pipe: Any) -> None:
    try:
        sender = Sender(plan, checks, mine)
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
        return
    del checks  # encoded: only the streams are needed now
    if cpu is not None:
        # Pinned once the requests are encoded (encoding may use any core: the gateway is idle).
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {cpu})
    pipe.send(("ready", None))
    start = pipe.recv()
    try:
        sender.run(start)
        pipe.send(("done", sender.results(start)))
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
        raise


def run(
    plan: SenderPlan, checks: Sequence[Check], senders: int = 1, cpu: int | None = None
) -> dict[str, Any]:
    """``senders`` processes (spawned, each its share of the connections, pinned to ``cpu``
    when given) send ``plan``; every request's outcome, merged and summarised."""
    if plan.total > len(checks):
        raise ValueError(f"{plan.total} requests but {len(checks)} checks")
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    try:
        for s in range(senders):
            mine = list(range(s, plan.connections, senders))
            parent, child = context.Pipe()
            process = context.Process(
                target=_sender_main, args=(plan, checks, mine, cpu, child), daemon=True
            )
            process.start()
            child.close()
            pipes.append(parent)
            processes.append(process)
        for pipe, process in zip(pipes, processes, strict=True):
            kind, detail = _receive(pipe, process)
            if kind != "ready":
                raise RuntimeError(f"sender failed: {detail}")
        start = time.monotonic() + 0.5  # CLOCK_MONOTONIC is one clock for every process
        for pipe in pipes:
            pipe.send(start)
        parts = []
        for pipe, process in zip(pipes, processes, strict=True):
            kind, detail = _receive(pipe, process)
            if kind != "done":
                raise RuntimeError(f"sender failed: {detail}")
            parts.append(detail)
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
    return summarise(plan, start, parts)


def _receive(pipe: Any, process: Any) -> tuple[str, Any]:
    """The sender's next message; an error if it exits without one."""
    while not pipe.poll(1.0):
        if not process.is_alive():
            return "error", f"sender process exited with status {process.exitcode}"
    try:
        kind, detail = pipe.recv()
    except EOFError:
        return "error", "sender process closed its pipe"
    return kind, detail


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values.sort()
    n = len(values)
    pick = {"p50": 0.5, "p99": 0.99, "p99.9": 0.999}
    out = {k: round(values[min(n - 1, int(q * n))] * 1000, 3) for k, q in pick.items()}
    out["max"] = round(values[-1] * 1000, 3)
    return out


def summarise(plan: SenderPlan, start: float, parts: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {"mica": 0, "mica_mismatch": 0, "too_busy_3004": 0, "other_result": 0,
              "late": 0, "never": 0}
    within: list[float] = []
    late: list[float] = []
    queued: list[float] = []
    handed_slip: list[float] = []
    for part in parts:
        indices = array("Q")
        indices.frombytes(part["indices"])
        latency = array("d")
        latency.frombytes(part["latency"])
        outcome = array("B")
        outcome.frombytes(part["outcome"])
        for i in indices:
            code = outcome[i]
            if not code:
                counts["never"] += 1
                continue
            seconds = latency[i]
            if seconds > plan.timeout:
                counts["late"] += 1
                late.append(seconds)
                continue
            within.append(seconds)
            counts[("", "mica", "mica_mismatch", "too_busy_3004", "other_result")[code]] += 1
        for name, into in (("slip_queued", queued), ("slip_handed", handed_slip)):
            values = array("d")
            values.frombytes(part[name])
            into.extend(values)
    handed = sum(part["handed"] for part in parts)
    last_handed = max(part["last_handed"] for part in parts)
    span = last_handed - start
    answered_in_time = counts["mica"] + counts["too_busy_3004"]
    return {
        "requests": plan.total,
        "scheduled_rate": round(plan.rate),
        "connections": plan.connections,
        "sent": handed,
        # what reached the gateway's socket per second of the schedule's span
        "achieved_offered_rate": round(handed / span) if span > 0 else None,
        "schedule_slip_ms": {"queued": _percentiles(queued), "handed": _percentiles(handed_slip)},
        **counts,
        "answered_within_timeout": answered_in_time + counts["mica_mismatch"] + counts["other_result"],
        "every_request_answered_mica_or_3004": answered_in_time == plan.total,
        "latency_within_timeout_ms": _percentiles(within),
        "late_ms": _percentiles(late),
        "duplicates": sum(part["duplicates"] for part in parts),
        "unexpected_answers": sum(part["unexpected"] for part in parts),
        "max_unsent_octets": max(part["max_unsent_octets"] for part in parts),
        "connections_closed_by_gateway": sum(part["closed_by_gateway"] for part in parts),
        "start": start,
        "last_due": start + (plan.total - 1) / plan.rate,
    }
