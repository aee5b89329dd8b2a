"""Classification benchmark: checks/s on the synchronous path, and a 10-million-entry list.

    .venv/bin/python bench/classify.py [--entries 10000000] [--checks 200000] [--db PATH]

Method (printed with the results):
1. Throughput: a Classifier with the IMEIDB TAC table (27k TACs; the sample file when absent),
   operator lists of 100k exact IMEIs plus ranges/TACs/pairs, and an in-memory registry whose
   cache holds a verdict for every IMEI checked (cache-warm, so ``classify_sync`` answers every
   check without a task). Also without a registry, and the async ``classify`` on the same hits.
   Every check is classified afresh (``decision_cache_size=0``) except in the run labelled
   "decision cache", where the IMEIs, cycled, are re-checks of known handsets.
2. Large list: ``--entries`` exact IMEIs written to SQLite (kept at --db for re-runs), then
   ``ListStore.load`` timed, its memory measured with tracemalloc (current and peak) and as the
   RSS delta, and ``ListSnapshot.match`` timed on hits and misses.
Bounded loops only; prints one ``name value unit`` line per result.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from gateway.classify import Classifier, Decision
from gateway.lists import ListColour, ListStore, OperatorLists, make_entry
from gateway.policy import Policy
from gateway.tac import TacDatabase, parse_tac_file
from registry_client.model import RegistryStatus, RegistryVerdict, VerdictOrigin

REPO = Path(__file__).resolve().parents[1]
IMEIDB = Path("/work/shared/data/imeidb/imeidb.csv")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def result(name: str, value: float, unit: str) -> None:
    print(f"{name:<40} {value:>14.1f} {unit}", flush=True)


class WarmRegistry:
    """Every IMEI's verdict already cached: the VerdictSource cache-hit path."""

    def __init__(self, verdicts: dict[str, RegistryVerdict]) -> None:
        self.verdicts = verdicts

    def cached(self, imei: str) -> RegistryVerdict | None:
        return self.verdicts.get(imei)

    async def check(self, imei: str) -> RegistryVerdict:
        return self.verdicts[imei]

    async def close(self) -> None:
        pass


def throughput(checks: int, workdir: Path) -> None:
    source = IMEIDB if IMEIDB.exists() else REPO / "config" / "tac-sample.txt"
    records, _ = parse_tac_file(source, skip_bad=True)
    tacs = TacDatabase.from_records(records)
    tac_list = sorted(records)
    rng = random.Random(1)
    store = ListStore(workdir / "lists-100k.sqlite")
    store.bulk_add_imeis(
        ListColour.BLACK, (rng.randrange(10**13, 10**14) for _ in range(100_000)), "stolen"
    )
    store.add_many([
        make_entry("grey", "range", "35332011900000-35332011909999"),
        make_entry("black", "tac", "35000001"),
        make_entry("white", "pair", "01234500000017", "001010000000001"),
    ])
    lists = OperatorLists(store)
    lists.reload()
    imeis = [f"{rng.choice(tac_list):08d}{rng.randrange(10**6):06d}" for _ in range(10_000)]
    imeis += [f"{rng.randrange(10**8):08d}{rng.randrange(10**6):06d}" for _ in range(2_000)]
    verdicts = {
        i: RegistryVerdict(i, i[:8], RegistryStatus.MANUFACTURED, "x", "declared_range", (),
                           VerdictOrigin.CACHE, time.time())
        for i in imeis
    }
    imsi = "001010000000001"
    print(f"# throughput: {len(tacs)} TACs ({source.name}), lists {lists.snapshot.counts()}, "
          f"{len(imeis)} distinct IMEIs cycled, {checks} checks per run")
    runs = (
        ("no registry", None, 0),
        ("registry cache-warm", WarmRegistry(verdicts), 0),
        ("registry cache-warm, decision cache", WarmRegistry(verdicts), 65_536),
    )
    for label, registry, cache_size in runs:
        c = Classifier(Policy(), tacs, lists, registry, decision_cache_size=cache_size)
        n = len(imeis)
        start = time.perf_counter()
        for k in range(checks):
            d = c.classify_sync(imeis[k % n], imsi)
        elapsed = time.perf_counter() - start
        assert isinstance(d, Decision)
        result(f"classify_sync, {label}", checks / elapsed, "checks/s")
        result(f"classify_sync, {label}, per check", elapsed / checks * 1e6, "us")

    c = Classifier(Policy(), tacs, lists, WarmRegistry(verdicts), decision_cache_size=0)

    async def run_async(count: int) -> float:
        n = len(imeis)
        start = time.perf_counter()
        for k in range(count):
            await c.classify(imeis[k % n], imsi)
        return time.perf_counter() - start

    count = checks // 2
    result("async classify, registry cache-warm", count / asyncio.run(run_async(count)),
           "checks/s")
    store.close()


def large_list(entries: int, db: Path) -> None:
    print(f"# large list: {entries} exact IMEIs in {db}")
    store = ListStore(db)
    have = sum(1 for _ in store.entries(ListColour.BLACK, limit=1))
    counts = store.load().counts() if have else {}
    if counts.get("black.imei", 0) != entries:
        store.close()
        db.unlink(missing_ok=True)
        store = ListStore(db)
        rng = random.Random(10)
        step = 10**14 // entries
        start = time.perf_counter()
        store.bulk_add_imeis(  # ascending, one per stride: B-tree appends
            ListColour.BLACK, (k * step + rng.randrange(step) for k in range(entries)), "bulk"
        )
        result("write to SQLite", time.perf_counter() - start, "s")
    gc.collect()
    rss0 = rss_bytes()
    tracemalloc.start()
    start = time.perf_counter()
    snap = store.load()
    load_s = time.perf_counter() - start
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    rss1 = rss_bytes()
    result("load (stream into array('Q'))", load_s, "s")
    result("snapshot memory (tracemalloc current)", current / 2**20, "MiB")
    result("load peak (tracemalloc peak)", peak / 2**20, "MiB")
    result("RSS delta after load", (rss1 - rss0) / 2**20, "MiB")
    result("bytes per entry (tracemalloc)", current / entries, "B")
    # a second load without tracemalloc overhead, for the pure time
    start = time.perf_counter()
    snap = store.load()
    result("load (no tracemalloc)", time.perf_counter() - start, "s")

    # every 50th stored IMEI (at most 100k) as hits, random IMEIs as (mostly) misses
    hits = [e.first for k, e in enumerate(store.entries(ListColour.BLACK)) if k % 50 == 0]
    hits = hits[:100_000]
    rng = random.Random(3)
    misses = [rng.randrange(10**14) for _ in range(len(hits))]
    for label, probes in (("hit", hits), ("miss", misses)):
        found = 0
        start = time.perf_counter()
        for v in probes:
            if snap.match(v):
                found += 1
        elapsed = time.perf_counter() - start
        result(f"match() on {entries}-entry list, {label}", elapsed / len(probes) * 1e9, "ns")
        if label == "hit":
            assert found == len(probes), found
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--checks", type=int, default=200_000)
    parser.add_argument("--db", type=Path, default=REPO / "var" / "bench-lists.sqlite")
    args = parser.parse_args()
    print(f"# Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {platform.platform()}")
    with tempfile.TemporaryDirectory() as tmp:
        throughput(args.checks, Path(tmp))
    large_list(args.entries, args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
