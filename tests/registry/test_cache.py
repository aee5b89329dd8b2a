"""VerdictCache against a plain model: LRU bound, TTL expiry, events (hypothesis)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from registry_client.cache import VerdictCache
from registry_client.model import RegistryStatus, RegistryVerdict
from tests.registry.conftest import FakeClock

KEYS = [f"3520990000000{n}" for n in range(6)]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from([0.0, 1.0, 5.0])),
        st.tuples(st.just("get"), st.sampled_from(KEYS), st.just(0.0)),
        st.tuples(st.just("tick"), st.just(""), st.sampled_from([0.5, 2.0])),
    ),
    max_size=60,
)


@given(st.integers(0, 4), OPS)
def test_cache_matches_model(size: int, ops: list[tuple[str, str, float]]) -> None:
    clock = FakeClock()
    cache = VerdictCache(size, clock)
    events: Counter[str] = Counter()
    cache.on_event = lambda event: events.update([event])
    model: dict[str, float] = {}  # key -> expiry, in LRU order (oldest first)
    for op, key, arg in ops:
        if op == "tick":
            clock.advance(arg)
        elif op == "put":
            if arg > 0 and size > 0:
                verdict = RegistryVerdict(key, key[:8], RegistryStatus.MANUFACTURED)
                cache.put(key, verdict, arg)
                model.pop(key, None)
                model[key] = clock.now + arg
                while len(model) > size:
                    del model[next(iter(model))]
        else:
            entry = cache.get(key)
            expected = key in model and model[key] > clock.now
            assert (entry is not None) == expected
            if key in model and not expected:
                del model[key]
            elif expected:
                model[key] = model.pop(key)  # touched: most recent
        assert len(cache) == len(model) <= size
    assert events["evict"] <= events["store"]
