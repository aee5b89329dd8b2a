"""The fuzz targets in the test suite: every seed and every stored regression input passes its
harness in-process, and a short coverage-guided run of each target (atheris, bounded in inputs
and seconds) finds nothing. Longer runs: ``make fuzz`` (tests/fuzz/run.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz import n5g_seeds, seeds
from tests.fuzz.api_harness import ApiHarness
from tests.fuzz.harness import Harness
from tests.fuzz.n5g_harness import HpackHarness, Http2Harness, OAuth2Harness, QueryHarness
from tests.fuzz.resp_harness import RespHarness

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = Path(__file__).with_name("regressions")
# Regression inputs of the other targets: regressions/TARGET/NAME.
N5G_REGRESSIONS = sorted(
    (target.name, path) for target in REGRESSIONS.iterdir() if target.is_dir()
    for path in target.iterdir()
)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


@pytest.mark.parametrize("name", sorted(seeds.seeds()))
def test_seed_passes_the_harness(harness: Harness, name: str) -> None:
    harness.run(seeds.seeds()[name])


@pytest.mark.parametrize("path", sorted(p for p in REGRESSIONS.iterdir() if p.is_file()),
                         ids=lambda p: p.name)
def test_regression_input_passes_the_harness(harness: Harness, path: Path) -> None:
    harness.run(path.read_bytes())


def test_harness_catches_a_broken_answer(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness is a test too: an S13 handler that fails must be a finding, not a pass.
    def broken(request: object, peer: object) -> bytes:
        raise RuntimeError("broken handler")

    monkeypatch.setitem(harness.application.handlers, 324, broken)  # type: ignore[index]
    with pytest.raises(RuntimeError):
        harness.run(seeds.seeds()["micr-white"])


@pytest.fixture(scope="module")
def n5g_harnesses() -> Iterator[dict[str, Any]]:
    http2 = Http2Harness()
    yield {"http2": http2, "hpack": HpackHarness(), "query": QueryHarness(), "api": ApiHarness(),
           "oauth2": OAuth2Harness(), "resp": RespHarness()}
    http2.close()


@pytest.mark.parametrize(
    ("target", "name"),
    [(target, name) for target, make in n5g_seeds.SEEDS.items() for name in sorted(make())],
)
def test_n5g_seed_passes_its_harness(n5g_harnesses: dict[str, Any], target: str,
                                     name: str) -> None:
    n5g_harnesses[target].run(n5g_seeds.SEEDS[target]()[name])


@pytest.mark.parametrize(("target", "path"), N5G_REGRESSIONS,
                         ids=[f"{t}-{p.name}" for t, p in N5G_REGRESSIONS])
def test_n5g_regression_input_passes_its_harness(n5g_harnesses: dict[str, Any], target: str,
                                                 path: Path) -> None:
    n5g_harnesses[target].run(path.read_bytes())


def test_http2_harness_catches_a_malformed_response(n5g_harnesses: dict[str, Any]) -> None:
    # The harness is a test too: a frame cut short in what the session sends is a finding.
    harness = n5g_harnesses["http2"]
    with pytest.raises(AssertionError):
        harness._check_output(b"\0\0\x08\x06\0\0\0\0\0" + b"1234", [])


@pytest.mark.parametrize("target", ["diameter", *n5g_seeds.SEEDS])
def test_short_coverage_guided_run(tmp_path: Path, target: str) -> None:
    pytest.importorskip("atheris", reason="atheris (test extra) is not installed")
    runs = "800" if target == "diameter" else "300"
    command = [
        sys.executable, "-m", "tests.fuzz.run", "--json", "--target", target, "--runs", runs,
        "--seconds", "20",
        "--corpus", str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "artifacts"),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["crashes"] == [] and figures["executions"] > 0
    assert figures["coverage_edges"] > 0
