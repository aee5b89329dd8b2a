"""The observation writer process: ``python -m gateway.observation_writer FD DATABASE``.

Spawned by the gateway (gateway.observation_process), it owns the observation log's SQLite
file and its own interpreter, so its SQLite and Python work never holds the gateway's GIL. It
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
import sqlite3
import sys
from pathlib import Path

from gateway import observation_wire as wire
from gateway.observations import LastImsi, SqliteObservations, yield_cpu_to_event_loop

# PAIRS messages merged into one transaction at most: 16,000 pairs, as the writer thread does
# (MERGE_AGGREGATES of 1,000 pairs each).
MERGE_MESSAGES = 16_000 // wire.SLICE_PAIRS
# Receive buffer: a message larger than this (only a PAIRS message of a single pair with a
# User-Name of megabytes could be) arrives truncated and is refused as a failed write.
RECEIVE_BUFFER = 8 << 20


class Writer:
    """Messages in, store calls and answers out (the socket loop is :func:`serve`)."""

    def __init__(self, store: SqliteObservations) -> None:
        self.store = store

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
        try:
            rows = [row for message in messages for row in wire.decode_pairs(message)]
            self.store.upsert(rows)
        except (wire.WireError, sqlite3.Error) as exc:
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
                answers.append((self.store.last_seen_with(imei, before), False))
            except sqlite3.Error:
                answers.append((None, True))
        return wire.encode_found(answers)


def serve(sock: socket.socket, writer: Writer) -> None:
    """Until the gateway closes the socket: read what has arrived, handle it, answer."""
    buffer = bytearray(RECEIVE_BUFFER)
    while True:
        messages: list[bytes] = []
        sock.setblocking(True)
        while len(messages) < MERGE_MESSAGES * 4:
            try:
                size, _, flags, _ = sock.recvmsg_into([buffer])
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
            sock.setblocking(False)  # then take what else is waiting, without waiting
        sock.setblocking(True)
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


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    fd, database = int(argv[0]), Path(argv[1])
    sock = socket.socket(fileno=fd)
    run_when_idle()
    try:
        store = SqliteObservations(database)
    except (sqlite3.Error, OSError) as exc:
        _send(sock, wire.encode_failed(f"{database}: {exc}"))
        return 1
    _send(sock, bytes((wire.READY,)))
    try:
        serve(sock, Writer(store))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
