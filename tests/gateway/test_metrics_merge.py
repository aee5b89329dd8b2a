"""Merging the workers' expositions into one /metrics (gateway.metrics_merge)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics
from gateway.metrics_merge import WorkerExpositions, parse


def worker(checks: int, peers: int, version: int, monitor: bool) -> GatewayMetrics:
    metrics = GatewayMetrics()
    for _ in range(checks):
        metrics.count_check("blacklisted", "blacklisted", 0.0002)
    metrics.peers.labels("R_OPEN").set(peers)
    metrics.lists_version.set(version)
    metrics.monitor_mode.set(1 if monitor else 0)
    metrics.reloads.labels("ok").inc()
    return metrics


def samples(expositions: WorkerExpositions) -> dict[tuple[str, tuple], float]:
    text = generate_latest(expositions.snapshot()).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_and_histograms_add_up_gauges_merge_by_meaning() -> None:
    expositions = WorkerExpositions()
    expositions.update(0, parse(worker(3, 2, 7, False).render().decode()))
    expositions.update(1, parse(worker(4, 5, 6, True).render().decode()))
    got = samples(expositions)
    checks = ("eir_checks_total", (("interface", "s13"), ("reason", "blacklisted"),
                                    ("status", "blacklisted")))
    assert got[checks] == 7
    assert got[("eir_check_duration_seconds_count", (("interface", "s13"),))] == 7
    assert got[("eir_check_duration_seconds_bucket", (("interface", "s13"), ("le", "0.00025")))] == 7
    assert got[("diameter_peers", (("state", "R_OPEN"),))] == 7  # summed
    assert got[("eir_lists_version", ())] == 6  # the version every worker has
    assert got[("eir_monitor_mode", ())] == 1  # on in one of them
    assert got[("eir_config_reloads_total", (("outcome", "ok"),))] == 2
    assert ("python_info", ()) not in got  # info samples keep their labels, once
    assert sum(1 for name, _ in got if name == "python_info") == 1


def test_an_exited_worker_leaves_its_counters_not_its_gauges() -> None:
    expositions = WorkerExpositions()
    expositions.update(0, parse(worker(3, 2, 7, False).render().decode()))
    expositions.update(1, parse(worker(4, 5, 7, False).render().decode()))
    expositions.retire(0)
    # Its replacement starts from zero: the sum must not go backwards (a "counter reset").
    expositions.update(0, parse(worker(1, 1, 7, False).render().decode()))
    got = samples(expositions)
    checks = ("eir_checks_total", (("interface", "s13"), ("reason", "blacklisted"),
                                    ("status", "blacklisted")))
    assert got[checks] == 8
    assert got[("eir_check_duration_seconds_bucket", (("interface", "s13"), ("le", "+Inf")))] == 8
    assert got[("diameter_peers", (("state", "R_OPEN"),))] == 6  # live peers only


def test_a_counter_only_an_exited_worker_had_is_still_exposed() -> None:
    expositions = WorkerExpositions()
    expositions.update(0, parse(worker(2, 0, 1, False).render().decode()))
    expositions.retire(0)
    got = samples(expositions)
    assert got[("eir_checks_total", (("interface", "s13"), ("reason", "blacklisted"),
                                    ("status", "blacklisted")))] == 2
    assert ("eir_lists_version", ()) not in got  # a gauge of a process that is gone
