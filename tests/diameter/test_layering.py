"""STYLE.md §1: ``diameter/`` imports neither asyncio nor socket nor time outside its transport
adapter, and never the upper layers (DESIGN.md §1: imports point one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "diameter"
FORBIDDEN = {"asyncio", "socket", "time", "selectors", "threading"}
UPPER = {"gateway", "registry_client"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _is_transport(path: Path) -> bool:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].startswith("transport")


def test_there_are_modules_to_check() -> None:
    names = {str(p.relative_to(PACKAGE)) for p in _modules()}
    assert {"peer.py", "watchdog.py", "codec.py", "transport/connection.py"} <= names
    assert any(_is_transport(p) for p in _modules())
    assert not _is_transport(PACKAGE / "peer.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_sans_io_outside_transport(path: Path) -> None:
    imported = _imported(path)
    assert not imported & UPPER, f"{path.name} imports an upper layer"
    if not _is_transport(path):
        assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"


def test_detector_sees_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom asyncio import sleep\nimport socket as s\n")
    assert _imported(sample) >= {"time", "asyncio", "socket"}


REGISTRY_CLIENT = PACKAGE.parent / "registry_client"


@pytest.mark.parametrize(
    "path", sorted(REGISTRY_CLIENT.rglob("*.py")), ids=lambda p: str(p.relative_to(REGISTRY_CLIENT))
)
def test_registry_client_never_imports_the_gateway(path: Path) -> None:
    # DESIGN.md §1: gateway -> registry_client, never the reverse (nor registry_client -> diameter).
    assert not _imported(path) & {"gateway", "diameter"}, f"{path.name} imports an upper layer"
