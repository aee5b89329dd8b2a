"""A PostgreSQL connection pool behind a blocking interface.

asyncpg is asynchronous; the stores it serves (lists, TAC, observations) are called from
threads (CLI, the provisioning service, reloads via ``asyncio.to_thread``), exactly as their
SQLite versions. So the pool lives on an event loop of its own, in a thread of its own, and
:meth:`Database.run` hands a coroutine to it and waits for the result. The gateway's event loop
never waits on PostgreSQL: it only calls these from threads, and reads the in-memory snapshots.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway import state
from gateway.pg.schema import SCHEMA, SCHEMA_LOCK

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0  # seconds


class StateError(state.StateError):
    """PostgreSQL unreachable, or a statement it refused; the message names the database."""


def redacted(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """``Database(dsn)`` connects (creating the schema on first use); ``run`` executes a
    coroutine function with the pool; ``close()`` once."""

    def __init__(self, dsn: str, max_connections: int = 4) -> None:
        self.dsn = dsn
        self.name = redacted(dsn)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="postgresql", daemon=True
        )
        self._thread.start()
        self._pool: asyncpg.Pool | None = None
        try:
            self._pool = self.call(self._connect(max_connections))
        except BaseException:
            self._stop_loop()
            raise

    async def _connect(self, max_connections: int) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=max_connections, timeout=CONNECT_TIMEOUT,
            command_timeout=None,
        )
        assert pool is not None
        async with pool.acquire() as conn, conn.transaction():
            # Two processes starting on a new database at once: one creates, the other waits.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await conn.execute(SCHEMA)
        return pool

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None
        return self._pool

    def call(self, coroutine: Awaitable[T]) -> T:
        """Run ``coroutine`` on the pool's loop and wait for it; database and connection errors
        become :class:`StateError`."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(
            _checked(coroutine, self.name), self._loop
        )
        return future.result()

    def run(self, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``body(connection)`` with a connection of the pool, in a transaction."""

        async def with_connection() -> T:
            async with self.pool.acquire() as conn, conn.transaction():
                return await body(conn)

        return self.call(with_connection())

    def session(self) -> Session:
        """One connection and transaction held across several calls from the calling thread
        (a bulk import: the file is parsed here, chunks are copied there)."""
        return Session(self)

    def submit(self, coroutine: Awaitable[Any]) -> Future[Any]:
        """Start ``coroutine`` on the pool's loop without waiting (LISTEN, background work)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                asyncio.run_coroutine_threadsafe(pool.close(), self._loop).result(10)
            except Exception:
                pool.terminate()
        self._stop_loop()

    def _stop_loop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


async def _checked(coroutine: Awaitable[T], name: str) -> T:
    try:
        return await coroutine
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StateError(f"{name}: {exc}") from exc
    except (TimeoutError, OSError) as exc:
        raise StateError(f"{name}: cannot connect: {exc}") from exc


class Session:
    """``with db.session() as s: s.call(lambda conn: ...)``: commits when the block ends,
    rolls back when it raises; the connection goes back to the pool either way."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: asyncpg.Connection | None = None
        self._transaction: Any = None

    def __enter__(self) -> Session:
        async def begin() -> asyncpg.Connection:
            conn = await self._db.pool.acquire()
            try:
                self._transaction = conn.transaction()
                await self._transaction.start()
            except BaseException:
                await self._db.pool.release(conn)
                raise
            return conn

        self._conn = self._db.call(begin())
        return self

    def call(self, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        assert self._conn is not None
        return self._db.call(body(self._conn))

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        conn, transaction = self._conn, self._transaction
        assert conn is not None

        async def end() -> None:
            try:
                if kind is None:
                    await transaction.commit()
                else:
                    await transaction.rollback()
            finally:
                await self._db.pool.release(conn)

        self._conn = None
        if kind is None:
            self._db.call(end())
        else:
            try:
                self._db.call(end())
            except StateError:
                pass  # the error being raised says more than a failed rollback
