"""The log of connections refused at accept, shared by the Diameter and N5g-eir servers."""

from __future__ import annotations

import logging

import pytest

from diameter.transport.refusals import RefusalLog


def test_a_flood_of_refusals_is_one_line_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.refusals")
    caplog.set_level("WARNING", logger.name)
    log = RefusalLog(logger, interval=3600.0)
    for n in range(100):
        log.refused(f"connection {n} refused")
    assert [r.getMessage() for r in caplog.records] == [
        "connection 0 refused (1 refused since the last such line)"
    ]


def test_each_line_counts_the_refusals_since_the_last(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.refusals")
    caplog.set_level("WARNING", logger.name)
    log = RefusalLog(logger, interval=3600.0)
    log.refused("first")
    log.refused("second")
    log.refused("third")
    log.interval = 0.0  # the interval has passed
    log.refused("fourth")
    assert [r.getMessage() for r in caplog.records] == [
        "first (1 refused since the last such line)",
        "fourth (3 refused since the last such line)",
    ]
