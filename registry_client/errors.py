"""The exceptions of the compiled registry client modules (registry_client.wire,
registry_client.local), in a module that is never compiled. Compiled exception classes crash: mypyc gives one a weak-reference slot but its generated
clear and dealloc ``Py_CLEAR`` that slot instead of clearing the weak references, so a freed
instance leaves any weak reference to it pointing at freed memory (README, compiled build)."""

from __future__ import annotations


class InvalidImei(ValueError):
    """Not 14/15/16 decimal digits, or a 15-digit IMEI with a wrong Luhn check digit."""


class RecordError(ValueError):
    """A declaration or report that does not follow registry-api.yaml."""


class DeclarationFileError(ValueError):
    """An import file that cannot be read or holds a bad record; nothing was imported."""
