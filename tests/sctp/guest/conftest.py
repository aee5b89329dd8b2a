"""Inside the SCTP guest: every async test runs twice, on asyncio's loop and on uvloop's (the
loop ``eir-gateway run`` uses), and the kernel really speaks SCTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import uvloop

from diameter.transport import sctp_unavailable

# The gateway on port 0, as the end-to-end and interop tests start it.
from tests.e2e.conftest import start_gateway  # noqa: F401


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    # In the guest, no SCTP is a broken guest, not a reason to skip.
    reason = sctp_unavailable()
    if reason is not None:
        raise pytest.UsageError(f"the SCTP guest has no SCTP: {reason}")
