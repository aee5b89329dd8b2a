"""The exceptions of the compiled gateway modules (gateway.lists, gateway.tac,
gateway.redis_clone), in a module that is never compiled. Compiled exception classes crash: mypyc gives one a weak-reference slot but its generated
clear and dealloc ``Py_CLEAR`` that slot instead of clearing the weak references, so a freed
instance leaves any weak reference to it pointing at freed memory (README, compiled build)."""

from __future__ import annotations


class ListError(ValueError):
    """A bad entry or a bad CSV row (the message names file and row); ``field`` names the
    entry field at fault when one is (list, kind, value, imsi, reason, created, updated)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class EntryExists(ListError):
    """A creation of an entry that is already stored."""


class TacImportError(Exception):
    """A bad line in strict mode, or an unreadable file; the message names file and line."""


class ScriptMissing(Exception):
    """Redis no longer has the script (restarted, or SCRIPT FLUSH): NOSCRIPT."""
