"""The overload controller (diameter.overload) driving a fluid model of one overloaded node.

The model stands in for the node and its measurement (diameter/transport/load.py), with time
passed in: requests arrive at ``factor`` x capacity into one queue; the node spends its time on
the queue's head, an admitted request costing 1/capacity, a refused one a tenth of that (the
3004 from its template); every interval the queueing delay is measured as the sampler does (the
octets waiting over the rate they were handled at, that rate averaged over two intervals) and
given to ``update`` and ``apportion``. What the controller must get right at steady overload:
the node keeps serving near its capacity (it does not refuse what it could have served) and the
queue stays bounded (every request answered within the 5 s an MME waits).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from diameter.overload import OverloadControl, OverloadSettings

CAPACITY = 1000.0  # requests per second served when every one is admitted
REFUSAL_COST = 0.1  # a refusal's cost, as a share of an admitted request's
INTERVAL = 0.1  # diameter.overload_interval_seconds
STEP = 0.001


@dataclass(slots=True)
class Run:
    served: float  # share of the capacity served while overloaded (after the first 5 s)
    longest_wait: float  # seconds, the longest a request queued
    reductions: list[int]


def drive(factor: float, seconds: float = 30.0) -> Run:
    control = OverloadControl(OverloadSettings(target_delay=0.1, interval=INTERVAL))
    cost, refusal = 1.0 / CAPACITY, REFUSAL_COST / CAPACITY
    offered = factor * CAPACITY
    backlog = served = 0.0
    busy = handled = rate = 0.0
    longest = 0.0
    reductions: list[int] = []
    now, next_tick, ticks = 0.0, INTERVAL, 0
    while ticks < seconds / INTERVAL:
        backlog += offered * STEP
        refused = control.shares.get("mme", control.reduction) / 100 if control.reduction else 0.0
        per_request = (1 - refused) * cost + refused * refusal
        done = min(backlog, STEP / per_request)
        backlog -= done
        busy += done * per_request
        handled += done
        if now >= 5.0:
            served += done * (1 - refused)
        # FIFO: the request at the head arrived backlog / offered seconds ago.
        longest = max(longest, backlog / offered)
        now += STEP
        if now >= next_tick:
            next_tick += INTERVAL
            ticks += 1
            if busy:
                measured = handled / busy
                rate = measured if not rate else 0.5 * (rate + measured)
            busy = handled = 0.0
            delay = backlog / rate if backlog > 0 and rate else 0.0
            control.update(delay, now)
            # Octets as requests: one connection offering all of it.
            control.apportion({"mme": int(offered * INTERVAL)}, rate * INTERVAL)
            reductions.append(control.reduction)
    return Run(served / ((seconds - 5.0) * CAPACITY), longest, reductions)


@pytest.mark.parametrize(("factor", "least_served"), [(1.5, 0.85), (2.0, 0.8), (3.0, 0.7)])
def test_an_overloaded_node_keeps_serving_near_its_capacity(
    factor: float, least_served: float
) -> None:
    run = drive(factor)
    assert run.served >= least_served, (run.served, run.reductions[-40:])
    assert run.longest_wait < 1.0  # far within the MME's 5 s
    # Past the onset (5 s), a share is found: not refusing everything.
    assert max(run.reductions[int(5.0 / INTERVAL) :]) < 100


def test_under_capacity_nothing_is_refused() -> None:
    run = drive(0.9)
    assert run.reductions and not any(run.reductions)
    assert run.served == pytest.approx(0.9, rel=0.01)
