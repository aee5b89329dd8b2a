"""The observation writer process: ``python -m gateway.observation_writer FD DATABASE`` (an
SQLite file) or ``FD --postgresql`` (the DSN in ``EIR_OBSERVATIONS_DSN``, gateway.pg.observations).

Spawned by the gateway (gateway.observation_process), it owns the observation log's store
and its own interpreter, so its database and Python work never holds the gateway's GIL. With
``EIR_OBSERVATIONS_STREAM`` set it also drains the Redis observation stream into the store, in
a thread (gateway.stream_drain), reporting each batch with a DRAINED message. It
reads the gateway's messages (gateway.observation_wire) from the Unix SEQPACKET socket ``FD``
and handles them in order: the PAIRS messages that arrived back to back are upserted in one
transaction (random (IMEI, IMSI) keys dirty about one B-tree page per pair, shared by the pairs
of a transaction, so a backlog is written for less per pair), acknowledged by one WRITTEN;
a LOOKUPS is answered by a FOUND once every write sent before it is done.

It ignores SIGINT, SIGTERM and SIGHUP (a terminal or systemd signals the whole group; the
gateway decides when the log ends): it stops when the gateway closes the socket (at close, or
when the gateway dies), after writing what it has read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gateway import observation_wire as wire
from gateway.observations import LastImsi, SqliteObservations, yield_cpu_to_event_loop
from gateway.stream_drain import DRAIN_VARIABLE, DrainSettings, StreamDrain

# PAIRS messages merged into one transaction at most: 16,000 pairs, as the writer thread does
# (MERGE_AGGREGATES of 1,000 pairs each).
MERGE_MESSAGES = 16_000 // wire.SLICE_PAIRS
# Receive buffer: a message larger than this (only a PAIRS message of a single pair with a
# User-Name of megabytes could be) arrives truncated and is refused as a failed write.
RECEIVE_BUFFER = 8 << 20
# Seconds the stream's drain may take to finish its batch once the gateway closed the socket.
DRAIN_STOP_TIMEOUT = 30.0


class Store(Protocol):
    """SqliteObservations or gateway.pg.observations.PgObservations."""

    errors: tuple[type[Exception], ...]  # what a refused call raises

    def upsert(self, rows: Iterable[wire.PairRow]) -> None: ...
    def last_seen_with(self, imei: str, before: float) -> LastImsi: ...
    def close(self) -> None: ...


class Writer:
    """Messages in, store calls and answers out (the socket loop is :func:`serve`); each
    store call under ``lock``, which the stream's drain thread shares."""

    def __init__(self, store: Store, lock: threading.Lock | None = None) -> None:
        self.store = store
        self.lock = lock or threading.Lock()

    def handle(self, messages: list[bytes]) -> list[bytes]:
        """Answers to ``messages`` (received in this order)."""
        answers: list[bytes] = []
        run: list[bytes] = []
        for message in messages:
            if message[:1] == bytes((wire.PAIRS,)) and len(run) < MERGE_MESSAGES:
                run.append(message)
                continue
            if run:
                answers.append(self.write(run))
                run = []
            if message[:1] == bytes((wire.PAIRS,)):
                run.append(message)
            else:
                answers.append(self.answer(message))
        if run:
            answers.append(self.write(run))
        return answers

    def write(self, messages: list[bytes]) -> bytes:
        """One transaction for the pairs of ``messages``; a message that does not decode
        fails the transaction (the gateway counts the error)."""
        refused: tuple[type[Exception], ...] = (wire.WireError, *self.store.errors)
        try:
            rows = [row for message in messages for row in wire.decode_pairs(message)]
            with self.lock:
                self.store.upsert(rows)
        except refused as exc:
            print(f"observation writer: {len(messages)} slices not written: {exc}",
                  file=sys.stderr)
            return wire.encode_written(len(messages), 0, False)
        return wire.encode_written(len(messages), sum(row[4] for row in rows), True)

    def answer(self, message: bytes) -> bytes:
        """FOUND for a LOOKUPS (each lookup failing alone when the store refuses it)."""
        answers: list[tuple[LastImsi, bool]] = []
        try:
            lookups = wire.decode_lookups(message)
        except wire.WireError as exc:
            print(f"observation writer: lookups not answered: {exc}", file=sys.stderr)
            return wire.encode_found([(None, True)] * wire.lookups_in(message))
        for imei, before in lookups:
            try:
                with self.lock:
                    answers.append((self.store.last_seen_with(imei, before), False))
            except self.store.errors:
                answers.append((None, True))
        return wire.encode_found(answers)


