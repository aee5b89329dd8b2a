"""The simulator against misbehaving EIRs: wrong identifiers, late answers, a peer that leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from diameter.application import Application
from diameter.codec import Avp, Message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID
from diameter.node import Node
from diameter.settings import ListenEndpoint, LocalIdentity, PeerSettings, TransportSettings
from diameter.transport import Server
from gateway.simulator.runner import SimulatorSettings, simulate
from gateway.simulator.traffic import Check

Handler = Callable[[Message, Any], bytes | Awaitable[bytes]]


def answer(request: Message, *, end_to_end_delta: int = 0, session: str | None = None) -> bytes:
    session_id = session if session is not None else request.get("Session-Id")
    return Message(
        324,
        S13_APPLICATION_ID,
        0x40,
        request.hop_by_hop,
        (request.end_to_end + end_to_end_delta) & 0xFFFFFFFF,
        [
            Avp.new("Session-Id", session_id),
            Avp.new("Result-Code", 2001),
            Avp.new("Auth-Session-State", 1),
            Avp.new("Origin-Host", "eir.test"),
            Avp.new("Origin-Realm", "localdomain"),
            Avp.new("Equipment-Status", 0),
        ],
    ).encode()


async def start_server(handler: Handler) -> Server:
    node = Node(
        PeerSettings(identity=LocalIdentity(origin_host="eir.test", origin_realm="localdomain")),
        [Application(S13_APPLICATION_ID, {324: handler}, vendor_id=10415)],
    )
    server = Server(node, TransportSettings(listen=(ListenEndpoint("tcp", "127.0.0.1", 0),)))
    await server.start()
    return server


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        await server.stop(timeout=1.0)


CHECKS = [Check("35209900000000", expected="WHITELISTED")]


async def test_identifier_mismatches_are_counted(servers: list[Server]) -> None:
    seen = 0

    def handler(request: Message, peer: Any) -> bytes:
        nonlocal seen
        seen += 1
        if seen % 3 == 1:
            return answer(request, end_to_end_delta=1)  # wrong End-to-End
        if seen % 3 == 2:
            return answer(request, session="someone.else;1;1")  # wrong Session-Id
        return answer(request)

    servers.append(await start_server(handler))
    port = servers[0].sockets[0][2]
    report, _ = await simulate(SimulatorSettings(port=port, window=1, count=9), CHECKS)
    s = report.stats
    assert s.answered == 9 and s.id_mismatches == 6
    fields = {e["field"] for e in s.id_mismatch_examples}
    assert fields == {"End-to-End", "Session-Id"}
    assert any(e["got"] == "someone.else;1;1" for e in s.id_mismatch_examples)
    assert s.mismatches == 0  # the status itself was as expected
    assert not report.ok


async def test_timeouts_then_late_answers(servers: list[Server]) -> None:
    async def slow(request: Message, peer: Any) -> bytes:
        await asyncio.sleep(0.4)
        return answer(request)

    servers.append(await start_server(slow))
    port = servers[0].sockets[0][2]
    settings = SimulatorSettings(port=port, window=4, count=4, timeout=0.1, max_duration=5.0)
    report, _ = await simulate(settings, CHECKS)
    s = report.stats
    assert s.sent == 4 and s.timed_out == 4 and s.answered == 0
    assert s.errors == 4 and not report.ok
    assert report.duration < 1.0  # the run ends on the timeouts, not on the late answers


async def test_peer_leaving_loses_outstanding_requests(servers: list[Server]) -> None:
    async def never(request: Message, peer: Any) -> bytes:
        await asyncio.sleep(30)
        return answer(request)

    server = await start_server(never)
    port = server.sockets[0][2]
    settings = SimulatorSettings(port=port, window=3, count=3, timeout=20.0, max_duration=10.0)
    run = asyncio.create_task(simulate(settings, CHECKS))
    await asyncio.sleep(0.3)
    await server.stop(timeout=0.5)  # DPR to the simulator, which answers and closes
    report, _ = await asyncio.wait_for(run, 10)
    s = report.stats
    assert s.sent == 3 and s.lost == 3 and s.answered == 0 and s.timed_out == 0
    assert report.connections_up == 0 and not report.ok


async def test_hard_maximum_duration_stops_an_open_loop(servers: list[Server]) -> None:
    servers.append(await start_server(lambda request, peer: answer(request)))
    port = servers[0].sockets[0][2]
    settings = SimulatorSettings(
        port=port, mode="open", rate=200.0, duration=60.0, max_duration=0.5
    )
    started = asyncio.get_running_loop().time()
    report, _ = await asyncio.wait_for(simulate(settings, CHECKS), 10)
    assert asyncio.get_running_loop().time() - started < 5.0
    assert 60 <= report.stats.sent <= 140  # about 0.5 s at 200/s
    assert report.ok, report.render_text()


def test_settings_need_a_bound() -> None:
    with pytest.raises(ValueError, match="count or a duration"):
        SimulatorSettings().validate()
    with pytest.raises(ValueError):
        SimulatorSettings(count=1, mode="sideways").validate()
    with pytest.raises(ValueError):
        SimulatorSettings(count=1, mode="open", rate=0).validate()


async def test_progress_once_a_second_on_stderr(
    servers: list[Server], capsys: pytest.CaptureFixture[str]
) -> None:
    servers.append(await start_server(lambda request, peer: answer(request)))
    port = servers[0].sockets[0][2]
    settings = SimulatorSettings(
        port=port, mode="open", rate=100.0, duration=2.3, progress=True, max_duration=10.0
    )
    report, _ = await simulate(settings, CHECKS)
    assert report.ok
    err = capsys.readouterr().err
    lines = [part for part in err.split("\r") if "answered" in part]
    assert len(lines) == 2  # at 1 s and 2 s
    assert "/s" in lines[0] and "timed out 0" in lines[0] and "errors 0" in lines[0]
