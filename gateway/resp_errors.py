"""The exceptions of :mod:`gateway.resp`, in a module of their own that is never compiled."""

from __future__ import annotations


class RespError(Exception):
    """An error reply (``-PREFIX message``): ``prefix`` is its first word (ERR, NOSCRIPT...)."""

    @property
    def prefix(self) -> str:
        return str(self).split(" ", 1)[0]


class ProtocolError(Exception):
    """Bytes that are not RESP2: the connection cannot be trusted any further."""

