"""One connection to a standalone Redis (or Valkey) speaking RESP2 (:mod:`gateway.resp`).

A thin asyncio adapter: :meth:`RedisConnection.request` writes bytes holding ``count``
pipelined commands and returns one future of their replies, in order (Redis answers a
connection's commands in the order sent). No command objects, no per-reply future: the shared
clone count sends one EVALSHA per event loop tick through it and reads an array of integers.

The connection is opened by :func:`open_connection` from a ``redis://``, ``rediss://`` (TLS,
verified against the system's CAs) or ``unix://`` URL with redis-py's meaning: user and
password in the URL's user part (AUTH), the database as the path (``/1``) or ``?db=1`` (SELECT).
:meth:`RedisConnection.request_then` calls back from :meth:`~RedisConnection.data_received`
instead (no future, no event loop callback: the clone count's round trip of every tick).
A lost connection fails every waiting request with :class:`ConnectionError`; the caller opens a
new one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast
from urllib.parse import parse_qs, unquote, urlsplit

from gateway.resp import ProtocolError, Reply, RespError, RespReader, command

log = logging.getLogger("eir.shared")

# Called once with a request's replies, or with why there are none (the connection failed).
Replied = Callable[[list[Reply] | BaseException], object]


class Rider(Protocol):
    """Commands that go to Redis with another's round trip (the observation stream's appends
    with the shared clone count's EVALSHA: one write, one read, one wake a tick)."""

    def carried(self) -> tuple[bytes, int, Replied] | None:
        """The commands to write now (``count`` of them in ``payload``) and what to call with
        their replies or the round trip's failure; None when there are none."""

    def uncarried(self) -> None:
        """The round trip asked for will not be made (the carrier is not in its steady
        state): send what is waiting another way."""


class RedisConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = RespReader()
        # (replies expected, replies so far, what to call with them)
        self._waiting: deque[tuple[int, list[Reply], Replied]] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._reader.feed(data)
        except ProtocolError as exc:
            self._fail(ConnectionError(f"Redis sent what is not RESP2: {exc}"))
            return
        waiting = self._waiting
        for reply in replies:
            if not waiting:
                self._fail(ConnectionError("Redis sent a reply nobody asked for"))
                return
            expected, got, replied = waiting[0]
            got.append(reply)
            if len(got) == expected:
                waiting.popleft()
                _call(replied, got)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(ConnectionError(f"Redis closed the connection{f': {exc}' if exc else ''}"))

    # -- requests ------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._lost is None

    def request(self, payload: bytes, count: int = 1) -> asyncio.Future[list[Reply]]:
        """The replies to the ``count`` commands in ``payload``, once all arrived."""
        future: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()

        def replied(result: list[Reply] | BaseException) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.request_then(payload, count, replied)
        return future

    def request_then(self, payload: bytes, count: int, replied: Replied) -> None:
        """``replied(replies)`` once the replies to the ``count`` commands in ``payload`` all
        arrived, called from :meth:`data_received` (no future, no event loop callback: the
        shared clone count's round trip each tick); ``replied(exc)`` if the connection fails
        first (at once if it is closed)."""
        if self._lost is not None or self._transport is None:
            _call(replied, ConnectionError("the Redis connection is closed"))
            return
        self._waiting.append((count, [], replied))
        self._transport.write(payload)

    async def call(self, *args: bytes | str | int | float) -> Reply:
        """One command's reply; an error reply is raised as :class:`RespError`."""
        reply = (await self.request(command(*args)))[0]
        if isinstance(reply, RespError):
            raise reply
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionError("the Redis connection is closed"))

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        if self._transport is not None:
            self._transport.abort()
        waiting = self._waiting
        while waiting:
            _call(waiting.popleft()[2], exc)


def _call(replied: Replied, result: list[Reply] | BaseException) -> None:
    try:
        replied(result)
    except Exception:  # the caller's failure must not break the connection's reading
        log.exception("a Redis reply's callback failed")


async def open_connection(url: str) -> RedisConnection:
    """A connection to the Redis of ``url``, authenticated and on its database (not bounded in
    time: the caller bounds the whole round trip)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    loop = asyncio.get_running_loop()
    if parts.scheme == "unix":
        _, protocol = await loop.create_unix_connection(RedisConnection, unquote(parts.path))
        database = query.get("db", ["0"])[0]
    elif parts.scheme in ("redis", "rediss"):
        context = ssl.create_default_context() if parts.scheme == "rediss" else None
        _, protocol = await loop.create_connection(
            RedisConnection, parts.hostname or "localhost", parts.port or 6379, ssl=context
        )
        path = parts.path.strip("/")
        database = path or query.get("db", ["0"])[0]
    else:
        raise ValueError(f"not a redis://, rediss:// or unix:// URL: {parts.scheme}://")
    try:
        if parts.password is not None:  # as redis-py: no password, no AUTH
            if parts.username:
                await protocol.call("AUTH", unquote(parts.username), unquote(parts.password))
            else:
                await protocol.call("AUTH", unquote(parts.password))
        if int(database):
            await protocol.call("SELECT", int(database))
    except BaseException:
        protocol.close()
        raise
    return protocol


__all__ = ["RedisConnection", "Replied", "RespError", "Rider", "open_connection"]
