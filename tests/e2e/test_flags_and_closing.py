"""Issue 15 against a real gateway on loopback, with raw bytes on the MME side:

* M bits that RFC 6733 §4.5 forbids on Product-Name / Firmware-Revision are accepted by default
  (counted in diameter_avp_flag_deviations_total) and refused with 5016 when
  ``diameter.strict_avp_flags = true``, in CER and in ME-Identity-Check-Request alike;
* once a connection is Closing (after the DPA we sent, or after our own DPR on SIGTERM), no
  request is classified.
"""

from __future__ import annotations

import asyncio

from diameter.codec import Avp, Message
from tests.e2e.conftest import StartGateway, metric_value, scrape
from tests.e2e.test_conformance_edges import (
    DPR,
    ECR,
    RawPeer,
    base_request,
    cer,
    ecr,
    failed,
    open_peer,
)

M = 0x40
PRODUCT_NAME_M = Avp(269, M, 0, b"mme-vendor")
FIRMWARE_REVISION_M = Avp(267, M, 0, (1).to_bytes(4, "big"))


def checks_total(text: str) -> float:
    """Every eir_checks_total sample added up (Prometheus text format)."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("eir_checks_total{")
    )


def cer_with_m_bits() -> Message:
    return cer(omit=("Product-Name",), extra=(PRODUCT_NAME_M, FIRMWARE_REVISION_M))


async def test_m_bits_accepted_by_default_and_counted(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await RawPeer.connect(gateway)
    try:
        cea = await peer.ask(cer_with_m_bits())
        assert cea.get("Result-Code") == 2001
        for _ in range(2):
            answer = await peer.ask(ecr(extra=(PRODUCT_NAME_M, FIRMWARE_REVISION_M)))
            assert answer.get("Result-Code") == 2001 and answer.get("Equipment-Status") == 0
        # An unknown AVP with M set is still refused (RFC 6733 §4.1, 5001).
        unknown = await peer.ask(ecr(extra=(Avp(4242, M, 0, b"zz"),)))
        assert unknown.get("Result-Code") == 5001
    finally:
        peer.close()
    _, text = await scrape(gateway)
    family = "diameter_avp_flag_deviations_total"
    assert metric_value(text, family, avp="Product-Name") == 3
    assert metric_value(text, family, avp="Firmware-Revision") == 3


async def test_m_bits_refused_with_5016_when_strict(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(EIR_DIAMETER_STRICT_AVP_FLAGS="true")
    peer = await RawPeer.connect(gateway)
    try:
        cea = await peer.ask(cer_with_m_bits())
        assert cea.get("Result-Code") == 5016 and not cea.is_error
        assert [(a.code, a.flags) for a in failed(cea)] == [(269, M)]
        assert await peer.closed_within(5.0)
    finally:
        peer.close()
    peer = await open_peer(gateway)
    try:
        request = ecr(extra=(FIRMWARE_REVISION_M,))
        answer = await peer.ask(request)
        assert answer.get("Result-Code") == 5016 and answer.hop_by_hop == request.hop_by_hop
        assert [a.code for a in failed(answer)] == [267]
    finally:
        peer.close()
    _, text = await scrape(gateway)
    assert metric_value(text, "diameter_avp_flag_deviations_total", avp="Product-Name") == 0


async def test_no_request_processed_after_our_dpa(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        dpr = base_request(DPR, Avp.new("Disconnect-Cause", 0))
        late = ecr()
        # A request right behind the DPR, and another once the DPA is in: neither is answered.
        peer.send(dpr.encode() + late.encode())
        dpa = await peer.recv()
        assert dpa is not None and dpa.command_code == DPR and dpa.get("Result-Code") == 2001
        peer.send(ecr())
        assert await peer.recv() is None  # the gateway closes after its linger, nothing else
    finally:
        peer.close()
    _, text = await scrape(gateway)
    assert checks_total(text) == 0


async def test_no_request_processed_after_our_dpr_on_stop(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        assert (await peer.ask(ecr())).get("Result-Code") == 2001
        stopping = asyncio.create_task(gateway.stop())
        dpr = await peer.recv()
        assert dpr is not None and dpr.command_code == DPR and dpr.is_request
        peer.send(ecr())
        answer = Message(DPR, 0, 0, dpr.hop_by_hop, dpr.end_to_end)
        answer.add("Result-Code", 2001).add("Origin-Host", "mme.test").add("Origin-Realm", "test")
        peer.send(answer)
        received = []
        while (message := await peer.recv()) is not None:  # until the gateway closes
            received.append(message)
        assert [m for m in received if m.command_code == ECR] == []
        await asyncio.wait_for(stopping, 10.0)
    finally:
        peer.close()
    assert sum(gateway.metrics.hot.counters.checks.values()) == 1  # the check before the DPR only
