"""No exception class is defined in a compiled module. mypyc (this version) gives a compiled
exception class a weak-reference slot but its generated clear and dealloc ``Py_CLEAR`` that slot
instead of clearing the weak references: a freed instance leaves every weak reference to it
pointing at freed memory, and the next collection crashes the process (hypothesis keeps weak
references to what it draws; session 7's hiredis property test segfaulted so). The compiled
modules import their exceptions from interpreted modules (gateway.errors, gateway.resp_errors,
gateway.n5g_eir.errors, registry_client.errors)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from eir_compiled.modules import COMPILED_MODULES

NAMES = [row.module for row in COMPILED_MODULES]


def _exceptions(name: str) -> list[type[BaseException]]:
    module = importlib.import_module(name)
    return [
        value for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_no_exception_class_is_defined_in_a_compiled_module(name: str) -> None:
    defined_here = [cls.__qualname__ for cls in _exceptions(name) if cls.__module__ == name]
    assert defined_here == [], f"move {defined_here} of {name} to an interpreted module"


# Every exception class a compiled module holds, instances weakly referenced, freed, collected:
# in a child, so a crash is this test's failure, not pytest's end.
_CHILD = """
import gc, inspect, importlib, sys, weakref
for name in sys.argv[1:]:
    for value in list(vars(importlib.import_module(name)).values()):
        if not (inspect.isclass(value) and issubclass(value, BaseException)):
            continue
        try:
            refs = [weakref.ref(value("x")) for _ in range(200)]
        except TypeError:  # another signature (code, reason): the class is checked above
            continue
        gc.collect()
        assert all(ref() is None for ref in refs), value
print("ok")
"""


def test_weak_references_to_their_exceptions_survive_a_collection() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *NAMES], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr)
