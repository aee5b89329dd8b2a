"""The provisioning API's request head timeout: a connection that has not sent a whole request
head (request line and header fields) within ``timeout`` seconds of connecting, or of its last
response, is closed. A client sending a head a byte at a time (slowloris) otherwise held its
connection, and the file descriptor, for as long as it liked (aiohttp has no such timeout).

aiohttp parses heads itself and says nothing until one is whole. What it does show is when a
request's handler starts (the head was whole) and ends: :meth:`HeadTimeout.middleware` keeps
count. The rest of the time a connection is waiting for a head, and :meth:`HeadTimeout.sweep`,
called about once a second, closes those that waited too long; a response still being written
(bytes left in the transport's buffer) counts as not waiting yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

log = logging.getLogger("eir.api")

SWEEP_SECONDS = 1.0  # how often sweep() is called: the timeout's resolution


class HeadTimeout:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # 0: never
        self.closed = 0  # connections closed for it
        self._busy: dict[object, int] = {}  # transport -> requests being handled on it
        self._waiting_since: dict[object, float] = {}  # transport -> when it began waiting

    @web.middleware
    async def middleware(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is None:  # the client went away meanwhile
            return await handler(request)
        busy = self._busy
        busy[transport] = busy.get(transport, 0) + 1
        try:
            return await handler(request)
        finally:
            left = busy[transport] - 1
            if left:
                busy[transport] = left
            else:
                del busy[transport]
            self._waiting_since[transport] = asyncio.get_running_loop().time()

    def sweep(self, connections: Iterable[web.RequestHandler], now: float) -> int:
        """Close the connections that waited for a request head past the timeout (``now``: the
        loop's clock; a connection first seen here began waiting now); how many."""
        waiting_since = self._waiting_since
        seen: dict[object, float] = {}
        closed = 0
        for connection in connections:
            transport = connection.transport
            if transport is None or transport.is_closing():
                continue
            since = waiting_since.get(transport, now)
            if transport in self._busy or transport.get_write_buffer_size():
                since = now
            elif self.timeout and now - since >= self.timeout:
                closed += 1
                connection.force_close()
                continue
            seen[transport] = since
        self._waiting_since = seen  # the connections gone are forgotten
        if closed:
            self.closed += closed
            # One line a sweep, however many: a slowloris flood must not flood the log.
            log.info("API: %d connection(s) closed: no whole request head within %g s",
                     closed, self.timeout)
        return closed
