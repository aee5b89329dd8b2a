"""diameter_lane_* metrics read from a node's lanes (gateway.metrics.LaneCollector)."""

from __future__ import annotations

from dataclasses import replace

from diameter.application import Lane
from diameter.events import RequestReceived
from diameter.lane import LEARN_AFTER, LaneRequest, answer
from diameter.peer import Peer
from gateway.metrics import GatewayMetrics
from tests.diameter.builders import micr
from tests.diameter.test_peer_helpers import ECR, S13, eir_node, open_responder


def _samples(metrics: GatewayMetrics) -> dict[str, float]:
    out = {}
    for line in metrics.render().decode().splitlines():
        if line.startswith("diameter_lane_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _lane(request: LaneRequest, peer: object) -> bytes:
    return answer(request.raw, b"")


def _serve(peer: Peer, raw: bytes) -> None:
    for event in peer.receive_data(raw, 1.0):
        if isinstance(event, (LaneRequest, RequestReceived)):
            peer.send_answer(event, event.call(), 1.0)  # type: ignore[arg-type]


def test_lane_use_is_exported_by_outcome_with_the_plans() -> None:
    node = eir_node()
    node.add_application(replace(node.applications[S13], lanes={ECR: Lane(_lane)}))
    peer = open_responder(node, origin_host="mme.test")
    metrics = GatewayMetrics()
    metrics.watch_lanes(node)
    before = _samples(metrics)
    assert before['diameter_lane_requests_total{outcome="taken"}'] == 0
    assert before["diameter_lane_plans"] == 0
    for n in range(LEARN_AFTER + 3):
        _serve(peer, micr(e2e=1000 + n, destination_realm=node.identity.origin_realm))
    after = _samples(metrics)
    assert after['diameter_lane_requests_total{outcome="no_plan"}'] == LEARN_AFTER
    assert after['diameter_lane_requests_total{outcome="taken"}'] == 3
    for outcome in ("unmatched", "destination", "application"):
        assert after[f'diameter_lane_requests_total{{outcome="{outcome}"}}'] == 0
    assert after["diameter_lane_plans"] == 1
    assert after["diameter_lane_plans_learnt_total"] == 1
    assert after["diameter_lane_plans_forgotten_total"] == 0
