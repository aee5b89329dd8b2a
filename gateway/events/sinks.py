"""Where decision events go: syslog over UDP (RFC 5426, asyncio-dgram), syslog over TCP or TLS
with octet counting (RFC 6587, RFC 5425), and HTTP webhooks (JSON, HMAC-SHA256 signed, retried
with backoff, each attempt bounded by a timeout). ``deliver`` raises :class:`DeliveryFailed`
when an event could not be delivered; the bus counts it and goes on with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import ssl
import time
from dataclasses import dataclass

import aiohttp
import asyncio_dgram

from gateway.events.model import DecisionEvent
from gateway.events.syslog import SyslogFormatter, octet_counted

CONNECT_TIMEOUT = 5.0
SIGNATURE_HEADER = "X-EIR-Signature"  # "sha256=" + hex HMAC-SHA256(secret, timestamp "." body)
TIMESTAMP_HEADER = "X-EIR-Timestamp"  # Unix seconds, signed with the body (replay window)


class DeliveryFailed(Exception):
    """An event that could not be delivered (after the sink's retries)."""


@dataclass(slots=True)
class SinkStats:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0  # the sink's queue was full
    retries: int = 0


class UdpSyslog:
    """RFC 5426: one RFC 5424 message per datagram."""

    def __init__(self, host: str, port: int, formatter: SyslogFormatter) -> None:
        self.name = "syslog"
        self.address = (host, port)
        self.formatter = formatter
        self.stats = SinkStats()
        self._stream: asyncio_dgram.aio.DatagramClient | None = None

    async def deliver(self, event: DecisionEvent) -> None:
        try:
            if self._stream is None:
                self._stream = await asyncio_dgram.connect(self.address)
            await self._stream.send(self.formatter.format(event))
        except OSError as exc:  # an ICMP port unreachable shows on the next send
            await self.close()
            raise DeliveryFailed(f"udp {self.address}: {exc}") from None

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class StreamSyslog:
    """RFC 6587 octet counting over TCP, or over TLS (RFC 5425). One connection, opened again
    after a failure, or when the receiver closed it (seen as EOF before writing: a write into a
    connection the receiver already closed would succeed and the event be lost); an event that
    failed to be written is tried once more on a new one. With TLS the receiver's certificate
    is verified against ``ssl_context``'s CAs and the host name (RFC 5425 §5.2)."""

    def __init__(
        self, host: str, port: int, formatter: SyslogFormatter,
        ssl_context: ssl.SSLContext | None = None, timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.name = "syslog"
        self.host, self.port = host, port
        self.formatter = formatter
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.stats = SinkStats()
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    async def _send(self, frame: bytes) -> None:
        reader, writer = self._reader, self._writer
        if reader is not None and writer is not None and (
            reader.at_eof() or reader.exception() is not None or writer.is_closing()
        ):
            await self.close()  # the receiver closed or reset it (restart, idle timeout)
        writer = self._writer
        if writer is None:
            async with asyncio.timeout(self.timeout):
                self._reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl_context)
            self._writer = writer
        assert writer is not None
        writer.write(frame)
        async with asyncio.timeout(self.timeout):
            await writer.drain()

    async def deliver(self, event: DecisionEvent) -> None:
        frame = octet_counted(self.formatter.format(event))
        for attempt in (1, 2):
            try:
                await self._send(frame)
                return
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                await self.close()
                if attempt == 2:
                    raise DeliveryFailed(f"{self.host}:{self.port}: {exc or type(exc).__name__}"
                                         ) from None
                self.stats.retries += 1

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The value of X-EIR-Signature: HMAC-SHA256 over ``timestamp + "." + body``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Webhook:
    """POST each event as JSON. Retried (``retries`` more attempts, jittered exponential backoff
    from ``backoff`` seconds, ``Retry-After`` honoured up to 60 s) on a connection error, a
    timeout, 429 or 5xx; any other status is a failure at once (the receiver refused it)."""

    def __init__(
        self, url: str, secret: str, mask_imsi: bool = True, timeout: float = 5.0,
        retries: int = 3, backoff: float = 0.5,
    ) -> None:
        self.name = "webhook"
        self.url = url
        self.secret = secret.encode()
        self.mask_imsi = mask_imsi
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = retries
        self.backoff = backoff
        self.stats = SinkStats()
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, event: DecisionEvent) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = json.dumps(event.as_json(self.mask_imsi), separators=(",", ":")).encode()
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
                       SIGNATURE_HEADER: signature(self.secret, timestamp, body)}
            delay = self.backoff * 2**attempt * random.uniform(0.5, 1.5)
            try:
                async with self._session.post(self.url, data=body, headers=headers) as r:
                    if 200 <= r.status < 300:
                        return
                    problem = f"HTTP {r.status}"
                    if r.status != 429 and r.status < 500:
                        break
                    after = r.headers.get("Retry-After", "")
                    if after.isdigit():
                        delay = min(float(after), 60.0)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt < self.retries:
                await asyncio.sleep(delay)
        raise DeliveryFailed(f"{self.url}: {problem}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
