"""asyncio adapters for the sans-IO peer core: TCP, TLS over TCP, SCTP (RFC 6733 §2.1).

The adapters only move bytes: they feed ``Peer.receive_data``, write ``Peer.data_to_send()``,
keep one timer on ``Peer.next_deadline()``, call application handlers for ``RequestReceived``
(synchronous results are answered at once, awaitables run as one task per request and are answered
as they finish) and close the transport when ``Peer.should_close`` says so.

- ``Server``: listens on every ``ListenEndpoint`` of a ``TransportSettings``; graceful ``stop``.
- ``Client``: the initiator (an MME simulator): CER/CEA, DWR/DWA, ``request`` matched by
  Hop-by-Hop, a bounded window of outstanding requests, raw fast path, ``close`` with DPR.

TCP_NODELAY on every connection; reading pauses while a peer's writes do not drain
(``write_high_water`` / ``write_low_water``). SCTP: one-to-one sockets, payload protocol id 46
(RFC 6733 §2.1.1, §11.5), one Diameter message per SCTP message, several local addresses
(multi-homing) through pysctp, on its own transport (``diameter.transport.sctp``).
Messages go on stream 0 with ordered delivery: RFC 6733 §2.1.1 recommends the U flag, but
unordered delivery could let a request overtake the CER (§5.6.1 closes on that) or a DPR overtake
the answers before it; a receiver accepts any stream either way.
"""

from diameter.transport.client import Client, ClientClosed, WindowFull
from diameter.transport.connection import PeerConnection
from diameter.transport.server import Server
from diameter.transport.sockets import (
    DIAMETER_PPID,
    client_ssl_context,
    origin_state_now,
    sctp_socket,
    sctp_unavailable,
    server_ssl_context,
)

__all__ = [
    "DIAMETER_PPID",
    "Client",
    "ClientClosed",
    "PeerConnection",
    "Server",
    "WindowFull",
    "client_ssl_context",
    "origin_state_now",
    "sctp_socket",
    "sctp_unavailable",
    "server_ssl_context",
]
