"""Cross-check of a captured S13 exchange with scapy's independent Diameter dissector."""

from __future__ import annotations

from typing import Any

from scapy.contrib.diameter import DiamG

from tests.e2e.conftest import StartGateway, connect_mme


def avps_by_code(packet: Any) -> dict[int, Any]:
    return {a.avpCode: a for a in packet.avpList if hasattr(a, "avpCode")}


async def test_captured_exchange_dissects_in_scapy(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        exchanges = {}
        for imei, status in (("35209900123456", 0), ("35693803564380", 1), ("35332011900123", 2)):
            request = mme.micr(imei, sv="03", imsi="001010123456789").encode()
            answer = await mme.client.request_raw(request, timeout=5.0)
            exchanges[imei] = (request, answer, status)
        for request, answer, status in exchanges.values():
            req, ans = DiamG(request), DiamG(answer)
            assert req.drCode == ans.drCode == 324
            assert req.drAppId == ans.drAppId == 16777252
            assert int(req.drFlags) == 0xC0 and int(ans.drFlags) == 0x40
            assert ans.drHbHId == DiamG(bytes(answer)).drHbHId
            assert (ans.drHbHId, ans.drEtEId) == (
                int.from_bytes(answer[12:16], "big"),
                int.from_bytes(request[16:20], "big"),
            )
            assert ans.drLen == len(answer)
            fields = avps_by_code(ans)
            assert fields[263].val == avps_by_code(req)[263].val  # Session-Id copied
            assert int(fields[268].val) == 2001
            assert int(fields[1445].val) == status and fields[1445].avpVnd == 10415
            assert int(fields[277].val) == 1  # NO_STATE_MAINTAINED
            assert fields[264].val == b"eir.localdomain"
    finally:
        await mme.close()
