"""bench/instructions.py's measured processes run the build their parent names, or fail."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from eir_compiled import finder
from tests.bench_modules import BENCH, load

instructions = load("instructions")


def _child(work: Path, compiled: bool, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = work / "server.pickle"
    with open(path, "wb") as f:
        pickle.dump(instructions.requests("server", 3), f)
    command = [sys.executable, str(BENCH / "instructions.py"), "--child", "server", str(path)]
    if compiled:
        command.append("--compiled")
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_a_child_runs_the_build_its_parent_named(tmp_path: Path) -> None:
    compiled = finder.status() == finder.COMPILED
    done = _child(tmp_path, compiled, instructions.build_env(compiled))
    assert done.returncode == 0, done.stderr


def test_a_child_that_would_measure_the_other_build_fails(tmp_path: Path) -> None:
    # The parent named one build, the child's import chose the other (a source edited between
    # the runs, an environment changed): the count would be labelled wrongly, so it fails.
    cases = [(True, {finder.PURE_ENV: "1"})]
    if finder.status() == finder.COMPILED:
        cases.append((False, {finder.PURE_ENV: ""}))
    for named_compiled, env in cases:
        done = _child(tmp_path, named_compiled, env)
        assert done.returncode != 0
        assert "build its parent named" in done.stderr
