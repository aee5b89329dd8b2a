"""make compile (eir_compiled.build): what the manifest guards, and a machine that cannot build."""

from __future__ import annotations

import sysconfig

import pytest

from eir_compiled import build
from eir_compiled.finder import ROOT


def test_the_guard_covers_what_a_module_imports() -> None:
    read = {str(p.relative_to(ROOT)) for p in build.sources_read(["diameter.codec"])}
    assert {"diameter/__init__.py", "diameter/codec.py", "diameter/errors.py"} <= read
    assert "diameter/dictionary/__init__.py" in read  # Final constants mypyc may inline
    assert not any(path.startswith(("gateway/", "registry_client/")) for path in read)
    peer = {str(p.relative_to(ROOT)) for p in build.sources_read(["diameter.peer"])}
    assert {"diameter/watchdog.py", "diameter/framing.py", "diameter/validate.py"} <= peer


def test_no_compiler_is_exit_69_and_builds_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = sysconfig.get_config_var

    def without_compiler(name: str) -> object:
        return "no-such-cc-for-eir -pthread" if name == "CC" else real(name)

    monkeypatch.setattr(sysconfig, "get_config_var", without_compiler)
    monkeypatch.setattr(build, "build", lambda opt_level: pytest.fail("built anyway"))
    assert build.main([]) == build.CANNOT_BUILD == 69
    assert "no C compiler (no-such-cc-for-eir" in capsys.readouterr().err
