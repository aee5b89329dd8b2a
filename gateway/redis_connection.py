"""One connection to a standalone Redis (or Valkey) speaking RESP2 (:mod:`gateway.resp`).

A thin asyncio adapter: :meth:`RedisConnection.request` writes bytes holding ``count``
pipelined commands and returns one future of their replies, in order (Redis answers a
connection's commands in the order sent). No command objects, no per-reply future: the shared
clone count sends one EVALSHA per event loop tick through it and reads an array of integers.

The connection is opened by :func:`open_connection` from a ``redis://``, ``rediss://`` (TLS,
verified against the system's CAs) or ``unix://`` URL with redis-py's meaning: user and
password in the URL's user part (AUTH), the database as the path (``/1``) or ``?db=1`` (SELECT).
A lost connection fails every waiting future with :class:`ConnectionError`; the caller opens a
new one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

from gateway.resp import ProtocolError, Reply, RespError, RespReader, command


class RedisConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = RespReader()
        # (replies still expected, replies so far, the future of the whole request)
        self._waiting: deque[tuple[int, list[Reply], asyncio.Future[list[Reply]]]] = deque()
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
            expected, got, future = waiting[0]
            got.append(reply)
            if len(got) == expected:
                waiting.popleft()
                if not future.done():
                    future.set_result(got)

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
        if self._lost is not None or self._transport is None:
            future.set_exception(ConnectionError("the Redis connection is closed"))
            return future
        self._waiting.append((count, [], future))
        self._transport.write(payload)
        return future

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
            future = waiting.popleft()[2]
            if not future.done():
                future.set_exception(exc)


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


__all__ = ["RedisConnection", "RespError", "open_connection"]
