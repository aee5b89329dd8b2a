"""Random sequences of registry faults under steady load, then healing: the circuit must close.

A real HTTP registry on loopback (the reference server with a fault injector) goes through a
hypothesis-chosen sequence of misbehaviours while checks arrive at about 300/s; then it answers
right again. Whatever happened before, one reset interval after healing (plus the budget of a
probe that may have been hanging when it healed) the next check must be admitted, get its verdict
and close the circuit. Along the way: every check ends with a verdict or RegistryUnavailable, the
registry never serves more than ``max_connections`` requests at once, and nothing is left over.

The second test times the changes to the breaker instead of the clock: a fault that flips the
moment the circuit opens, just before or while its half-open probe is out (heal included: the
registry may heal mid-probe), slow answers that succeed after the circuit opened, flapping whose
period is the reset interval. ``EIR_FAULT_SEQUENCE_EXAMPLES`` runs more examples of both (a long
search; hypothesis's ``--hypothesis-seed`` picks new ones).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry_client.breaker import BreakerState, CircuitBreaker
from registry_client.client import HttpRegistryClient
from registry_client.faults import Fault, FaultInjector
from registry_client.model import RegistryUnavailable, RegistryVerdict
from registry_client.server import RegistryServer
from tests.registry.conftest import ClientFactory, wait_until

BUDGET = 0.2
RESET = 0.3
MAX_CONNECTIONS = 8
RATE = 300.0  # checks per second
SLACK = 0.1  # timers firing late on a loaded machine

FAULTS = [f for f in Fault if f is not Fault.OK]
EXAMPLES = int(os.environ.get("EIR_FAULT_SEQUENCE_EXAMPLES", "0"))

steps = st.lists(
    st.tuples(st.sampled_from(FAULTS), st.sampled_from([0.02, 0.1, 0.3])),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=EXAMPLES or 12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=steps,
    delay=st.sampled_from([0.05, 0.5]),  # SLOW: inside or past the budget
    retry_after=st.sampled_from(["0", "1"]),
    flap_period=st.sampled_from([0.01, 0.05]),
)
async def test_the_circuit_closes_after_any_fault_sequence(
    faulty: RegistryServer,
    faults: FaultInjector,
    make_client: ClientFactory,
    steps: list[tuple[Fault, float]],
    delay: float,
    retry_after: str,
    flap_period: float,
) -> None:
    faults.delay, faults.retry_after, faults.flap_period = delay, retry_after, flap_period

    async def apply(client: HttpRegistryClient) -> None:
        for fault, seconds in steps:
            faults.set_mode(fault)
            await asyncio.sleep(seconds)

    await run_sequence(faulty.url, faults, make_client, apply)


@dataclass(frozen=True, slots=True)
class When:
    """When a fault starts: ``after`` seconds, or timed to the breaker (``on``: "open", the
    circuit just opened; "probe", the half-open probe is out; "before_probe", ``lead`` seconds
    before the open circuit lets its probe out), then ``after`` seconds more."""

    on: str | None
    after: float = 0.0


async def _when(client: HttpRegistryClient, when: When) -> None:
    breaker = client.breaker
    loop = asyncio.get_running_loop()
    if when.on == "open":
        await _state(breaker, BreakerState.OPEN)
    elif when.on == "probe":
        await _state(breaker, BreakerState.HALF_OPEN)
    elif when.on == "before_probe":
        if await _state(breaker, BreakerState.OPEN):
            await asyncio.sleep(max(0.0, breaker.opened_at + RESET - when.after - loop.time()))
        return
    await asyncio.sleep(when.after)


async def _state(breaker: CircuitBreaker, state: BreakerState, timeout: float = 2.0) -> bool:
    """Wait (at most ``timeout``) for the breaker to be in ``state``; False if it was not."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while breaker.state is not state:
        if loop.time() > end:
            return False
        await asyncio.sleep(0.001)
    return True


whens = st.one_of(
    st.builds(When, st.none(), st.sampled_from([0.02, 0.1, 0.3])),
    st.builds(When, st.just("open"), st.sampled_from([0.0, 0.01, 0.1])),
    st.builds(When, st.just("probe"), st.sampled_from([0.0, 0.005, BUDGET / 2, BUDGET])),
    st.builds(When, st.just("before_probe"), st.sampled_from([0.0, 0.005, 0.05])),
)


@settings(
    max_examples=EXAMPLES or 8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    timed_steps=st.lists(st.tuples(st.sampled_from(FAULTS), whens), min_size=1, max_size=6),
    heal=whens,
    delay=st.sampled_from([0.05, BUDGET + 0.05, 0.5]),  # SLOW: inside, just past, far past
    flap_period=st.sampled_from([0.01, RESET / 2, RESET]),
)
async def test_the_circuit_closes_after_faults_timed_to_the_breaker(
    faulty: RegistryServer,
    faults: FaultInjector,
    make_client: ClientFactory,
    timed_steps: list[tuple[Fault, When]],
    heal: When,
    delay: float,
    flap_period: float,
) -> None:
    faults.delay, faults.retry_after, faults.flap_period = delay, "0", flap_period

    async def apply(client: HttpRegistryClient) -> None:
        for fault, when in timed_steps:
            await _when(client, when)
            faults.set_mode(fault)
        await _when(client, heal)

    await run_sequence(faulty.url, faults, make_client, apply)


async def run_sequence(
    url: str,
    faults: FaultInjector,
    make_client: ClientFactory,
    apply: Callable[[HttpRegistryClient], Awaitable[None]],
) -> None:
    """Checks at RATE while ``apply`` drives the faults; then healed, the circuit must close."""
    faults.set_mode(Fault.OK)
    faults.max_concurrent = 0
    client = make_client(
        url,
        budget=BUDGET,
        request_timeout=RESET,
        retries=2,
        backoff_base=0.01,
        backoff_max=0.05,
        batch_max=4,
        cache_size=0,  # every check asks the registry
        max_connections=MAX_CONNECTIONS,
        breaker_failure_threshold=3,
        breaker_reset_timeout=RESET,
    )
    loop = asyncio.get_running_loop()
    outcomes: list[object] = []
    running = True

    async def one(imei: str) -> None:
        try:
            outcomes.append(await client.check(imei))
        except Exception as exc:
            outcomes.append(exc)

    async def load() -> None:
        tasks: set[asyncio.Task[None]] = set()
        start, n = loop.time(), 0
        while running and n < 3000:
            n += 1
            task = loop.create_task(one(f"35209900{n:06d}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, start + n / RATE - loop.time()))
        await asyncio.gather(*tasks)

    driver = loop.create_task(load())
    try:
        await apply(client)
    finally:
        faults.set_mode(Fault.OK)
        running = False
        await driver
    # A probe sent just before healing may hang until its budget runs out and reopen the
    # circuit then; one reset interval later the next check is the probe that closes it.
    await asyncio.sleep(BUDGET + RESET + SLACK)
    verdict = await client.check("35332011150007")
    assert verdict.imei == "35332011150007"
    assert client.breaker.state is BreakerState.CLOSED

    assert outcomes and all(type(o) in (RegistryVerdict, RegistryUnavailable) for o in outcomes)
    assert faults.max_concurrent <= MAX_CONNECTIONS
    await wait_until(lambda: not client._tasks, timeout=RESET + 1.0)  # every round trip ended
    assert not client._inflight and not client._pending
    await client.close()
