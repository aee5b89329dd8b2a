"""The duplicate cache split into shards: bounds, per-shard oldest-first eviction and expiry."""

from __future__ import annotations

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
