"""python-diameter (PyPI ``python-diameter`` 0.9.0) as an MME against the gateway.

python-diameter's top-level package is named ``diameter`` like ours, so it lives in its own
virtualenv (``make interop-venv``, a dependency of ``make test``) and runs ``pd_client.py`` as a subprocess over loopback.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import metric_value
from tests.e2e.test_s13 import CASES
from tests.interop.conftest import (
    BLACKLISTED,
    GREYLISTED,
    HERE,
    INTEROP_PYTHON,
    WHITELISTED,
    Finished,
    StartGateway,
    diameter_port,
    run_process,
)

CLIENT = HERE / "pd_client.py"


@pytest.fixture(scope="module")
def interop_python() -> str:
    if not INTEROP_PYTHON.exists():
        pytest.skip(
            f"no interop virtualenv at {INTEROP_PYTHON} (`make interop-venv` installs python-diameter)"
        )
    probe = subprocess.run(
        [
            str(INTEROP_PYTHON),
            "-I",
            "-c",
            "import diameter.node, diameter.message.commands.me_identity_check",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"python-diameter not importable in {INTEROP_PYTHON}: {probe.stderr.decode()[-300:]}"
        )
    return str(INTEROP_PYTHON)


def spec(port: int, checks: list[dict[str, Any]], **extra: Any) -> str:
    return json.dumps(
        {
            "host": "127.0.0.1",
            "port": port,
            "origin_host": "mme.pd.test",
            "origin_realm": "pd.test",
            "peer_host": "eir.localdomain",
            "peer_realm": "localdomain",
            "checks": checks,
            "timeout": 5,
            "hard_timeout": 25,
            **extra,
        }
    )


async def run_client(python: str, mode: str, port: int, checks: list[dict[str, Any]]) -> Finished:
    done = await run_process([python, "-I", str(CLIENT), mode, spec(port, checks)], timeout=28)
    assert done.returncode == 0, done.explain()
    assert done.events("done"), done.explain()
    return done


def check_mica(answer: dict[str, Any], session_prefix: str) -> None:
    """What every MICA must look like to python-diameter's decoder (TS 29.272 §7.2.20)."""
    assert answer["class"] == "MeIdentityCheckAnswer"
    assert (answer["command_code"], answer["application_id"]) == (324, 16777252)
    assert answer["flags"] == 0x40  # P copied from the request, no R, no E
    assert answer["session_id"].startswith(session_prefix)
    assert answer["avp_codes"][0] == [263, 0]  # Session-Id first (RFC 6733 §8.8)
    assert answer["auth_session_state"] == 1
    assert (answer["origin_host"], answer["origin_realm"]) == ("eir.localdomain", "localdomain")
    assert answer["vendor_specific_application_id"] == [
        {"vendor_id": 10415, "auth_application_id": 16777252, "acct_application_id": None}
    ]
    assert [283, 0] not in answer["avp_codes"] and [293, 0] not in answer["avp_codes"]


async def test_node_mme_every_default_reason(
    start_gateway: StartGateway, interop_python: str
) -> None:
    """python-diameter's own Node does CER/CEA, routes a MICR per default-policy reason by
    Destination-Realm, sends a DWR and, on stop(), a DPR: every answer as expected."""
    gateway = await start_gateway()
    checks = [{"imei": imei, "imsi": imsi} for imei, imsi, _, _ in CASES]
    checks.append({"imei": "35209900123456", "imsi": "001010123456789", "sv": "07"})
    done = await run_client(interop_python, "node", diameter_port(gateway), checks)

    (cea,) = done.events("cea")
    assert cea["result_code"] == 2001, cea
    assert cea["vendor_specific_application_id"][0]["auth_application_id"] == 16777252
    assert cea["origin_host"] == "eir.localdomain"
    answers = done.events("mica")
    assert len(answers) == len(checks), done.explain()
    expected = [status for _, _, status, _ in CASES] + [WHITELISTED]
    for answer, status in zip(answers, expected, strict=True):
        assert "error" not in answer, answer
        check_mica(answer, "mme.pd.test;")
        assert answer["result_code"] == 2001, answer
        assert answer["experimental_result"] is None
        assert answer["equipment_status"] == status, answer
    (dwa,) = done.events("dwa")
    assert dwa["result_code"] == 2001 and dwa["origin_host"] == "eir.localdomain"
    assert done.events("dwr_done") == [{"event": "dwr_done", "waiting": False}]
    (dpa,) = done.events("dpa")
    assert dpa["result_code"] == 2001
    assert not gateway.server.open_peers  # the DPR/DPA closed the peer on our side too


