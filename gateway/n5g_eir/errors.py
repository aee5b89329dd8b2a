"""The exceptions of the compiled N5g-eir modules (frames, hpack, http2), in a module that
is never compiled. Compiled exception classes crash: mypyc gives one a weak-reference slot but its generated
clear and dealloc ``Py_CLEAR`` that slot instead of clearing the weak references, so a freed
instance leaves any weak reference to it pointing at freed memory (README, compiled build)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.n5g_eir.frames import ErrorCode


class Http2Error(Exception):
    """A connection error (RFC 9113 §5.4.1): the connection ends with GOAWAY carrying ``code``."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StreamError(Exception):
    """A stream error (RFC 9113 §5.4.2): the stream ends with RST_STREAM carrying ``code``."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class HpackError(Exception):
    """The header block cannot be decoded (RFC 9113 §4.3: COMPRESSION_ERROR)."""
