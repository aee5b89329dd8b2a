"""The adapter side of overload control: measures the queueing delay for ``diameter.overload``.

Every ``interval``, when octets wait, it takes the event loop's lag (how late this timer runs)
plus the octets received but not yet handled (the kernel's receive queue of each connection,
FIONREAD, plus what a connection has read and not served yet) divided by the rate octets are
handled at while the loop handles them: how long a request arriving now waits before it is
served. Connections paused because their peer does not read its answers are left out (their
wait is the peer's doing). The core gets ``update(delay, now)``, then ``apportion`` with what
each open connection offered since the last measurement (octets read plus octets waiting), for
each connection's fair share; ``lag`` stays readable for metrics. The same timer is the
process's event loop lag probe: each of ``lag_observers`` gets every lag measured (a metric),
with overload control on or off.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import termios
from collections.abc import Callable, Hashable, Iterable

from diameter.node import Node
from diameter.peer import Peer
from diameter.transport.connection import PeerConnection


def unread_octets(connection: PeerConnection) -> int:
    """Octets waiting in the kernel for this connection, plus those read and not yet handled."""
    queued = 0
    transport, peer = connection.transport, connection.peer
    if transport is not None and not transport.is_closing():
        sock = transport.get_extra_info("socket")
        if sock is not None:
            buf = array.array("i", [0])
            with contextlib.suppress(OSError, ValueError):
                fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
                queued = buf[0]
    if peer is not None:
        queued += peer.received_bytes - peer.processed_bytes
    return queued


# Handling time and octets needed before the service rate is measured again from them (a few
# messages, such as a CER, say nothing of the rate).
_MIN_BUSY = 0.005
_MIN_OCTETS = 1 << 16


class LoadSampler:
    """Every ``interval`` seconds: the event loop's lag to each of ``lag_observers``, and a
    queueing-delay measurement to ``node.overload`` when it is enabled."""

    def __init__(self, node: Node, connections: Iterable[PeerConnection], interval: float) -> None:
        self.node = node
        self.connections = connections
        self.interval = interval
        self.lag = 0.0
        self.delay = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self.rate = 0.0  # octets handled per second spent handling them (0: not measured yet)
        self._last_octets = 0
        self._last_busy = 0.0
        self.lag_observers: list[Callable[[float], None]] = []
        self._received: dict[Peer, int] = {}  # each open connection's octets read, last time

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._last_octets, self._last_busy = self.node.processed_bytes, self.node.busy_seconds
        self._schedule(loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._expected = now + self.interval
        self._handle = self._loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        node = self.node
        now = self._loop.time()
        self.lag = lag = max(0.0, now - self._expected)
        for observe in self.lag_observers:
            observe(lag)
        if not node.overload.enabled:
            self._schedule(now)
            return
        octets, busy = node.processed_bytes, node.busy_seconds
        if busy - self._last_busy >= _MIN_BUSY and octets - self._last_octets >= _MIN_OCTETS:
            # Octets handled per second of handling them: what the backlog drains at, however
            # idle the loop was (a burst after a quiet spell is not taken for an overload).
            rate = (octets - self._last_octets) / (busy - self._last_busy)
            self.rate = rate if not self.rate else 0.5 * (self.rate + rate)
            self._last_octets, self._last_busy = octets, busy
        # What each connection offered since the last measurement: octets read plus those
        # waiting (the fair shares of overload.apportion), and what waits in all.
        waiting = 0
        demands: dict[Hashable, int] = {}
        received: dict[Peer, int] = {}
        last = self._received
        for connection in self.connections:
            peer = connection.peer
            if peer is None:
                continue
            # A connection whose peer does not read its answers is paused: its wait is its own.
            unread = 0 if connection.write_paused else unread_octets(connection)
            waiting += unread
            if peer.is_open:
                got = received[peer] = peer.received_bytes
                demands[peer] = got - last.get(peer, 0) + unread
        self._received = received
        # With nothing waiting no request is delayed, however late this timer ran (the process
        # was not scheduled, a collection ran): only requests waiting make a queueing delay.
        self.delay = lag + waiting / self.rate if waiting and self.rate else (lag if waiting else 0.0)
        overload = node.overload
        overload.update(self.delay, now)
        # What the node handles in an interval at the measured rate (a tenth of it is always
        # admitted, fairly shared).
        overload.apportion(demands, self.rate * self.interval)
        self._schedule(now)
