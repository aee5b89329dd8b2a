"""Coverage-guided fuzzing of the gateway's receive path with atheris (libFuzzer).

    .venv/bin/python -m tests.fuzz.run --seconds 600          # `make fuzz`
    .venv/bin/python -m tests.fuzz.run --runs 3000 --seconds 20 --corpus DIR --artifacts DIR

The target is ``tests.fuzz.harness.Harness.run`` (framing, decoding, validation, the peer state
machine and the S13 handler), with the ``diameter``, ``gateway`` and ``registry_client``
packages instrumented for coverage. The corpus directory is seeded from ``tests.fuzz.seeds``
and grows with the inputs that found new coverage; a crashing input is written to the artifacts
directory (``crash-<sha1>``) and the run stops. The fuzzer runs in a child process; this one
prints its figures (executions, rate, coverage, corpus, crashes) and exits 1 on a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_PULSE = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")


def child(args: argparse.Namespace) -> None:
    """Run libFuzzer in this process (never returns)."""
    import atheris

    with atheris.instrument_imports(include=["diameter", "gateway", "registry_client"]):
        from tests.fuzz import seeds
        from tests.fuzz.harness import Harness

    corpus = Path(args.corpus)
    seeds.write(corpus)
    harness = Harness()
    libfuzzer = [
        sys.argv[0],
        f"-max_total_time={int(args.seconds)}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={Path(args.artifacts).resolve()}/",
        "-print_final_stats=1",
        "-timeout=10",
        "-rss_limit_mb=2048",
    ]
    if args.runs:
        libfuzzer.append(f"-runs={args.runs}")
    atheris.Setup([*libfuzzer, str(corpus)], harness.run)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="time budget (default 600)")
    parser.add_argument("--runs", type=int, default=0, help="stop after this many inputs")
    parser.add_argument("--corpus", default=str(ROOT / "var" / "fuzz" / "corpus"))
    parser.add_argument("--artifacts", default=str(ROOT / "var" / "fuzz" / "artifacts"))
    parser.add_argument("--max-len", type=int, default=4096, help="largest input, octets")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 2
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    command = [sys.executable, "-m", "tests.fuzz.run", "--child", *(argv or sys.argv[1:])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The child stops on its own at max_total_time; the margin covers start-up.
    process = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=args.seconds + 300,
    )
    output = process.stderr
    stats = {name: int(value) for name, value in _STAT.findall(output)}
    pulses = _PULSE.findall(output)
    cov, ft, corp = (int(x) for x in pulses[-1]) if pulses else (0, 0, 0)
    crashes = sorted(str(p) for p in set(artifacts.iterdir()) - before)
    figures = {
        "executions": stats.get("number_of_executed_units", 0),
        "executions_per_second": stats.get("average_exec_per_sec", 0),
        "coverage_edges": cov,
        "coverage_features": ft,
        "corpus_inputs": corp,
        "new_inputs": stats.get("new_units_added", 0),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "crashes": crashes,
        "exit_status": process.returncode,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    if process.returncode != 0:
        sys.stderr.write(output[-6000:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
