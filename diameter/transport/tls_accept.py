"""A TLS listener that admits a connection before its handshake (RFC 6733 §13 for Diameter;
the N5g-eir listener uses it too).

``loop.create_server(..., ssl=context)`` runs the handshake of every connection it accepts
before the protocol sees it: a client that admission would refuse (a connection limit, a source
network) costs a full handshake first, and handshakes under way are bounded and counted nowhere
(asyncio gives each up to 60 s). :class:`TlsListener` accepts itself (as
``diameter.transport.sctp.SctpListener`` does), asks ``admit(address)`` (False: closed at
once, nothing read), then hands the socket to ``loop.connect_accepted_socket`` for the
handshake, bounded by ``timeout``, in a task that :attr:`TlsListener.handshakes` holds; the
protocol is made and told of the connection once the handshake is done.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from diameter.transport.listener import Listener

log = logging.getLogger(__name__)


class TlsListener(Listener):
    """Accepts connections on a listening TCP socket for TLS."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        admit: Callable[[Any], bool],
        timeout: float,
    ) -> None:
        self._factory = protocol_factory
        self._context = context
        self._admit = admit
        self._timeout = timeout
        # Handshakes under way: a listener counts them against its connection limit.
        self.handshakes: set[asyncio.Task[Any]] = set()
        super().__init__(loop, sock, f"TLS {sock.getsockname()}")

    def accepted(self, conn: socket.socket, address: Any) -> None:
        if not self._admit(address):
            conn.close()  # refused: nothing read, no handshake
            return
        task = self._loop.create_task(self._handshake(conn, address))
        self.handshakes.add(task)
        task.add_done_callback(self.handshakes.discard)

    async def _handshake(self, conn: socket.socket, address: Any) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._context, ssl_handshake_timeout=self._timeout,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            # A failed handshake (no common protocol, no valid certificate, silence) is the
            # client's problem: debug only.
            log.debug("TLS handshake with %s failed: %r", address, exc)
            conn.close()
        except BaseException:
            conn.close()  # cancelled by a stop
            raise

    def close(self) -> None:
        """Stop accepting, and every handshake under way."""
        super().close()
        for task in list(self.handshakes):
            task.cancel()
