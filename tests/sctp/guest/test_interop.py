"""Independent SCTP peers of the gateway, driven as tests/interop drives them over TCP:
Erlang/OTP diameter with its ``diameter_sctp`` transport as an MME, and freeDiameter as a relay
between an MME and the gateway with its SCTP stack towards us."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from diameter.dictionary.ts29272_s13 import VENDOR
from tests.interop.conftest import BLACKLISTED, GREYLISTED, WHITELISTED, StartGateway
from tests.interop.test_erlang import assert_clean_eca, escript, facts, run_mme  # noqa: F401
from tests.interop.test_freediameter import (  # noqa: F401
    FD_IDENTITY,
    RelayedMme,
    StartFd,
    certificate,
    freediameterd,
    open_peer,
    start_fd,
    start_relay,
)

# freeDiameter uses no loopback address, and will not start without another one: a
# documentation address (RFC 5737) on the guest's lo, admitted by the gateway.
FD_ADDRESS = "192.0.2.1"


@pytest.fixture(scope="module")
def documentation_address() -> Iterator[str]:
    subprocess.run(["ip", "addr", "add", f"{FD_ADDRESS}/32", "dev", "lo"], check=True, timeout=30)
    yield FD_ADDRESS
    subprocess.run(["ip", "addr", "del", f"{FD_ADDRESS}/32", "dev", "lo"], check=True, timeout=30)


async def test_erlang_otp_diameter_sctp(
    start_gateway: StartGateway, escript: str, tmp_path: Path  # noqa: F811
) -> None:
    """OTP's MME over diameter_sctp: CER/CEA, three checks with their statuses, each ECA
    decoded by OTP's strict codec without errors, DPR/DPA; the gateway saw an SCTP peer."""
    gateway = await start_gateway(EIR_DIAMETER_LISTEN="sctp://127.0.0.1:0")
    (transport, _, port), *_ = gateway.diameter_sockets
    assert transport == "sctp"
    seen: set[tuple[str, str]] = set()

    async def watch() -> None:
        while True:
            seen.update((p.origin_host, p.transport) for p in gateway.server.open_peers)  # type: ignore[union-attr]
            await asyncio.sleep(0.05)

    checks = [
        {"imei": "35209900123456", "imsi": "001010123456789"},
        {"imei": "35693803564380", "imsi": "001010123456789"},
        {"imei": "35332011900123", "imsi": "001010123456789"},
    ]
    watcher = asyncio.create_task(watch())
    try:
        done = await run_mme(
            escript, tmp_path, port, checks, extra_terms="{transport, sctp}.\n", timeout=120
        )
    finally:
        watcher.cancel()
    assert seen == {("mme.otp.test", "sctp")}, done.explain()
    (cea,) = facts(done, "cea")
    assert cea["errors"] == "[]" and "{'Result-Code',2001}" in cea["msg"], cea
    answers = facts(done, "eca")
    assert [a["status"] for a in answers] == [str(WHITELISTED), str(BLACKLISTED), str(GREYLISTED)]
    for answer in answers:
        assert_clean_eca(answer)
        assert answer["result_code"] == "2001", answer
    assert facts(done, "disconnected") and facts(done, "down"), done.explain()


async def test_freediameter_relays_over_sctp(
    start_gateway: StartGateway,
    start_fd: StartFd,  # noqa: F811
    documentation_address: str,
) -> None:
    """MME -(TCP)- freeDiameter -(SCTP)- gateway: freeDiameter's CER over SCTP, three MICRs
    relayed with their statuses, and its DPR on SIGTERM answered 2001."""
    gateway = await start_gateway(
        EIR_DIAMETER_LISTEN=f"sctp://{documentation_address}:0",
        EIR_DIAMETER_ALLOWED_NETWORKS=f"127.0.0.0/8,{documentation_address}/32",
    )
    mme = RelayedMme()
    server = await asyncio.start_server(mme.serve, "127.0.0.1", 0)
    try:
        fd = await start_relay(start_fd, gateway, mme, server, sctp_address=documentation_address)
        (info,) = [p for p in gateway.server.open_peers if p.origin_host == FD_IDENTITY]  # type: ignore[union-attr]
        assert info.transport == "sctp" and info.product_name == "freeDiameter"
        for index, (imei, status) in enumerate(
            (
                ("35209900123456", WHITELISTED),
                ("35693803564380", BLACKLISTED),
                ("35332011900123", GREYLISTED),
            )
        ):
            answer = await mme.check(imei, f"mme.relay.test;sctp;{index}")
            assert answer.get("Result-Code") == 2001, answer
            equipment_status = answer.find(1445, VENDOR)
            assert equipment_status is not None and equipment_status.value == status
        assert await fd.terminate() == 0
        (dpa,) = fd.find("RCV", "Disconnect-Peer-Answer")
        assert dpa.result_code == 2001
        await fd.wait(lambda: not open_peer(gateway, FD_IDENTITY), 10, "peer gone on the gateway")
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
