"""Errors of the Diameter layer. All share one root and carry the result code to answer with."""

from __future__ import annotations


class DiameterError(Exception):
    """Root of every error raised by the `diameter` package."""

    result_code: int = 5012  # DIAMETER_UNABLE_TO_COMPLY

    def __init__(self, message: str, result_code: int | None = None) -> None:
        super().__init__(message)
        if result_code is not None:
            self.result_code = result_code


class DecodeError(DiameterError):
    """Bytes that are not a Diameter message (bad header, bad length, truncated AVP)."""


class FramingError(DecodeError):
    """The byte stream cannot be framed any further (RFC 6733 §2.1): the connection must close.

    ``header`` holds the 20 header bytes when they were read, so that an error answer can still
    be sent before closing; ``messages`` the whole messages read before the bad bytes.
    """

    def __init__(
        self,
        message: str,
        result_code: int,
        header: bytes | None = None,
        messages: tuple[bytes, ...] = (),
        following: bytes = b"",
    ) -> None:
        super().__init__(message, result_code)
        self.header = header
        # Whole messages that preceded the unframeable bytes in the same read: still to process.
        self.messages = messages
        # Bytes after the header (bounded): AVPs such as Session-Id the error answer copies.
        self.following = following


class EncodeError(DiameterError):
    """A value that cannot be encoded as its AVP's data type."""


class DictionaryError(DiameterError):
    """A dictionary table that does not compile (a developer error, raised at import)."""
