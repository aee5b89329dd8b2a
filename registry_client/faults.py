"""Fault injection for the reference registry: the ways a remote registry misbehaves.

``RegistryServer(registry, faults=FaultInjector())`` serves as usual while ``faults.mode`` is
``Fault.OK``; any other mode changes how every request is answered, so tests and benchmarks can
drive a real client over loopback through outages.

The injector also counts what the registry saw: requests per mode, their arrival times
(``time.monotonic()``, comparable across processes on one host) and the most requests it was
serving at once (``max_concurrent``). Nothing here is used by the gateway itself.
"""

from __future__ import annotations

import asyncio
import enum
import json
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Fault(enum.StrEnum):
    OK = "ok"
    SLOW = "slow"  # answers right after ``delay`` seconds
    SERVER_ERROR = "server_error"  # ``error_status`` (default 503) problem+json
    THROTTLED = "throttled"  # 429 with ``Retry-After``; ok after ``throttle_times`` of them
    RESET = "reset"  # TCP RST instead of an answer
    GARBAGE = "garbage"  # bytes that are not HTTP, then close
    WRONG_TYPE = "wrong_type"  # the right JSON labelled text/html
    BAD_JSON = "bad_json"  # application/json that does not parse
    DEEP_JSON = "deep_json"  # application/json nested past the JSON reader's recursion limit
    PARTIAL_BODY = "partial_body"  # Content-Length promises more than is sent, then close
    HANG = "hang"  # accepts the request and never answers
    FLAPPING = "flapping"  # SERVER_ERROR and OK in turns of ``flap_period`` seconds


class FaultInjector:
    """An aiohttp middleware whose ``mode`` can be changed at any time."""

    def __init__(self, history: int = 100_000) -> None:
        self.mode = Fault.OK
        self.delay = 1.0
        self.error_status = 503
        self.retry_after = "1"
        self.throttle_times: int | None = None  # None: throttle every request
        self.flap_period = 0.1
        self.hits: Counter[str] = Counter()  # requests received per mode
        self.arrivals: deque[float] = deque(maxlen=history)  # time.monotonic() of each request
        self.concurrent = 0
        self.max_concurrent = 0
        self._mode_since = time.monotonic()

    def set_mode(self, mode: Fault | str) -> None:
        self.mode = Fault(mode)
        self._mode_since = time.monotonic()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        mode = self.mode
        self.hits[mode] += 1
        self.arrivals.append(time.monotonic())
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            return await self._answer(mode, request, handler)
        finally:
            self.concurrent -= 1

    async def _answer(self, mode: Fault, request: web.Request, handler: Handler) -> web.StreamResponse:
        if mode is Fault.FLAPPING:
            phase = int((time.monotonic() - self._mode_since) / self.flap_period)
            mode = Fault.SERVER_ERROR if phase % 2 == 0 else Fault.OK
        if mode is Fault.SLOW:
            await asyncio.sleep(self.delay)
        elif mode is Fault.SERVER_ERROR:
            return _problem(self.error_status, "injected fault")
        elif mode is Fault.THROTTLED and (
            self.throttle_times is None or self.hits[mode] <= self.throttle_times
        ):
            return _problem(429, "injected fault", {"Retry-After": self.retry_after})
        elif mode is Fault.RESET:
            # SO_LINGER 0: close() sends RST (connection reset by peer)
            sock = _socket(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return await _drop(request)
        elif mode is Fault.GARBAGE:
            _transport(request).write(b"\x16\x03\x01\x00\xffnot http at all\r\n\r\n")
            return await _drop(request)
        elif mode is Fault.BAD_JSON:
            return web.Response(text='{"imei": "3520', content_type="application/json")
        elif mode is Fault.DEEP_JSON:
            return web.Response(text='{"results": ' + "[" * 100_000, content_type="application/json")
        elif mode is Fault.HANG:
            # Until the client gives up (the handler is cancelled then) or the server stops.
            await asyncio.Event().wait()
        response = await handler(request)
        if mode is Fault.WRONG_TYPE and isinstance(response, web.Response):
            return web.Response(status=response.status, body=response.body, content_type="text/html")
        if mode is Fault.PARTIAL_BODY and isinstance(response, web.Response):
            body = response.body
            assert isinstance(body, bytes)
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            _transport(request).write(head + body[: len(body) // 2])
            return await _drop(request)
        return response


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "about:blank", "title": "injected", "status": status, "detail": detail}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def _transport(request: web.Request) -> asyncio.Transport:
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    return transport


def _socket(request: web.Request) -> socket.socket:
    sock: socket.socket = _transport(request).get_extra_info("socket")
    return sock


async def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without (the rest of) an answer."""
    _transport(request).abort()
    # The handler must still return; with the transport gone aiohttp writes nothing.
    raise asyncio.CancelledError
