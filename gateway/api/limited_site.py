"""The provisioning API's listener, with a connection limit decided at accept.

aiohttp takes every connection it is offered, and the gateway serves S13 and N5g-eir from the
same process: a client opening connections without end would take the process's file
descriptors, and then no listener could accept an MME or an AMF. Past ``limit`` open
connections, one more gets ``503`` with ``Connection: close`` (RFC 9110 §15.6.4) and is closed,
nothing read; on TLS it is closed before its handshake (nothing can be said without one, and
the refusal costs no handshake: ``diameter.transport.tls_accept``), and a handshake under way
holds a place until it ends. Refusals are counted (``eir_api_connections_refused_total``), and
logged at most once every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from diameter.transport.refusals import RefusalLog
from diameter.transport.tls_accept import TlsListener

log = logging.getLogger("eir.api")

# What a refused client reads: the whole response, sent at once, then the connection closes.
_REFUSAL_BODY = (b'{"type":"about:blank","title":"Service Unavailable","status":503,'
                 b'"detail":"the connection limit (api.max_connections) is reached"}')
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/problem+json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    + b"Content-Length: %d\r\n\r\n" % len(_REFUSAL_BODY)
    + _REFUSAL_BODY
)
TLS_HANDSHAKE_SECONDS = 10.0  # a handshake under way holds a place this long at most


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(REFUSAL)
        transport.close()  # after the response is written; what the client sends is dropped

    def data_received(self, data: bytes) -> None:
        return None


class LimitedSite(web.BaseSite):
    """Serves ``runner`` on the listening ``sock``; ``limit`` 0: no limit."""

    __slots__ = ("_refusals", "_sock", "_tls", "limit", "refused")

    def __init__(
        self, runner: web.BaseRunner, sock: socket.socket, limit: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        self.limit = limit
        self.refused = 0  # connections refused for the limit
        self._refusals = RefusalLog(log)
        self._tls: TlsListener | None = None

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{'https' if self._ssl_context else 'http'}://{host}:{port}"

    def open(self) -> int:
        """Connections open, and TLS handshakes under way."""
        server = self._runner.server
        connections = len(server.connections) if server is not None else 0
        return connections + (len(self._tls.handshakes) if self._tls is not None else 0)

    def _full(self) -> bool:
        if self.limit and self.open() >= self.limit:
            self.refused += 1
            self._refusals.refused(f"API connection refused: api.max_connections "
                                   f"({self.limit}) reached")
            return True
        return False

    def _protocol(self) -> asyncio.Protocol:
        if self._full():
            return _Refused()
        server = self._runner.server
        assert server is not None
        return server()

    def _admit(self, address: Any) -> bool:
        return not self._full()

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        if self._ssl_context is not None:
            self._tls = TlsListener(loop, self._sock, server, self._ssl_context, self._admit,
                                    TLS_HANDSHAKE_SECONDS)
        else:
            self._server = await loop.create_server(self._protocol, sock=self._sock)

    def collect(self) -> Iterator[Metric]:
        """eir_api_connections, eir_api_connections_refused_total (read at scrape time)."""
        yield GaugeMetricFamily(
            "eir_api_connections",
            "Open provisioning API connections, TLS handshakes under way included.",
            value=self.open(),
        )
        yield CounterMetricFamily(
            "eir_api_connections_refused",
            "Provisioning API connections refused at accept past api.max_connections.",
            value=self.refused,
        )

    async def stop(self) -> None:
        if self._tls is not None:
            self._tls.close()
            self._tls = None
        await super().stop()
