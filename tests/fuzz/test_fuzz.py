"""The fuzz target in the test suite: every seed and every stored regression input passes the
harness in-process, and a short coverage-guided run (atheris, bounded in inputs and seconds)
finds nothing. Longer runs: ``make fuzz`` (tests/fuzz/run.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz import seeds
from tests.fuzz.harness import Harness

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = Path(__file__).with_name("regressions")


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


@pytest.mark.parametrize("name", sorted(seeds.seeds()))
def test_seed_passes_the_harness(harness: Harness, name: str) -> None:
    harness.run(seeds.seeds()[name])


@pytest.mark.parametrize("path", sorted(REGRESSIONS.iterdir()), ids=lambda p: p.name)
def test_regression_input_passes_the_harness(harness: Harness, path: Path) -> None:
    harness.run(path.read_bytes())


def test_harness_catches_a_broken_answer(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness is a test too: an S13 handler that fails must be a finding, not a pass.
    def broken(request: object, peer: object) -> bytes:
        raise RuntimeError("broken handler")

    monkeypatch.setitem(harness.application.handlers, 324, broken)  # type: ignore[index]
    with pytest.raises(RuntimeError):
        harness.run(seeds.seeds()["micr-white"])


def test_short_coverage_guided_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (test extra) is not installed")
    command = [
        sys.executable, "-m", "tests.fuzz.run", "--json", "--runs", "800", "--seconds", "20",
        "--corpus", str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "artifacts"),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["crashes"] == [] and figures["executions"] > 0
    assert figures["coverage_edges"] > 0
