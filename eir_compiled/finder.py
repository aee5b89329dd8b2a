"""Compiled modules are imported only while every source they were built from is unchanged.

``make compile`` (``eir_compiled.build``) writes the mypyc build to ``build/mypyc/`` beside the
packages, never next to the sources: Python would import a ``.so`` there before the ``.py``, so an
edited source would be shadowed by its old build. The build's manifest records the SHA-256 of
every source the compiled modules were built from (each compiled module and the project modules
it imports, whose ``Final`` constants mypyc inlines). At the first import of a project package,
``install()`` checks the manifest against the sources; only when all match does it put a finder
for the compiled modules in front of ``sys.meta_path``. Otherwise the pure Python modules are
imported, with one warning naming the changed source. Without a build nothing changes.

``EIR_PURE_PYTHON=1`` ignores a build; ``EIR_REQUIRE_COMPILED=1`` makes an unusable build an
import error (CI: the compiled run must really be compiled).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
import warnings
from collections.abc import Collection, Mapping, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build" / "mypyc"
MANIFEST_NAME = "manifest.json"
PURE_ENV = "EIR_PURE_PYTHON"
REQUIRE_ENV = "EIR_REQUIRE_COMPILED"
COMPILED = "compiled"

_status: str | None = None


class CompiledFinder(MetaPathFinder):
    """Finds the compiled modules (and mypyc's shared library) in the build directory."""

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self.paths = dict(paths)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        so = self.paths.get(fullname)
        if so is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(so))
        return importlib.util.spec_from_file_location(fullname, so, loader=loader)


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unusable(
    manifest: Mapping[str, object], root: Path, build_dir: Path, expected: Collection[str]
) -> str | None:
    """Why the build cannot be used, or None when it was built for this Python, from exactly the
    ``expected`` modules, and every source it read is unchanged."""
    if manifest.get("ext_suffix") != sysconfig.get_config_var("EXT_SUFFIX"):
        return f"built for another Python ({manifest.get('ext_suffix')})"
    modules, sources = manifest.get("modules"), manifest.get("sources")
    if not isinstance(modules, dict) or not isinstance(sources, dict):
        return "its manifest is malformed"
    if set(modules) - {manifest.get("library")} != set(expected):
        return "eir_compiled/modules.py lists other modules than were built"
    for relative, digest in sources.items():
        path = root / relative
        if not path.is_file() or source_digest(path) != digest:
            return f"{relative} changed since it was built"
    for relative in modules.values():
        if not (build_dir / relative).is_file():
            return f"{relative} is missing"
    return None


def finder_for(root: Path, build_dir: Path, expected: Collection[str]) -> CompiledFinder | str:
    """A finder for the build in ``build_dir``, or why there is none."""
    manifest_path = build_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"no compiled build in {build_dir}"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return f"its manifest is unreadable ({exc})"
    if not isinstance(manifest, dict):
        return "its manifest is malformed"
    reason = unusable(manifest, root, build_dir, expected)
    if reason is not None:
        return reason
    return CompiledFinder({name: build_dir / rel for name, rel in manifest["modules"].items()})


def choose(
    root: Path, build_dir: Path, expected: Collection[str], env: Mapping[str, str]
) -> CompiledFinder | str:
    """The finder to install, or the reason pure Python runs (warned about when a build is
    there but no longer matches; an import error under ``EIR_REQUIRE_COMPILED``)."""
    if env.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} set"
    found = finder_for(root, build_dir, expected)
    if isinstance(found, CompiledFinder):
        return found
    if env.get(REQUIRE_ENV, "") not in ("", "0"):
        raise ImportError(f"{REQUIRE_ENV} is set but the compiled build is unusable: {found}")
    if (build_dir / MANIFEST_NAME).is_file():
        warnings.warn(
            f"compiled build in {build_dir} not used: {found}; running pure Python "
            "(`make compile` rebuilds it)",
            RuntimeWarning,
            stacklevel=3,
        )
    return found


def install() -> str:
    """Put the compiled modules on the import path if they can be used; return what runs:
    "compiled", or "pure Python" and why. Called by each project package; checks once."""
    global _status
    if _status is None:
        from eir_compiled.modules import COMPILED_MODULES

        found = choose(ROOT, BUILD_DIR, [row.module for row in COMPILED_MODULES], os.environ)
        if isinstance(found, CompiledFinder):
            sys.meta_path.insert(0, found)
            _status = COMPILED
        else:
            _status = f"pure Python ({found})"
    return _status


def status() -> str:
    """What runs: "compiled", or "pure Python" and why (for the gateway's start-up line)."""
    return install()
