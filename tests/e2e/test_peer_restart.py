"""A second connection from an open peer: rejected (RFC 6733 §5.6.4 R-Reject) unless its CER
shows that the peer restarted (a new Origin-State-Id, §8.16), which replaces the stale one."""

from __future__ import annotations

import asyncio

import pytest

from diameter.application import Application
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from diameter.node import Node
from diameter.settings import LocalIdentity, PeerSettings
from diameter.transport import Client, ClientClosed
from tests.e2e.conftest import Mme, StartGateway


def mme_node(origin_state_id: int) -> Node:
    identity = LocalIdentity(
        origin_host="mme.test", origin_realm="test", origin_state_id=origin_state_id
    )
    return Node(
        PeerSettings(identity=identity),
        [Application(S13_APPLICATION_ID, {}, vendor_id=VENDOR, name="S13")],
    )


async def test_same_origin_state_id_is_rejected_new_one_replaces(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    _, host, port = gateway.diameter_sockets[0]
    first_node = mme_node(1)
    first = await Client.connect(first_node, host, port)
    try:
        # The same incarnation connecting again loses (R-Reject: closed without a CEA).
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(Client.connect(mme_node(1), host, port), 5.0)
        assert first.is_open
        # A restarted MME (new Origin-State-Id) is admitted; its stale connection is closed.
        second_node = mme_node(2)
        second = await Client.connect(second_node, host, port)
        try:
            await asyncio.wait_for(first.wait_closed(), 5.0)
            answer = await Mme(second, second_node).check("35209900123456")
            assert answer.get("Result-Code") == 2001
            assert [p.origin_state_id for p in gateway.server.open_peers] == [2]  # type: ignore[union-attr]
        finally:
            await second.close()
    finally:
        await first.close()
