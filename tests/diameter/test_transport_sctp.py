"""Diameter over SCTP where the kernel has none: refused clearly. The SCTP tests proper run in
a kernel with SCTP: tests/sctp/guest, through the SCTP stage (tests/sctp/test_stage.py)."""

from __future__ import annotations

import pytest

from diameter.errors import DiameterError
from diameter.settings import ListenEndpoint, TransportSettings
from diameter.transport import Server, sctp_unavailable
from tests.diameter.test_peer_helpers import eir_node

REASON = sctp_unavailable()


@pytest.mark.skipif(REASON is None, reason="the kernel has SCTP: nothing to refuse")
async def test_sctp_listener_refused_clearly_and_nothing_left_listening() -> None:
    settings = TransportSettings(
        listen=(ListenEndpoint("tcp", "127.0.0.1", 0), ListenEndpoint("sctp", "127.0.0.1", 0))
    )
    server = Server(eir_node(), settings)
    with pytest.raises(DiameterError, match="SCTP"):
        await server.start()
    assert server.sockets == []
