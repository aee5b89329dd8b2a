"""The asyncio transport for one-to-one SCTP sockets (RFC 6733 §2.1.1), on any event loop.

Why not ``loop.create_server(sock=...)`` / ``create_connection(sock=...)``: uvloop wraps the
socket in a libuv TCP handle, which sets TCP_NODELAY on it; an SCTP socket refuses that
(ENOPROTOOPT), and libuv closes it just after the handshake without a word. This transport only
uses ``add_reader`` / ``add_writer``, which every loop has, so asyncio and uvloop behave alike.

Each Diameter message goes out as one SCTP user message (one ``send``): peers such as
Erlang/OTP's ``diameter_sctp`` take every SCTP message for exactly one Diameter message, so the
bytes the peer core writes (several messages at once) are cut at the Diameter header's Message
Length. Reads take every message the socket has queued and hand them over in one
``data_received``; SCTP notifications (none are subscribed) would never be taken for data.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from diameter.transport.listener import Listener

log = logging.getLogger(__name__)

MSG_NOTIFICATION = 0x8000  # <linux/sctp.h>: an SCTP event, not data
_LINGER_ABORT = struct.pack("ii", 1, 0)  # close() then sends ABORT (RFC 4960 §9.1)
_MAX_READ = 256 * 1024
_READS_PER_WAKEUP = 64
_HEADER = 20  # RFC 6733 §3: the Diameter header; Message Length is its bytes 1-3


class SctpTransport(asyncio.Transport):
    """A stream transport over a connected non-blocking one-to-one SCTP socket."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        super().__init__(
            {"socket": sock, "sockname": _name(sock.getsockname), "peername": _name(sock.getpeername)}
        )
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending = bytearray()  # the start of a message not yet whole
        self._queue: collections.deque[memoryview] = collections.deque()  # whole messages
        self._queued = 0
        self._high, self._low = 64 * 1024, 16 * 1024
        self._closing = False
        self._lost = False
        self._reading = True
        self._writing_paused = False
        loop.call_soon(self._start)

    def __repr__(self) -> str:
        return f"<SctpTransport fd={self._fd} peer={self.get_extra_info('peername')}>"

    def _start(self) -> None:
        self._protocol.connection_made(self)
        if self._reading and not self._closing:
            self._loop.add_reader(self._fd, self._read_ready)

    # -- reading --------------------------------------------------------------------------------
    def _read_ready(self) -> None:
        chunks: list[bytes] = []
        error: OSError | None = None
        eof = False
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, _, flags, _ = self._sock.recvmsg(_MAX_READ)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                error = exc
                break
            if not data and not flags & MSG_NOTIFICATION:
                eof = True  # SHUTDOWN from the peer (RFC 4960 §9.2)
                break
            if not flags & MSG_NOTIFICATION:
                chunks.append(data)
        if chunks:
            self._protocol.data_received(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        if error is not None:
            self._force_close(error)
        elif eof and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._fd)
            if not self._protocol.eof_received():
                self.close()

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # -- writing --------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        pending = self._pending
        pending += data
        start = 0
        end = len(pending)
        view = memoryview(pending)
        messages = []
        while end - start >= 4:
            length = int.from_bytes(view[start + 1 : start + 4], "big")
            if length < _HEADER:
                view.release()
                self._force_close(ValueError(f"not a Diameter message (length {length})"))
                return
            if end - start < length:
                break
            messages.append(bytes(view[start : start + length]))
            start += length
        view.release()
        del pending[:start]
        for message in messages:
            self._queue.append(memoryview(message))
            self._queued += len(message)
        if messages and len(self._queue) == len(messages):  # nothing was waiting: send now
            self._send_queued()
            if self._queue:
                self._loop.add_writer(self._fd, self._write_ready)
        self._maybe_pause_protocol()

    def _send_queued(self) -> None:
        """Send whole messages while the socket takes them; raises nothing."""
        queue = self._queue
        while queue:
            message = queue[0]
            try:
                sent = self._sock.send(message)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._force_close(exc)
                return
            # One send is one SCTP message, taken whole or not at all; a short count is kept
            # rather than lost.
            self._queued -= sent
            if sent == len(message):
                queue.popleft()
            else:
                queue[0] = message[sent:]

    def _write_ready(self) -> None:
        self._send_queued()
        if self._queue or self._lost:
            return
        self._loop.remove_writer(self._fd)
        self._maybe_resume_protocol()
        if self._closing:
            self._loop.call_soon(self._connection_lost, None)

    def get_write_buffer_size(self) -> int:
        return self._queued + len(self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._writing_paused and self.get_write_buffer_size() > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return False

    # -- closing --------------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading, send what is queued, then close (SHUTDOWN, RFC 4960 §9.2)."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._queue:
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        """Drop what is queued and ABORT the association."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._fd)
        self._queue.clear()
        self._queued = 0
        self._loop.remove_writer(self._fd)
        if exc is None or isinstance(exc, OSError):
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            except OSError:
                pass  # the association is already gone
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc if isinstance(exc, Exception) else None)
        finally:
            self._sock.close()


def _name(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except OSError:
        return None


class SctpListener(Listener):
    """Accepts associations on a listening one-to-one SCTP socket; each gets a ``SctpTransport``
    and a protocol from ``protocol_factory``."""

    what = "an association"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        addresses: tuple[str, ...],
    ) -> None:
        self._factory = protocol_factory
        self.addresses = addresses
        super().__init__(loop, sock, f"SCTP {addresses}")

    def accepted(self, conn: socket.socket, address: Any) -> None:
        try:
            protocol = self._factory()
        except Exception:
            log.exception("SCTP listener %s: association from %s dropped", self.addresses,
                          address)
            conn.close()
            return
        SctpTransport(self._loop, conn, protocol)