def serve(sock: socket.socket, writer: Writer) -> None:
    """Until the gateway closes the socket: read what has arrived, handle it, answer."""
    buffer = bytearray(RECEIVE_BUFFER)
    while True:
        messages: list[bytes] = []
        wait = 0  # the first receive waits; the rest take what is there (the socket stays
        # blocking: the drain thread sends on it)
        while len(messages) < MERGE_MESSAGES * 4:
            try:
                size, _, flags, _ = sock.recvmsg_into([buffer], 0, wait)
            except BlockingIOError:
                break
            if size == 0:  # the gateway closed its end
                for answer in writer.handle(messages):
                    _send(sock, answer)
                return
            message = bytes(buffer[:size])
            if flags & socket.MSG_TRUNC and message[:1] == bytes((wire.PAIRS,)):
                message = bytes((wire.PAIRS,))  # refused by write(): too large to read whole
            messages.append(message)
            wait = socket.MSG_DONTWAIT
        for answer in writer.handle(messages):
            _send(sock, answer)


def _send(sock: socket.socket, answer: bytes) -> None:
    try:
        sock.send(answer)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway is gone; what it sent is still written


def run_when_idle() -> None:
    """Linux: the SCHED_IDLE policy (sched(7)), on top of niceness 19. A normal task waking on
    a core this process holds takes it at once, whereas niceness alone left the event loop
    runnable behind the writer catching up a backlog (bench/stalls.py). This process shares
    no lock with the gateway, so waiting for idle cores cannot hold the loop. Refused or not
    Linux: niceness only."""
    yield_cpu_to_event_loop()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def open_store(argv: list[str]) -> Store:
    """``DATABASE`` (an SQLite file) or ``--postgresql``."""
    if argv[:1] == ["--postgresql"]:
        from gateway.pg.observations import open_store as open_pg_store

        return open_pg_store(argv[1:])
    return SqliteObservations(Path(argv[0]))


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    fd = int(argv[0])
    sock = socket.socket(fileno=fd)
    run_when_idle()
    try:
        store = open_store(argv[1:])
    except Exception as exc:  # whatever the store raises: told to the gateway, which fails
        _send(sock, wire.encode_failed(f"{' '.join(argv[1:])}: {exc}"))
        return 1
    lock = threading.Lock()
    drain = None
    drained = os.environ.get(DRAIN_VARIABLE)
    if drained:
        def report(observations: int, committed: bool) -> None:
            _send(sock, wire.encode_drained(observations, committed))

        try:
            drain = StreamDrain(DrainSettings.decode(drained), store, lock, report)
        except Exception as exc:  # settings that do not decode, redis-py missing
            store.close()
            _send(sock, wire.encode_failed(f"observation stream: {exc!r}"))
            return 1
    _send(sock, bytes((wire.READY,)))
    if drain is not None:
        drain.start()
    try:
        serve(sock, Writer(store, lock))
    finally:
        if drain is not None:
            drain.stop(DRAIN_STOP_TIMEOUT)
        if drain is None or not drain.running:
            store.close()
        # else a store that stopped answering holds the drain: the process ends without it,
        # its batch unacknowledged (written again by a consumer of the group)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
