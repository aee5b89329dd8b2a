"""The simulator as an RFC 7683 reacting node (--doic) against a real, overloaded gateway."""

from __future__ import annotations

import asyncio

from gateway.service import Gateway
from gateway.simulator.runner import SimulatorSettings, simulate
from tests.simulator.conftest import port_of
from tests.simulator.test_against_gateway import _checks


def hold_overload(gateway: Gateway, reduction: int) -> None:
    """Hold the gateway's overload control at ``reduction`` percent (the sampler stopped)."""
    assert gateway.server is not None and gateway.server.load is not None
    assert gateway.node is not None
    gateway.server.load.stop()
    control = gateway.node.overload
    while control.reduction < reduction:
        control.update(control.settings.target_delay * 1.5, asyncio.get_running_loop().time())
    assert control.reduction == reduction


async def test_doic_simulator_abates_as_the_report_asks(gateway: Gateway) -> None:
    hold_overload(gateway, 50)
    settings = SimulatorSettings(
        port=port_of(gateway), window=4, count=400, max_duration=30.0, doic=True, verify=False
    )
    report, _ = await simulate(settings, _checks(50))
    s = report.stats
    # Each request is either abated locally or sent; what is sent is answered (MICA or 3004).
    assert s.sent + s.throttled == 400
    assert s.answered == s.sent and s.timed_out == 0
    assert set(s.results) <= {"2001", "3004"}
    # The first answer carried the OC-OLR (50 %): from then on about half is abated.
    assert 150 <= s.throttled <= 210, report.render_text()
    assert "throttled (DOIC)" in report.render_text()
    assert report.to_dict()["throttled"] == s.throttled


async def test_without_doic_nothing_is_abated(gateway: Gateway) -> None:
    hold_overload(gateway, 50)
    settings = SimulatorSettings(
        port=port_of(gateway), window=4, count=200, max_duration=30.0, verify=False
    )
    report, _ = await simulate(settings, _checks(50))
    assert report.stats.throttled == 0 and report.stats.sent == 200
    assert report.stats.results["3004"] == 100  # the gateway's own loss: every other request
