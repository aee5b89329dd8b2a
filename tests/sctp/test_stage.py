"""The SCTP stage: every test of ``tests/sctp/guest`` run in a real kernel with SCTP.

The build and test machines' kernel has no SCTP. ``vm/build.sh`` makes a guest from Debian's
stock kernel (sctp module) and a busybox initramfs; ``vm/run.sh`` boots it under QEMU with the
host's / shared read-only, so the same Python, virtualenv and repository run inside. The guest
boots ONCE for the whole stage (Python under emulation is slow to start): one pytest run inside
it writes a JUnit report to a shared directory, and each guest test becomes one test here.

Skipped, with the reason, where QEMU or the built guest is missing (``.ci/run`` installs and
builds both; locally: ``tests/sctp/vm/build.sh --fetch``). ``EIR_SCTP_GUEST_ARGS`` adds pytest
arguments to the guest's run (``-k freediameter`` while working on one test); the guest's
console, pytest output and JUnit report stay in ``.cache/sctp-stage/``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GUEST_TESTS = HERE / "guest"
VM = HERE / "vm"
VM_DIR = Path(os.environ.get("EIR_SCTP_VM_DIR", REPO / ".cache" / "sctp-vm"))
BOOT_TIMEOUT = 1500  # seconds for the whole guest run (qemu is killed past it)


def guest_tests() -> list[str]:
    """``module::function`` of every test function in ``guest/`` (read, not imported)."""
    names = []
    for path in sorted(GUEST_TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                names.append(f"{path.stem}::{node.name}")
    return names


@dataclass
class Outcome:
    name: str  # guest test id, e.g. test_transport::test_x[uvloop]
    status: str  # passed | failed | skipped
    detail: str
    seconds: float


@dataclass
class GuestRun:
    outcomes: list[Outcome]
    log: str

    def of(self, test: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.name == test or o.name.startswith(test + "[")]


def _why_not() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
    build = subprocess.run(
        ["sh", str(VM / "build.sh"), str(VM_DIR)], capture_output=True, text=True, timeout=300
    )
    if build.returncode == 3:
        return build.stderr.strip() or "the SCTP guest cannot be built"
    if build.returncode != 0:
        pytest.fail(f"tests/sctp/vm/build.sh failed:\n{build.stdout}\n{build.stderr}")
    return None


def _read_junit(path: Path) -> list[Outcome]:
    outcomes = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = f"{module}::{case.get('name')}"
        status, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                status = "skipped" if tag == "skipped" else "failed"
                detail = f"{element.get('message', '')}\n{element.text or ''}".strip()
                break
        outcomes.append(Outcome(name, status, detail, float(case.get("time", 0))))
    return outcomes


@pytest.fixture(scope="module")
def guest_run() -> Iterator[GuestRun]:
    reason = _why_not()
    if reason is not None:
        pytest.skip(f"SCTP stage: {reason}")
    # Shared read-write with the guest, inside the repository (see vm/run.sh); kept after the run
    # with the guest's console, pytest output and JUnit report for whoever needs to look.
    work = REPO / ".cache" / "sctp-stage"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report = work / "junit.xml"
    # Only the plugins the guest tests use (the others' imports cost minutes under emulation);
    # their temporary files in the guest's tmpfs (SQLite's WAL needs shared memory, which 9p
    # cannot map). Bytecode is cached in that tmpfs too (the repository is read-only there): each
    # process the tests start (gateways, observation writers) would otherwise compile every module
    # it imports under emulation, which took a writer past its 30 s start-up on a loaded host.
    command = (
        f"cd {REPO} && EIR_SCTP_GUEST=1 PYTHONPYCACHEPREFIX=/tmp/pycache "
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "
        f"{sys.executable} -m pytest -p asyncio -p timeout -p no:cacheprovider -q -rs "
        f"--durations=15 --junitxml={report} --basetemp=/tmp/pytest {GUEST_TESTS} "
        f"{os.environ.get('EIR_SCTP_GUEST_ARGS', '')} > {work}/pytest.txt 2>&1"
    )
    env = {**os.environ, "EIR_SCTP_VM_DIR": str(VM_DIR), "VM_TIMEOUT": str(BOOT_TIMEOUT)}
    done = subprocess.run(
        ["sh", str(VM / "run.sh"), str(work), command],
        capture_output=True,
        text=True,
        env=env,
        timeout=BOOT_TIMEOUT + 60,
    )
    console = f"{done.stdout}\n{done.stderr}"
    (work / "console.txt").write_text(console)
    log = f"--- guest console (exit {done.returncode}; all of it in {work})\n{console[-20000:]}"
    if not report.exists():
        pytest.fail(f"the SCTP guest wrote no test report\n{log}")
    yield GuestRun(_read_junit(report), log)


@pytest.mark.timeout(BOOT_TIMEOUT + 120)
@pytest.mark.parametrize("test", guest_tests())
def test_in_sctp_guest(guest_run: GuestRun, test: str) -> None:
    """One guest test (on both event loops where it is async) passed inside the guest."""
    outcomes = guest_run.of(test)
    if not outcomes:
        pytest.fail(f"{test} did not run in the guest\n{guest_run.log}")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        pytest.fail("\n\n".join(f"{o.name} failed in the guest:\n{o.detail}" for o in failed))
    if all(o.status == "skipped" for o in outcomes):
        pytest.skip("; ".join(sorted({o.detail.splitlines()[0] for o in outcomes})))
