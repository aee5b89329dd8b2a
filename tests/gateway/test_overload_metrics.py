"""diameter_overload_* metrics read from a node (gateway.metrics.OverloadCollector): the per-peer
refused shares are bounded to the most refused open peers."""

from __future__ import annotations

from diameter.overload import OverloadControl, OverloadSettings
from gateway.metrics import GatewayMetrics
from tests.diameter.test_peer_helpers import eir_node, open_responder


def test_most_refused_peers_are_exported_by_origin_host_and_bounded() -> None:
    node = eir_node()
    node.overload = OverloadControl(OverloadSettings(target_delay=0.1), node.identity, 1)
    node.overload.reduction = 60
    modest = open_responder(node, origin_host="modest.test")
    floods = [open_responder(node, origin_host=f"flood{i}.test") for i in range(20)]
    demands = {peer: 100_000 * (i + 1) for i, peer in enumerate(floods)}
    demands[modest] = 10
    node.overload.apportion(demands)
    metrics = GatewayMetrics()
    metrics.watch_overload(node)
    lines = [
        line
        for line in metrics.render().decode().splitlines()
        if line.startswith("diameter_overload_peer_reduction_percent{")
    ]
    assert len(lines) == 16  # bounded, whatever the number of peers refused
    assert not any("modest.test" in line for line in lines)  # within its fair share
    # The most refused (the largest offers) are the ones shown.
    assert any('peer="flood19.test"' in line for line in lines)
    assert not any('peer="flood0.test"' in line for line in lines)
    node.overload.update(0.0, 1.0)  # under the target: no refusals, no series
    text = metrics.render().decode()
    assert "diameter_overload_peer_reduction_percent{" not in text
