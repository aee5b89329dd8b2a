"""ShardedFifo: bounded, oldest out, every entry kept until dropped."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given
from hypothesis import strategies as st

from registry_client.bounded import ShardedFifo


def test_one_shard_is_exact_first_in_first_out() -> None:
    fifo: ShardedFifo[str, int] = ShardedFifo(3)
    for i, key in enumerate("abcd"):
        fifo.put(key, i)
    assert [fifo.get(k) for k in "abcd"] == [None, 1, 2, 3] and len(fifo) == 3
    fifo.put("b", 10)  # a replaced key keeps its place: it is still the oldest
    fifo.put("e", 4)
    assert fifo.get("b") is None and fifo.get("c") == 2 and len(fifo) == 3
    assert fifo.pop("c") == 2 and fifo.pop("c") is None and len(fifo) == 2


def test_zero_capacity_keeps_nothing() -> None:
    fifo: ShardedFifo[int, int] = ShardedFifo(0)
    fifo.put(1, 1)
    assert fifo.get(1) is None and len(fifo) == 0


@given(
    st.integers(1, 5_000),
    st.lists(st.tuples(st.booleans(), st.integers(0, 3_000)), max_size=3_000),
)
def test_bounded_and_agrees_with_a_model_per_shard(
    capacity: int, operations: list[tuple[bool, int]]
) -> None:
    fifo: ShardedFifo[int, int] = ShardedFifo(capacity, shard_size=64)
    shards = len(fifo._shards)
    per_shard = capacity // shards
    model: list[OrderedDict[int, int]] = [OrderedDict() for _ in range(shards)]
    for n, (put, key) in enumerate(operations):
        shard = model[hash(key) % shards]
        if put:
            fifo.put(key, n)
            if per_shard:
                if key not in shard and len(shard) >= per_shard:
                    shard.popitem(last=False)
                shard[key] = n
        else:
            assert fifo.pop(key) == shard.pop(key, None)
        assert len(fifo) == sum(len(s) for s in model) <= capacity
    for shard in model:
        for key, value in shard.items():
            assert fifo.get(key) == value
