"""Random sequences of registry faults under steady load, then healing: the circuit must close.

A real HTTP registry on loopback (the reference server with a fault injector) goes through a
hypothesis-chosen sequence of misbehaviours while checks arrive at about 300/s; then it answers
right again. Whatever happened before, one reset interval after healing (plus the budget of a
probe that may have been hanging when it healed) the next check must be admitted, get its verdict
and close the circuit. Along the way: every check ends with a verdict or RegistryUnavailable, the
registry never serves more than ``max_connections`` requests at once, and nothing is left over.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry_client.breaker import BreakerState
from registry_client.faults import Fault, FaultInjector
from registry_client.model import RegistryUnavailable, RegistryVerdict
from registry_client.server import RegistryServer
from tests.registry.conftest import ClientFactory, wait_until

BUDGET = 0.2
RESET = 0.3
MAX_CONNECTIONS = 8
RATE = 300.0  # checks per second
SLACK = 0.1  # timers firing late on a loaded machine

steps = st.lists(
    st.tuples(st.sampled_from([f for f in Fault if f is not Fault.OK]), st.sampled_from([0.02, 0.1, 0.3])),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=12,
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
    faults.set_mode(Fault.OK)
    faults.delay, faults.retry_after, faults.flap_period = delay, retry_after, flap_period
    faults.max_concurrent = 0
    client = make_client(
        faulty.url,
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
    for fault, seconds in steps:
        faults.set_mode(fault)
        await asyncio.sleep(seconds)
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
