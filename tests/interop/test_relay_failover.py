"""Two gateway processes (distinct identities, one realm) behind freeDiameter configured from
``deploy/freediameter/``: one is killed (SIGKILL) or hung (SIGSTOP) while checks flow through the
relay. No check may be lost (the relay fails the requests of the dead or silent connection over
to the other gateway), and a killed gateway rejoins once restarted.

Timings (the longest gap, the hung gateway's cost) are measured by bench/relay_failover.py, not
asserted here."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop import test_freediameter as fd_suite
from tests.interop.conftest import kill_group
from tests.interop.relay_ha import GatewayProcess, drive, relay_sender, render_relay_config
from tests.interop.test_freediameter import FreeDiameter, RelayedMme

freediameterd = fd_suite.freediameterd
certificate = fd_suite.certificate

RATE = 100.0  # ECRs per second through the relay
SUCCESS = 2001


@dataclass
class Deployment:
    gateways: list[GatewayProcess]
    relay: FreeDiameter
    mme: RelayedMme

    async def wait_connected(self, gateway: GatewayProcess, timeout: float = 30.0) -> None:
        """Until the relay has an open connection to ``gateway`` (its CER answered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await gateway.metric("diameter_peers", state="R_OPEN") < 1:
            assert loop.time() < deadline, f"the relay did not connect to {gateway.identity}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def deployment(
    freediameterd: str, certificate: tuple[Path, Path], tmp_path: Path
) -> AsyncIterator[Deployment]:
    gateways = [GatewayProcess(f"eir{i}.example.net", tmp_path / f"var{i}") for i in (1, 2)]
    mme = RelayedMme()
    server = await asyncio.start_server(mme.serve, "127.0.0.1", 0)
    relay_process = None
    try:
        await asyncio.gather(*(g.start() for g in gateways))
        conf = render_relay_config(
            tmp_path, [(g.identity, g.port) for g in gateways],
            ("mme.relay.test", server.sockets[0].getsockname()[1]), fd_suite.FD_IDENTITY,
            *certificate,
        )
        log = tmp_path / "relay.log"
        with log.open("wb") as out:
            relay_process = await asyncio.create_subprocess_exec(
                freediameterd, "-c", str(conf), stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        relay = FreeDiameter(log, relay_process)
        await relay.wait(lambda: mme.connected.is_set(), 20, "the relay's CER to the MME")
        deployment = Deployment(gateways, relay, mme)
        for gateway in gateways:
            await deployment.wait_connected(gateway)
        yield deployment
    finally:
        if relay_process is not None:
            kill_group(relay_process)
            await relay_process.wait()
        for gateway in gateways:
            await gateway.stop()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


async def checks_on(gateway: GatewayProcess) -> float:
    return await gateway.metric("eir_checks_total")


async def test_sigkill_loses_nothing_and_the_gateway_rejoins(deployment: Deployment) -> None:
    first, second = deployment.gateways
    served: list[float] = []

    async def note_first() -> None:
        served.append(await checks_on(first))

    outcomes = await drive(
        relay_sender(deployment.mme), RATE, 4.0,
        events={1.4: note_first, 1.5: lambda: first.signal(signal.SIGKILL)},
    )
    lost = [o for o in outcomes if o.answered is None]
    assert not lost, f"{len(lost)} of {len(outcomes)} checks unanswered"
    assert {o.result for o in outcomes} == {SUCCESS}
    assert first.process is not None
    assert await first.process.wait() == -signal.SIGKILL
    assert served[0] > 0  # the relay spread the checks over both until the kill
    assert await checks_on(second) > 0

    await first.start()  # the relay reconnects within its TcTimer
    await deployment.wait_connected(first)
    before = await checks_on(first)
    outcomes = await drive(relay_sender(deployment.mme), RATE, 2.0)
    assert all(o.result == SUCCESS for o in outcomes)
    assert await checks_on(first) > before  # it serves again


async def test_sigstop_loses_nothing(deployment: Deployment) -> None:
    first, second = deployment.gateways
    before: list[float] = []

    async def note_first() -> None:
        before.append(await checks_on(first))

    try:
        outcomes = await drive(
            relay_sender(deployment.mme), RATE, 4.0,
            events={0.9: note_first, 1.0: lambda: first.signal(signal.SIGSTOP)},
        )
    finally:
        first.signal(signal.SIGCONT)
    lost = [o for o in outcomes if o.answered is None]
    # Each request stuck on the silent gateway was sent to the other after rt_busypeers'
    # RelayTimeout: none reached the MME's 5 s timeout.
    assert not lost, f"{len(lost)} of {len(outcomes)} checks unanswered within 5 s"
    assert {o.result for o in outcomes} == {SUCCESS}
    assert await checks_on(second) > 0
    # Resumed, the first gateway works off what it was sent while stopped: the relay did send
    # it requests, and they were answered by the other one.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await checks_on(first) <= before[0]:
        assert loop.time() < deadline, "the stopped gateway was sent nothing"
        await asyncio.sleep(0.1)