async def test_raw_messages_decode_in_python_diameter(
    start_gateway: StartGateway, interop_python: str
) -> None:
    """python-diameter's message classes over a plain socket: CER with a
    Vendor-Specific-Application-Id, MICRs, DWR, DPR; every answer decoded by
    ``Message.from_bytes`` and its identifiers checked byte for byte."""
    gateway = await start_gateway()
    checks = [
        {"imei": "35209900123456"},
        {"imei": "35693803564380", "imsi": "001010123456789", "sv": "01"},
        {"imei": "35332011900123", "sv": "02"},
    ]
    done = await run_client(interop_python, "raw", diameter_port(gateway), checks)

    (cea,) = done.events("cea")
    assert cea["class"] == "CapabilitiesExchangeAnswer" and cea["flags"] == 0
    assert cea["result_code"] == 2001
    assert cea["host_ip_address"], cea  # 1* Host-IP-Address (RFC 6733 §5.3.2)
    assert cea["product_name"] == "eir-gateway"
    assert 10415 in cea["supported_vendor_id"]
    for index, (answer, status) in enumerate(
        zip(done.events("mica"), (WHITELISTED, BLACKLISTED, GREYLISTED), strict=True)
    ):
        check_mica(answer, f"mme.pd.test;raw;{index}")
        raw = bytes.fromhex(answer["raw"])
        assert int.from_bytes(raw[1:4], "big") == len(raw)
        assert raw[12:16] == answer["hop_by_hop"].to_bytes(4, "big")
        assert answer["equipment_status"] == status
    for name in ("dwa", "dpa"):
        (answer,) = done.events(name)
        assert answer["result_code"] == 2001 and answer["flags"] == 0, answer
        assert (answer["origin_host"], answer["origin_realm"]) == ("eir.localdomain", "localdomain")
    # RFC 6733 §5.4: after its DPA the gateway waits for us (the DPA receiver) to close.
    assert done.events("closed") == [{"event": "closed", "by_gateway_after_our_fin": True}]


async def test_equipment_unknown_5422_as_python_diameter_reads_it(
    start_gateway: StartGateway, interop_python: str
) -> None:
    """TS 29.272 §7.4.3: Experimental-Result {10415, 5422}, no Result-Code, no Equipment-Status."""
    gateway = await start_gateway(EIR_POLICY_UNKNOWN_EQUIPMENT="tac_unknown")
    checks = [{"imei": "35111111123456"}, {"imei": "35209900123456"}]
    done = await run_client(interop_python, "raw", diameter_port(gateway), checks)
    unknown, known = done.events("mica")
    check_mica(unknown, "mme.pd.test;raw;0")
    assert unknown["result_code"] is None
    assert unknown["equipment_status"] is None
    assert unknown["experimental_result"] == {"vendor_id": 10415, "experimental_result_code": 5422}
    assert [297, 0] in unknown["avp_codes"] and [268, 0] not in unknown["avp_codes"]
    assert known["result_code"] == 2001 and known["equipment_status"] == WHITELISTED


async def test_gateway_watchdog_and_dpr_towards_python_diameter(
    start_gateway: StartGateway, interop_python: str
) -> None:
    """The gateway's side of the base protocol: its DWR (Tw 6 s) is answered by python-diameter's
    Node, and on stop() its DPR (Disconnect-Cause REBOOTING) gets python-diameter's DPA."""
    gateway = await start_gateway(EIR_DIAMETER_WATCHDOG_SECONDS="6")
    checks = [{"imei": "35209900123456"}]
    client = asyncio.create_task(
        run_process(
            [
                interop_python,
                "-I",
                str(CLIENT),
                "node",
                spec(diameter_port(gateway), checks, await_gateway_dpr=20),
            ],
            timeout=28,
        )
    )

    async def counted(command: str, direction: str, result: str) -> float:
        text = gateway.metrics.render().decode()  # also after stop(), when /metrics is gone
        return metric_value(
            text, "diameter_messages_total", command=command, direction=direction, result=result
        )

    try:
        for _ in range(150):  # Tw 6 s +- 2 s of jitter
            if await counted("DWA", "in", "") >= 1 or client.done():
                break
            await asyncio.sleep(0.1)
        assert await counted("ECA", "out", "2001") == 1
        assert await counted("DWA", "in", "") >= 1, "python-diameter did not answer our DWR"
        assert [p.origin_host for p in gateway.server.open_peers] == ["mme.pd.test"]
        await asyncio.wait_for(gateway.stop(), 15)
        assert await counted("DPA", "in", "") == 1
    finally:
        done = await client
    assert done.returncode == 0, done.explain()
    (dpr,) = done.events("dpr")
    assert dpr["disconnect_cause"] == 0 and dpr["origin_host"] == "eir.localdomain"  # REBOOTING
    assert done.events("released") == [{"event": "released", "connected": False}]


async def test_node_mme_many_requests_in_flight(
    start_gateway: StartGateway, interop_python: str
) -> None:
    """300 MICRs from 32 python-diameter threads at once: each answer matches its request."""
    gateway = await start_gateway()
    rotation = [
        {"imei": "35209900123456"},
        {"imei": "35693803564380"},
        {"imei": "35332011900123"},
    ]
    expected = [WHITELISTED, BLACKLISTED, GREYLISTED]
    done = await run_process(
        [
            interop_python,
            "-I",
            str(CLIENT),
            "node",
            spec(
                diameter_port(gateway),
                [],
                concurrent={"checks": rotation, "count": 300, "threads": 32},
            ),
        ],
        timeout=28,
    )
    assert done.returncode == 0, done.explain()
    (result,) = done.events("concurrent")
    assert result["result_codes"] == [2001]
    assert result["sessions_match"] is True
    assert result["statuses"] == [expected[i % 3] for i in range(300)]
