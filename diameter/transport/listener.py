"""A listening socket accepted from by hand (``add_reader``), for the listeners that cannot be
an ``asyncio.Server``: SCTP (``diameter.transport.sctp``: uvloop closes SCTP sockets) and TLS
admitted before its handshake (``diameter.transport.tls_accept``). Quacks like the
``asyncio.Server`` it stands for."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

log = logging.getLogger(__name__)

ACCEPTS_PER_WAKEUP = 64  # connections taken per readiness callback before others are served
# accept() errors that mean "out of resources now": stop accepting a moment, as asyncio does.
_ACCEPT_BACKOFF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener:
    """Accepts on ``sock`` (listening); :meth:`accepted` takes each connection."""

    # What a connection is called in the log ("an association" for SCTP).
    what = "a connection"

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, name: Any) -> None:
        self._loop = loop
        self._sock = sock
        self._name = name
        self._serving = True
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._sock] if self._serving else []

    def accepted(self, conn: socket.socket, address: Any) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # The kernel completed the connection; we could not take it: the peer sees it
                # aborted. Said loudly, since nothing else will say it.
                log.error("listener %s: %s could not be accepted: %s", self._name, self.what, exc)
                if exc.errno in _ACCEPT_BACKOFF:
                    self._loop.remove_reader(self._sock.fileno())
                    self._loop.call_later(1.0, self._resume)
                return
            conn.setblocking(False)
            self.accepted(conn, address)

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def wait_closed(self) -> None:
        return None
