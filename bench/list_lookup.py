"""The exact-IMEI look-up at 1, 10 and 100 million listed IMEIs (not a test; prints figures):
the bucket table (gateway/sorted_imeis.py) against the plain bisect it replaced, in a worker's
own array and in a mapped snapshot file (gateway/snapshot_files.py), and the whole
``ListSnapshot.match`` a check calls.

Method: ``--sizes`` IMEIs, every ``--step``-th body from 35209900000000 (bench/pg_lists.py's
list: one probe in seven finds one); 200,000 probes drawn uniformly over their span, in random
order, so every look-up lands somewhere new in the array, as a live network's IMEIs do. Each
figure is CPU time per look-up, the least of ``--passes`` passes (the figure a loaded machine
moves least). The file is written by ``SnapshotFiles.writer`` into ``--directory`` (default: a
temporary directory; ``df -h`` first: 850 MB at 100 million) and mapped as a worker maps it.

Run: ``.venv/bin/python -m eir_compiled.build && .venv/bin/python bench/list_lookup.py``
(``--sizes 1000000,10000000`` where memory is short: 100 million take 800 MB in the process
and 850 MB of page cache).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eir_compiled import finder as compiled_build  # noqa: E402
from gateway import sorted_imeis  # noqa: E402
from gateway.lists import ListColour, ListSnapshot, _Colour, _Ranges  # noqa: E402
from gateway.snapshot_files import SnapshotFiles  # noqa: E402
from gateway.sorted_imeis import SortedImeis  # noqa: E402

BASE = 35209900000000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--step", type=int, default=7)
    parser.add_argument("--probes", type=int, default=200_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--directory", help="where the snapshot file is written")
    args = parser.parse_args()
    print(f"# Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; hot modules: {compiled_build.status()}; "
          f"gateway.sorted_imeis from {sorted_imeis.__file__}")
    print("# ns of CPU per look-up (least of passes): plain bisect | bucket table, own array |"
          " bucket table, mapped file | ListSnapshot.match, mapped")
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args.step, args.probes, args.passes, args.directory)


def run(n: int, step: int, count: int, passes: int, directory: str | None) -> None:
    wall = time.perf_counter()
    values = array("Q", range(BASE, BASE + n * step, step))
    made = time.perf_counter() - wall
    wall = time.perf_counter()
    own = SortedImeis.of(values)
    built = time.perf_counter() - wall
    rng = random.Random(n)
    probes = [BASE + rng.randrange(n * step) for _ in range(count)]

    def bisect(value: int) -> bool:  # the look-up before the bucket table
        i = bisect_right(values, value) - 1
        return i >= 0 and values[i] == value

    with tempfile.TemporaryDirectory(prefix="eir-lookup-", dir=directory) as tmp:
        files = SnapshotFiles(Path(tmp), "bench")
        wall = time.perf_counter()
        with files.writer(1, "black") as out:
            values.tofile(out)
        written = time.perf_counter() - wall
        wall = time.perf_counter()
        mapped = files.open(1, "black")
        opened = time.perf_counter() - wall
        assert mapped is not None and len(mapped) == n
        size = files.path(1, "black").stat().st_size
        snapshot = ListSnapshot(1, {ListColour.BLACK: _Colour(mapped, _Ranges([]), {}, {})})

        def match(value: int) -> bool:
            return bool(snapshot.match(value))

        figures = []
        hits = set()
        for look_up in (bisect, own.contains, mapped.contains, match):
            cpu, found = min(look_ups(look_up, probes) for _ in range(passes))
            figures.append(f"{cpu / count * 1e9:,.0f}")
            hits.add(found)
        assert len(hits) == 1, hits  # all four agree
        table = len(own.starts) * own.starts.itemsize
        print(f"{n:>12,} IMEIs: {' | '.join(figures)} ns ({hits.pop():,} of {count:,} listed); "
              f"table {table / 2**20:,.1f} MiB ({table / (8 * n):.3f} of the values), "
              f"{own.buckets:,} buckets, built in {built:.2f} s (values made in {made:.1f} s); "
              f"file {size / 2**20:,.0f} MiB written in {written:.1f} s, mapped in "
              f"{opened * 1e3:.1f} ms", flush=True)


def look_ups(look_up: Callable[[int], Any], probes: list[int]) -> tuple[float, int]:
    """(CPU seconds, hits) of one pass of ``look_up`` over ``probes``."""
    hits = 0
    cpu = time.process_time()
    for p in probes:
        if look_up(p):
            hits += 1
    return time.process_time() - cpu, hits


if __name__ == "__main__":
    main()
