"""The compiled build is used only while it matches its sources (eir_compiled.finder).

A build here is a stand-in: a real extension module of the standard library copied into a build
directory under a project module's name, with a manifest as ``make compile`` writes it. What is
checked is the guard: edited sources, another Python, another module table, a missing file."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

import diameter
from eir_compiled import finder
from eir_compiled.finder import COMPILED, CompiledFinder, choose, finder_for, source_digest
from eir_compiled.modules import COMPILED_MODULES

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def _extension() -> tuple[str, Path]:
    for name in ("math", "_json", "_bisect", "_csv", "_struct"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(SUFFIX):
            return name, Path(spec.origin)
    pytest.skip("this Python has none of math, _json, _bisect, _csv, _struct as a shared library")


class Project:
    """A project root with package ``pkgx`` and module ``pkgx.<name>``, and a build of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.name, origin = _extension()
        self.module = f"pkgx.{self.name}"
        self.root, self.build = tmp_path / "root", tmp_path / "build"
        (self.root / "pkgx").mkdir(parents=True)
        (self.build / "pkgx").mkdir(parents=True)
        (self.root / "pkgx" / "__init__.py").write_text("")
        self.source = self.root / "pkgx" / f"{self.name}.py"
        self.source.write_text("VALUE = 'pure'\n")
        self.so = self.build / "pkgx" / f"{self.name}{SUFFIX}"
        shutil.copy(origin, self.so)
        self.manifest = {
            "ext_suffix": SUFFIX,
            "library": "eir_compiled__mypyc",
            "modules": {self.module: f"pkgx/{self.name}{SUFFIX}"},
            "sources": {
                f"pkgx/{self.name}.py": source_digest(self.source),
                "pkgx/__init__.py": source_digest(self.root / "pkgx" / "__init__.py"),
            },
        }
        self.write()

    def write(self) -> None:
        (self.build / finder.MANIFEST_NAME).write_text(json.dumps(self.manifest))

    def find(self, expected: list[str] | None = None) -> CompiledFinder | str:
        return finder_for(self.root, self.build, [self.module] if expected is None else expected)


def test_a_matching_build_is_imported_instead_of_the_source(tmp_path: Path) -> None:
    project = Project(tmp_path)
    found = project.find()
    assert isinstance(found, CompiledFinder)
    spec = found.find_spec(project.module)
    assert spec is not None and spec.origin == str(project.so)
    assert found.find_spec("pkgx.other") is None and found.find_spec("pkgx") is None
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    assert not hasattr(module, "VALUE")  # the extension's code ran, not the source's
    assert module.__file__ == str(project.so)


def test_an_edited_source_is_never_shadowed_by_its_old_build(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.source.write_text("VALUE = 'edited'\n")
    assert project.find() == f"pkgx/{project.name}.py changed since it was built"
    (project.root / "pkgx" / "__init__.py").write_text("# edited\n")
    project.source.write_text("VALUE = 'pure'\n")  # back as built: the package still differs
    assert project.find() == "pkgx/__init__.py changed since it was built"


def test_a_removed_source_disables_the_build(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.source.unlink()
    assert project.find() == f"pkgx/{project.name}.py changed since it was built"


def test_a_build_for_another_python_or_module_table_is_not_used(tmp_path: Path) -> None:
    project = Project(tmp_path)
    assert project.find([project.module, "pkgx.added"]) == (
        "eir_compiled/modules.py lists other modules than were built"
    )
    project.manifest["ext_suffix"] = ".cpython-399-x86_64-linux-gnu.so"
    project.write()
    assert project.find() == "built for another Python (.cpython-399-x86_64-linux-gnu.so)"


def test_missing_unreadable_or_malformed_builds_are_not_used(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.so.unlink()
    assert project.find() == f"pkgx/{project.name}{SUFFIX} is missing"
    (project.build / finder.MANIFEST_NAME).write_text("{not json")
    assert str(project.find()).startswith("its manifest is unreadable")
    (project.build / finder.MANIFEST_NAME).write_text("[]")
    assert project.find() == "its manifest is malformed"
    (project.build / finder.MANIFEST_NAME).unlink()
    assert project.find() == f"no compiled build in {project.build}"


def test_environment_forces_pure_python_or_requires_the_build(tmp_path: Path) -> None:
    project = Project(tmp_path)
    expected = [project.module]
    assert isinstance(choose(project.root, project.build, expected, {}), CompiledFinder)
    assert choose(project.root, project.build, expected, {finder.PURE_ENV: "1"}) == (
        f"{finder.PURE_ENV} set"
    )
    project.source.write_text("VALUE = 'edited'\n")
    with pytest.raises(ImportError, match="changed since it was built"):
        choose(project.root, project.build, expected, {finder.REQUIRE_ENV: "1"})
    with pytest.warns(RuntimeWarning, match="not used: .* changed since it was built"):
        choose(project.root, project.build, expected, {})


def test_no_build_means_pure_python_without_a_warning(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reason = choose(tmp_path, tmp_path / "build", ["pkgx.mod"], {})
    assert reason == f"no compiled build in {tmp_path / 'build'}"


def test_what_runs_is_what_install_reports() -> None:
    # Under `make test` the whole suite runs with EIR_REQUIRE_COMPILED=1 (compiled modules or an
    # import error) and a part of it again with EIR_PURE_PYTHON=1: both builds are exercised.
    assert diameter  # the package import ran install()
    status = finder.status()
    for row in COMPILED_MODULES:
        module = sys.modules.get(row.module) or importlib.import_module(row.module)
        compiled = str(module.__file__).startswith(str(finder.BUILD_DIR))
        assert compiled == (status == COMPILED), (row.module, module.__file__, status)
    if os.environ.get(finder.REQUIRE_ENV, "") not in ("", "0"):
        assert status == COMPILED


def test_every_listed_module_has_a_source() -> None:
    for row in COMPILED_MODULES:
        path = finder.ROOT.joinpath(*row.module.split(".")).with_suffix(".py")
        assert path.is_file(), row.module
        assert row.why
