"""What `make run` installs is enough: the CLI and the gateway start without the test extras."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("diameter", "gateway", "registry_client", "eir_compiled")
# Import name -> distribution, for the third-party packages the product imports.
DISTRIBUTIONS = {
    "aiohttp": "aiohttp",
    "prometheus_client": "prometheus-client",
    "uvloop": "uvloop",
    "asyncio_dgram": "asyncio-dgram",
    "scapy": "scapy",
    "sctp": "pysctp",
    "hpack": "hpack",
    "cryptography": "cryptography",
    "redis": "redis",
    "asyncpg": "asyncpg",
    "mypyc": "mypy",
    "setuptools": "setuptools",
}

PROGRAM = """
import sys
for name in ("pytest", "hypothesis", "schemathesis", "mypy", "ruff", "scapy", "scapy.utils",
             "redis", "asyncpg"):
    sys.modules[name] = None  # importing it fails, as where it is not installed
from gateway.cli import build_parser
from gateway.service import Gateway
from gateway.simulator import pcap, runner
build_parser()
print("ok")
"""


def test_cli_and_gateway_import_without_test_extras_or_scapy() -> None:
    # `make run` once failed on a fresh machine: the CLI imported scapy (a test extra then) at
    # start-up through the simulate command. scapy is now imported by --pcap only.
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_every_third_party_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split(";")[0].split(">")[0].split("=")[0].strip().lower() for r in requirements}

    base = names(project["dependencies"])
    # N5g-eir OAuth2, when on; shared: with [shared] redis_url; postgresql: [state] backend;
    # compile: make compile (mypyc).
    extras = project["optional-dependencies"]
    optional = names(extras["oauth2"]) | names(extras["shared"]) | names(extras["postgresql"])
    optional |= names(extras["compile"])
    imported: dict[str, str] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for root in _imported_roots(path):
                if root not in sys.stdlib_module_names and root not in PACKAGES:
                    imported.setdefault(root, str(path.relative_to(ROOT)))
    unknown = {root: where for root, where in imported.items() if root not in DISTRIBUTIONS}
    assert not unknown, f"imports without a known distribution: {unknown}"
    missing = {
        root: where
        for root, where in imported.items()
        if DISTRIBUTIONS[root] not in base and DISTRIBUTIONS[root] not in optional
    }
    assert not missing, f"imported but not in [project] dependencies: {missing}"
