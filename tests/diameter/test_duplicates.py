"""The duplicate cache split into shards: bounds, per-shard oldest-first eviction and expiry."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from diameter.duplicates import SHARD_SIZE, DuplicateCache

HOST = "mme.example.net"


def _ignore(answer: bytes, hop_by_hop: int) -> None:
    raise AssertionError("no duplicate waits in these tests")


def test_large_cache_evicts_the_oldest_of_each_shard() -> None:
    cache = DuplicateCache(window=60.0, max_size=3 * SHARD_SIZE)
    assert len(cache._shards) == 3
    keys = [(HOST, i) for i in range(10 * SHARD_SIZE)]
    for i, key in enumerate(keys):
        assert cache.begin(key, (_ignore, i), now=i * 1e-3) == (False, None)
        cache.complete(key, b"answer", now=i * 1e-3)
        assert len(cache) <= 3 * SHARD_SIZE
    assert len(cache) == 3 * SHARD_SIZE
    for shard in range(3):
        mine = [k for k in keys if hash(k) % 3 == shard]
        for key in mine[-SHARD_SIZE:]:
            assert key in cache
        assert not any(key in cache for key in mine[:-SHARD_SIZE])


def test_small_cache_is_one_shard() -> None:
    cache = DuplicateCache(window=60.0, max_size=SHARD_SIZE)
    assert len(cache._shards) == 1
    empty = DuplicateCache(window=60.0, max_size=0)
    assert empty.begin((HOST, 1), (_ignore, 1), 0.0) == (False, None) and len(empty) == 0


def test_duplicates_answered_and_expired_in_every_shard() -> None:
    cache = DuplicateCache(window=10.0, max_size=4 * SHARD_SIZE)
    keys = [(HOST, i) for i in range(2_000)]
    for key in keys:
        cache.begin(key, (_ignore, 0), now=0.0)
        cache.complete(key, b"\x01" * 20, now=0.0)
    for hop, key in enumerate(keys):
        duplicate, replay = cache.begin(key, (_ignore, hop), now=5.0)
        assert duplicate and replay is not None
        assert int.from_bytes(replay[12:16], "big") == hop  # the duplicate's own Hop-by-Hop
    for key in keys:  # 10 s after the answer: no longer a duplicate, processed afresh
        assert cache.begin(key, (_ignore, 0), now=10.0) == (False, None)


def _model_step(
    model: list[list[object]], op: str, key: tuple[str, int], now: float, window: float,
    max_size: int,
) -> object:
    """The reference: a list oldest first of [key, answer, expires, a duplicate waits on it],
    every rule spelt out."""
    index = next((i for i, row in enumerate(model) if row[0] == key), None)
    if op == "begin":
        while model and model[0][1] is not None and model[0][2] <= now:  # type: ignore[operator]
            model.pop(0)
            index = next((i for i, row in enumerate(model) if row[0] == key), None)
        if index is not None and model[index][2] > now:  # type: ignore[operator]
            if model[index][1] is None:
                model[index][3] = True  # waits for the first copy's answer
            return (True, model[index][1])
        if index is not None:
            model.pop(index)
        model.append([key, None, float("inf"), False])
        # The oldest go, down to max_size, but for those a duplicate waits on (kept, newest).
        excess = len(model) - max_size
        for _ in range(len(model)):
            if excess <= 0:
                break
            row = model.pop(0)
            if row[3]:
                model.append(row)
            else:
                excess -= 1
        return (False, None)
    if op == "complete" and index is not None:
        model.pop(index)
        model.append([key, b"a%d" % key[1], now + window, False])
    elif op == "forget" and index is not None:
        model.pop(index)
    return None


@settings(max_examples=300, deadline=None)
@given(
    max_size=st.integers(0, 6),
    ops=st.lists(
        st.tuples(st.sampled_from(("begin", "complete", "forget")), st.integers(0, 7),
                  st.floats(0, 3)),
        max_size=60,
    ),
)
def test_one_shard_keeps_answer_order_and_expiry_like_the_model(
    max_size: int, ops: list[tuple[str, int, float]]
) -> None:
    # Requests answered in and out of order (complete() finds the entry begin() added last
    # without a look-up only while nothing moved since), evicted, forgotten, expired.
    window = 5.0
    cache = DuplicateCache(window=window, max_size=max_size)
    model: list[list[object]] = []
    now = 0.0
    keys = [(HOST, n) for n in range(8)]  # one object per key, as a request carries its own
    for op, n, step in ops:
        now += step  # the loop's clock: never backwards
        key = keys[n]
        expected = _model_step(model, op, key, now, window, max_size)
        if op == "begin":
            duplicate, replay = cache.begin(key, (_ignore_waiting, 0), now)
            assert (duplicate, replay is not None) == (expected[0], expected[1] is not None)  # type: ignore[index]
        elif op == "complete":
            cache.complete(key, b"a%d" % n, now)
        else:
            cache.forget(key)
        (shard,) = cache._shards
        # Expiry is lazy (at the next begin): compare what is live.
        live = [k for k, e in shard.entries.items() if e.answer is None or e.expires > now]
        assert live == [row[0] for row in model if row[1] is None or row[2] > now]  # type: ignore[operator]
        for k, entry in shard.entries.items():
            row = next((r for r in model if r[0] == k), None)
            if row is not None:
                assert entry.answer == row[1]


def _ignore_waiting(answer: bytes, hop_by_hop: int) -> None:
    pass  # a duplicate waiting for its first copy: delivered when that completes


def test_a_duplicate_waiting_for_its_first_copy_is_answered_whatever_came_after() -> None:
    # A first copy still being answered (a check waiting for the registry) while the cache's
    # churn reached it: evicted with the duplicate waiting on it (an MME's copy sent again on
    # another connection after a failover, T flag), its answer found no entry and the duplicate
    # was never answered. An entry that a duplicate waits on is kept until its answer.
    cache = DuplicateCache(window=60.0, max_size=4)
    first = (HOST, 1)
    delivered: list[tuple[bytes, int]] = []
    assert cache.begin(first, (_ignore, 1), 0.0) == (False, None)
    assert cache.begin(first, (lambda answer, hop: delivered.append((answer, hop)), 7),
                       0.1) == (True, None)
    for i in range(2, 20):  # others come and go meanwhile
        key = (HOST, i)
        assert cache.begin(key, (_ignore, i), 0.2) == (False, None)
        cache.complete(key, bytes(16) + b"other", 0.2)
        assert len(cache) <= 5  # the size bound, and the one entry a duplicate waits on
    answer = bytes(12) + (1).to_bytes(4, "big") + b"first's answer"
    cache.complete(first, answer, 0.3)
    assert delivered == [(bytes(12) + (7).to_bytes(4, "big") + b"first's answer", 7)]
