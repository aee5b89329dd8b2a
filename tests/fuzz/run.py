"""Coverage-guided fuzzing of the gateway's receive path with atheris (libFuzzer).

    .venv/bin/python -m tests.fuzz.run --seconds 600          # `make fuzz`
    .venv/bin/python -m tests.fuzz.run --target http2 --runs 3000 --seconds 20 --corpus DIR

Targets (``--target``, default ``diameter``):

* ``diameter``: ``tests.fuzz.harness.Harness.run`` (framing, decoding, validation, the peer
  state machine and the S13 handler), seeded from ``tests.fuzz.seeds``;
* ``http2``, ``hpack``, ``query``: N5g-eir's HTTP/2 session with the GetEquipmentStatus handler,
  the HPACK decoder against the ``hpack`` distribution's, the request's ``:path``
  (``tests.fuzz.n5g_harness``);
* ``api``: what the provisioning API reads from a client (``tests.fuzz.api_harness``);
* ``oauth2``: N5g-eir's access token verifier on any ``Authorization`` value;
* ``resp``: the RESP2 reader of the Redis connection against hiredis's
  (``tests.fuzz.resp_harness``);

the last six seeded from ``tests.fuzz.n5g_seeds``. The ``diameter``, ``gateway`` and
``registry_client`` packages are instrumented for coverage, on pure Python (``EIR_PURE_PYTHON``:
coverage of a compiled module is not seen; ``--compiled`` fuzzes the compiled build anyway).
The corpus directory (one per target: the default is ``var/fuzz/TARGET/corpus``) is seeded and
grows with the inputs that found new coverage; a crashing input is written to the artifacts
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
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
TARGETS = ("diameter", "http2", "hpack", "query", "api", "oauth2", "resp")
_PULSE = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")


def child(args: argparse.Namespace) -> None:
    """Run libFuzzer in this process (never returns)."""
    import atheris

    with atheris.instrument_imports(include=["diameter", "gateway", "registry_client"]):
        from tests.fuzz import n5g_seeds, seeds
        from tests.fuzz.api_harness import ApiHarness
        from tests.fuzz.harness import Harness
        from tests.fuzz.n5g_harness import (
            HpackHarness,
            Http2Harness,
            OAuth2Harness,
            QueryHarness,
        )
        from tests.fuzz.resp_harness import RespHarness

    corpus = Path(args.corpus)
    harness: Any
    if args.target == "diameter":
        seeds.write(corpus)
        harness = Harness()
    else:
        corpus.mkdir(parents=True, exist_ok=True)
        for name, data in n5g_seeds.SEEDS[args.target]().items():
            (corpus / name).write_bytes(data)
        harness = {"http2": Http2Harness, "hpack": HpackHarness, "query": QueryHarness,
                   "api": ApiHarness, "oauth2": OAuth2Harness,
                   "resp": RespHarness}[args.target]()
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
    parser.add_argument("--target", default="diameter", choices=TARGETS)
    parser.add_argument("--corpus", help="default var/fuzz/corpus (diameter), "
                                         "var/fuzz/TARGET/corpus (the others)")
    parser.add_argument("--artifacts", help="default var/fuzz/artifacts, var/fuzz/TARGET/artifacts")
    parser.add_argument("--max-len", type=int, default=4096, help="largest input, octets")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--compiled", action="store_true",
                        help="fuzz the compiled build where there is one (no coverage of its "
                             "modules: for crashes only mypyc's code has); default pure Python")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # The diameter target keeps the directories it always had.
    where = ROOT / "var" / "fuzz" / ("" if args.target == "diameter" else args.target)
    args.corpus = args.corpus or str(where / "corpus")
    args.artifacts = args.artifacts or str(where / "artifacts")
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
    command = [sys.executable, "-m", "tests.fuzz.run", "--child", *(argv or sys.argv[1:]),
               "--corpus", args.corpus, "--artifacts", args.artifacts]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not args.compiled:
        # libFuzzer sees the coverage of interpreted code only: the compiled build's modules
        # (the codec, the peer, HPACK, the HTTP/2 session...) would be blind spots.
        env["EIR_PURE_PYTHON"] = "1"
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
