"""``make compile``: build the modules of ``eir_compiled.modules`` with mypyc into ``build/mypyc``.

The build goes to a staging directory that replaces ``build/mypyc`` only once it is complete, and
the old manifest is removed first: a failed build leaves no build, never a half or an old one.
The manifest lists each compiled module's file, mypyc's shared library and the SHA-256 of every
source the build read: the compiled modules and, transitively, the project modules they import.

Run: ``.venv/bin/python -m eir_compiled.build [--opt-level N]`` (needs a C compiler and the
Python headers; mypyc comes with mypy, in the ``test`` and ``compile`` extras).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

from eir_compiled.finder import BUILD_DIR, MANIFEST_NAME, ROOT, source_digest
from eir_compiled.modules import COMPILED_MODULES

PROJECT_PACKAGES = ("diameter", "gateway", "registry_client")
GROUP = "eir_compiled"  # mypyc's shared library is named GROUP + "__mypyc"
CANNOT_BUILD = 69  # EX_UNAVAILABLE: this machine lacks a tool; make test then runs pure Python


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, module: str) -> set[str]:
    """Project modules ``path`` (module ``module``) imports, packages and submodules alike."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PROJECT_PACKAGES}


def sources_read(modules: list[str]) -> list[Path]:
    """Every project source the modules depend on: themselves, what they import (transitively)
    and the packages on the way. mypyc inlines the ``Final`` constants of those it reads."""
    seen: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if prefix in seen:
                continue
            path = module_file(prefix)
            if path is None:  # a name imported from a module, not a module
                continue
            seen[prefix] = path
            pending.extend(_imported(path, prefix))
    return sorted(seen.values())


def build(opt_level: str) -> dict[str, object]:
    # Imported here: a machine without the compile extra still runs everything else.
    from mypyc.build import mypycify
    from setuptools import Distribution

    names = [row.module for row in COMPILED_MODULES]
    missing = [name for name in names if module_file(name) is None]
    if missing:
        raise SystemExit(f"eir_compiled/modules.py lists modules with no source: {missing}")
    staging = BUILD_DIR.with_name("mypyc.staging")
    temp = BUILD_DIR.with_name("mypyc.temp")
    (BUILD_DIR / MANIFEST_NAME).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    os.chdir(ROOT)  # mypyc names modules by their path relative to the working directory
    sources = [str(module_file(name).relative_to(ROOT)) for name in names]  # type: ignore[union-attr]
    extensions = mypycify(
        sources, opt_level=opt_level, group_name=GROUP, target_dir=str(temp), multi_file=True
    )
    distribution = Distribution({"name": "eir-compiled", "ext_modules": extensions})
    command = distribution.get_command_obj("build_ext")
    command.build_lib = str(staging)
    command.build_temp = str(temp)
    command.parallel = os.cpu_count() or 1
    distribution.run_command("build_ext")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = {name: str(Path(*name.split(".")).with_suffix(suffix)) for name in names}
    built[f"{GROUP}__mypyc"] = f"{GROUP}__mypyc{suffix}"
    for relative in built.values():
        if not (staging / relative).is_file():
            raise SystemExit(f"mypyc produced no {relative}")
    manifest: dict[str, object] = {
        "ext_suffix": suffix,
        "python": sys.version.split()[0],
        "library": f"{GROUP}__mypyc",
        "modules": built,
        "sources": {
            str(path.relative_to(ROOT)): source_digest(path) for path in sources_read(names)
        },
    }
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    staging.rename(BUILD_DIR)
    shutil.rmtree(temp, ignore_errors=True)
    return manifest


def missing_tools() -> str | None:
    """What this machine lacks to build (mypyc, a C compiler, the Python headers), or None."""
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed (pip install -e '.[compile]')"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}; Debian: apt-get install gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Debian: apt-get install python3-dev)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opt-level", default="3", choices=("0", "1", "2", "3"))
    args = parser.parse_args(argv)
    lacking = missing_tools()
    if lacking is not None:
        print(f"cannot build the compiled modules: {lacking}", file=sys.stderr)
        return CANNOT_BUILD
    started = time.monotonic()
    cpu = time.process_time()
    manifest = build(args.opt_level)
    children = os.times()
    print(
        f"compiled {len(COMPILED_MODULES)} modules into {BUILD_DIR} "
        f"({len(manifest['sources'])} sources guarded) in {time.monotonic() - started:.1f} s "  # type: ignore[arg-type]
        f"(CPU: {time.process_time() - cpu + children.children_user:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
