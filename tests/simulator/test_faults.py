"""The simulator against misbehaving EIRs: wrong identifiers, late answers, a peer that leaves."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from diameter.application import Application
from diameter.codec import Avp, Message
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID
from diameter.node import Node
from diameter.settings import ListenEndpoint, LocalIdentity, PeerSettings, TransportSettings
from diameter.transport import Server
from gateway.cli._common import EXIT_CUT_SHORT
from gateway.simulator.runner import Simulation, SimulatorSettings, simulate
from gateway.simulator.traffic import Check, read_imei_file

REPO = Path(__file__).resolve().parents[2]

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


async def test_answers_read_together_end_their_latency_at_the_read(
    servers: list[Server],
) -> None:
    """The answers of one read arrived together: each latency ends at the read, however long
    the simulator takes to handle the answers before it (its time, not the EIR's)."""
    held: list[tuple[asyncio.Future[bytes], bytes]] = []

    def together(request: Message, peer: Any) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        held.append((future, answer(request)))
        if len(held) == 8:  # all answered at once: written together, read together
            for waiting, raw in held:
                waiting.set_result(raw)
        return future

    servers.append(await start_server(together))
    port = servers[0].sockets[0][2]
    arrived: list[float] = []

    class Watched(Simulation):
        def _on_answer(self, conn: Any, hop_by_hop: int, raw: bytes) -> None:
            started = conn.outstanding[hop_by_hop].started
            super()._on_answer(conn, hop_by_hop, raw)
            arrived.append(started + self.stats.latencies[-1])

    report = await Watched(SimulatorSettings(port=port, window=8, count=8), CHECKS).run()
    assert report.stats.answered == 8 and report.ok
    # One read (two at worst, had the kernel split the write): one arrival time per read.
    first = sorted(arrived)
    reads = 1 + sum(1 for a, b in itertools.pairwise(first) if b - a > 1e-7)
    assert reads <= 2, arrived


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
    for spin in (-0.001, 1.5):
        with pytest.raises(ValueError, match="spin"):
            SimulatorSettings(count=1, mode="open", rate=10, spin=spin).validate()


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


async def _cut_short_run(server: Server, cut: Callable[[], Awaitable[None]]) -> Any:
    """A closed-loop run meant to last 5 s, ended by the EIR after 0.3 s."""
    port = server.sockets[0][2]
    settings = SimulatorSettings(port=port, window=1, duration=5.0, max_duration=10.0)
    run = asyncio.create_task(simulate(settings, CHECKS))
    await asyncio.sleep(0.3)
    await cut()
    report, _ = await asyncio.wait_for(run, 5)
    return report


async def test_eir_dpr_cuts_the_run_short(servers: list[Server]) -> None:
    server = await start_server(lambda request, peer: answer(request))
    report = await _cut_short_run(server, lambda: server.stop(DisconnectCause.BUSY, timeout=1.0))
    # Every request sent was answered: only the cut tells this run from a good one.
    assert report.stats.sent > 0
    assert report.cut_short == [
        "mme1.sim.local: the EIR sent DPR (Disconnect-Cause 1 BUSY)"
    ]
    assert not report.ok
    text = report.render_text()
    assert "CUT SHORT by the EIR: mme1.sim.local: the EIR sent DPR (Disconnect-Cause 1 BUSY)" in text
    assert text.endswith("NOT OK\n")
    assert report.to_dict()["cut_short"] == report.cut_short


async def test_eir_closing_the_connection_cuts_the_run_short(servers: list[Server]) -> None:
    server = await start_server(lambda request, peer: answer(request))
    servers.append(server)

    async def drop() -> None:
        for connection in list(server.connections):
            connection.abort()

    report = await _cut_short_run(server, drop)
    assert report.cut_short == ["mme1.sim.local: connection closed by the peer"]
    assert not report.ok


async def test_own_limits_are_not_a_cut(servers: list[Server]) -> None:
    servers.append(await start_server(lambda request, peer: answer(request)))
    port = servers[0].sockets[0][2]
    report, _ = await simulate(SimulatorSettings(port=port, window=2, count=20), CHECKS)
    assert report.ok and report.cut_short == [] and report.to_dict()["cut_short"] is None


async def test_imei_file_mismatch_reported_once_with_its_line(
    servers: list[Server], tmp_path: Path
) -> None:
    servers.append(await start_server(lambda request, peer: answer(request)))  # WHITELISTED
    port = servers[0].sockets[0][2]
    path = tmp_path / "checks.csv"
    path.write_text("imei,imsi,sv,expected\n35209900000000,,,WHITELISTED\n"
                    "# the EIR answers WHITELISTED to every IMEI\n35209900000001,,,BLACKLISTED\n")
    report, _ = await simulate(
        SimulatorSettings(port=port, window=1, count=20), read_imei_file(path)
    )
    s = report.stats
    assert s.mismatches == 10  # every answer still counts
    assert s.mismatch_examples == [{"imei": "35209900000001", "expected": "BLACKLISTED",
                                    "got": "WHITELISTED", "count": 10, "line": 4}]
    text = report.render_text()
    assert "verification: 20 verified, 10 mismatches (1 distinct checks)" in text
    mismatch_lines = [line for line in text.splitlines() if "mismatch:" in line]
    assert mismatch_lines == [
        "  mismatch: line 4: IMEI 35209900000001 expected BLACKLISTED got WHITELISTED (10 times)"
    ]


async def test_cli_exit_status_when_cut_short(servers: list[Server]) -> None:
    server = await start_server(lambda request, peer: answer(request))
    port = server.sockets[0][2]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "simulate", "--port", str(port), "--window", "1",
        "--duration", "20", "--no-verify", "--progress", "off",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("EIR_")},
             "PYTHONPATH": str(REPO)},
    )
    try:
        for _ in range(100):  # until the simulator's peer is up
            await asyncio.sleep(0.1)
            if server.open_peers:
                break
        await server.stop(timeout=1.0)
        out, _err = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == EXIT_CUT_SHORT
    assert b"CUT SHORT by the EIR: mme1.sim.local: the EIR sent DPR" in out
