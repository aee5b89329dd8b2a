"""Connections refused at accept (a connection limit, a source network), told in the log at
most once every ``interval`` seconds: a flood of them must not flood the log. The Diameter and
N5g-eir servers share it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from diameter.transport.tls_accept import TlsListener

REFUSAL_LOG_INTERVAL = 10.0  # seconds between log lines about connections refused


class RefusalLog:
    def __init__(self, logger: logging.Logger, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self._logger = logger
        self.interval = interval
        self._since = 0  # refused since the last line
        self._logged = -interval

    def refused(self, text: str) -> None:
        """One more refused; ``text`` says why (logged when the interval has passed)."""
        self._since += 1
        now = time.monotonic()
        if now - self._logged >= self.interval:
            self._logger.warning("%s (%d refused since the last such line)", text, self._since)
            self._logged = now
            self._since = 0


def handshakes_under_way(listeners: Iterable[object]) -> int:
    """TLS handshakes under way on ``listeners`` (each holds a place among a connection
    limit); listeners that are not :class:`TlsListener` have none."""
    return sum(len(listener.handshakes) for listener in listeners
               if isinstance(listener, TlsListener))
