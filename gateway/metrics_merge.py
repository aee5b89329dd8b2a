"""One ``/metrics`` over the worker processes of ``eir-gateway run --workers N``.

The supervisor scrapes every worker's exposition and merges them sample by sample:

* counters, histograms and summaries are summed, and so are gauges by default (peers, decision
  cache entries, process memory): the host's total;
* gauges that hold the same state in every worker are not: ``_GAUGES`` says how each is merged
  (the lists version every worker has reached is the lowest one; monitor mode is on when any
  worker has it);
* ``*_created`` timestamps take the earliest.

A worker that exits leaves its last scraped counters behind (:meth:`WorkerExpositions.retire`),
so the sums never go backwards when a worker is replaced: Prometheus would read a drop as a
counter reset and over-count the rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

Combine = Callable[[Iterable[float]], float]
SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels

# Gauges whose workers hold the same state: summing them would mean nothing.
_GAUGES: dict[str, Combine] = {
    "eir_lists_version": min,  # the version every worker serves
    "eir_ready": min,  # 1 only when every worker is ready (as /readyz)
    "eir_list_entries": max,
    "eir_tac_entries": max,
    "eir_monitor_mode": max,  # 1 while any worker answers in monitor mode
    "eir_lists_import_failed": max,
    "eir_config_last_reload_success_timestamp_seconds": max,
    "registry_circuit_state": max,  # the worst circuit
    # Overload is per worker (each its own loop and queue): the most loaded one.
    "diameter_overload_state": max,
    "diameter_overload_reduction_percent": max,
    "diameter_queueing_delay_seconds": max,
    "diameter_overload_peer_reduction_percent": max,  # a peer's connections: the most refused
    "diameter_lane_plans": max,  # each worker learns its own; the same shapes, as a rule
    "process_start_time_seconds": min,
    "process_max_fds": max,
    "python_info": max,
}
# Types whose samples only grow while a worker lives: kept when it exits.
_CUMULATIVE = frozenset({"counter", "histogram", "summary"})


def parse(text: str) -> list[Metric]:
    """A worker's exposition (Prometheus text format) as metric families."""
    return list(text_string_to_metric_families(text))


def _combiner(family: Metric, sample: str) -> Combine:
    if sample.endswith("_created"):
        return min
    if family.type in _CUMULATIVE:
        return sum
    if family.type == "gauge":
        return _GAUGES.get(family.name, sum)
    return max  # info, stateset, unknown: the same value in every worker


def _key(name: str, labels: Mapping[str, str]) -> SampleKey:
    return name, tuple(sorted(labels.items()))


@dataclass
class _Family:
    meta: Metric
    values: dict[SampleKey, list[float]] = field(default_factory=dict)


def merge(
    expositions: Iterable[list[Metric]], retired: Mapping[str, tuple[Metric, dict[SampleKey, float]]]
) -> list[Metric]:
    """Merge the live workers' families with the counters ``retired`` from exited ones."""
    families: dict[str, _Family] = {}

    def family(meta: Metric) -> _Family:
        found = families.get(meta.name)
        if found is None:
            found = families[meta.name] = _Family(Metric(meta.name, meta.documentation, meta.type))
        return found

    for exposition in expositions:
        for metric in exposition:
            values = family(metric).values
            for s in metric.samples:
                values.setdefault(_key(s.name, s.labels), []).append(s.value)
    for meta, samples in retired.values():
        values = family(meta).values
        for key, value in samples.items():
            values.setdefault(key, []).append(value)
    out = []
    for f in families.values():
        for (name, labels), seen in f.values.items():
            f.meta.add_sample(name, dict(labels), _combiner(f.meta, name)(seen))
        out.append(f.meta)
    return out


class WorkerExpositions:
    """The latest exposition of each worker slot, and the counters of workers that exited."""

    def __init__(self) -> None:
        self.latest: dict[int, list[Metric]] = {}
        self.retired: dict[str, tuple[Metric, dict[SampleKey, float]]] = {}

    def update(self, slot: int, families: list[Metric]) -> None:
        self.latest[slot] = families

    def retire(self, slot: int) -> None:
        """The worker in ``slot`` exited: fold its last counters into the retired totals."""
        for metric in self.latest.pop(slot, ()):
            if metric.type not in _CUMULATIVE:
                continue
            _, samples = self.retired.setdefault(
                metric.name, (Metric(metric.name, metric.documentation, metric.type), {})
            )
            for s in metric.samples:
                if s.name.endswith("_created"):
                    continue
                key = _key(s.name, s.labels)
                samples[key] = samples.get(key, 0.0) + s.value

    def snapshot(self) -> Merged:
        """A frozen copy to render off the event loop (scrapes and exits keep changing this)."""
        retired = {name: (meta, dict(samples)) for name, (meta, samples) in self.retired.items()}
        return Merged(list(self.latest.values()), retired)


@dataclass(frozen=True)
class Merged:
    """A collector (``collect()``, as ``generate_latest`` wants) of merged expositions."""

    expositions: list[list[Metric]]
    retired: dict[str, tuple[Metric, dict[SampleKey, float]]]

    def collect(self) -> Iterator[Metric]:
        yield from merge(self.expositions, self.retired)
