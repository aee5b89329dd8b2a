"""The RESP connection (gateway/redis_connection.py) against a real redis-server on a free
loopback port: URLs with a password, database and Unix socket, pipelining, lost connections,
on asyncio's loop and on uvloop (the gateway's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gateway.redis_connection import RespError, open_connection
from gateway.resp import command
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]


def run_on_both_loops(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())
    uvloop = pytest.importorskip("uvloop", reason="the gateway's loop is uvloop where installed")
    uvloop.run(test())


def test_pipelined_commands_answer_in_order_an_error_among_them(
    redis_server: RedisServer,
) -> None:
    async def test() -> None:
        connection = await open_connection(redis_server.url)
        payload = command("SET", "k", "v") + command("INCR", "k") + command("GET", "k")
        replies = await connection.request(payload, 3)
        assert replies[0] == "OK" and replies[2] == b"v"
        assert isinstance(replies[1], RespError) and replies[1].prefix == "ERR"
        assert await connection.call("DEL", "k") == 1
        connection.close()
        assert not connection.is_open
        with pytest.raises(ConnectionError):
            await connection.call("PING")

    run_on_both_loops(test)


def test_password_and_database_from_the_url(redis_server: RedisServer) -> None:
    redis_server.extra = ["--requirepass", "s3cr:et"]
    redis_server.stop()
    redis_server.start()
    base = f"127.0.0.1:{redis_server.port}"

    async def test() -> None:
        for url in (f"redis://:s3cr%3Aet@{base}/2", f"redis://default:s3cr%3Aet@{base}?db=2"):
            connection = await open_connection(url)
            assert await connection.call("SET", "in-two", "1") == "OK"
            info = await connection.call("CLIENT", "INFO")
            assert isinstance(info, bytes) and b" db=2 " in info
            connection.close()
        with pytest.raises(RespError, match=r"WRONGPASS|invalid password"):
            await open_connection(f"redis://:wrong@{base}/0")
        with pytest.raises(RespError, match="NOAUTH"):
            await (await open_connection(f"redis://{base}/0")).call("GET", "in-two")

    run_on_both_loops(test)


def test_a_unix_socket(redis_server: RedisServer, tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    redis_server.extra = ["--unixsocket", str(path)]
    redis_server.stop()
    redis_server.start()

    async def test() -> None:
        connection = await open_connection(f"unix://{path}?db=3")
        assert await connection.call("PING") == "PONG"
        info = await connection.call("CLIENT", "INFO")
        assert isinstance(info, bytes) and b" db=3 " in info
        connection.close()

    run_on_both_loops(test)


def test_a_lost_connection_fails_what_waits(redis_server: RedisServer) -> None:
    async def test() -> None:
        connection = await open_connection(redis_server.url)
        # BLPOP on an empty list waits; the server going away must end the wait, not hang it.
        waiting = connection.request(command("BLPOP", "nothing", 0))
        await asyncio.sleep(0.05)
        redis_server.stop()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiting, 10)
        assert not connection.is_open
        redis_server.start()

    run_on_both_loops(test)


def test_request_then_calls_back_from_the_reply_a_failing_callback_harms_nothing(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """The steady state's round trip: the callback gets the replies inside data_received (no
    future); one that raises is logged and the replies after it still reach theirs; a
    connection that fails calls back with why, and a closed one at once."""

    async def test() -> None:
        connection = await open_connection(redis_server.url)
        got: list[object] = []
        done = asyncio.get_running_loop().create_future()

        def broken(result: object) -> None:
            raise RuntimeError("the caller's bug")

        connection.request_then(command("PING"), 1, broken)
        connection.request_then(command("ECHO", "a") + command("ECHO", "b"), 2, got.append)
        connection.request_then(command("PING"), 1, lambda r: done.set_result(r))
        assert await asyncio.wait_for(done, 10) == ["PONG"]
        assert got == [[b"a", b"b"]]
        assert any("callback failed" in r.getMessage() for r in caplog.records)
        # A reply that never comes: the close calls back with a ConnectionError.
        connection.request_then(command("BLPOP", "nothing", "0"), 1, got.append)
        connection.close()
        assert isinstance(got[-1], ConnectionError)
        connection.request_then(command("PING"), 1, got.append)
        assert isinstance(got[-1], ConnectionError) and len(got) == 3

    run_on_both_loops(test)
