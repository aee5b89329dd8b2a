"""Following the operator lists' store: its version polled every ``interval``, and at once when
the store announces a change (PostgreSQL's NOTIFY, only a wake-up hint: it can be lost, so the
version is then read at least every second besides). Used by the gateway and by the standalone
``eir-gateway api``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.lists import OperatorLists
from gateway.state import StateError

log = logging.getLogger("eir.gateway")

HINTED_INTERVAL = 1.0  # seconds between polls at most when the store announces changes


async def follow_lists(
    lists: OperatorLists, interval: float, changed: Callable[[int], None]
) -> None:
    """Apply the store's changes to ``lists`` until cancelled; ``changed(version)`` after
    each. A failed poll is logged (once while the store stays away) and tried again."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def hint() -> None:  # on the store's thread
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(wake.set)

    if lists.store is not None and lists.store.watch(hint):
        interval = min(interval, HINTED_INTERVAL)
    failing = False
    while True:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
        # arrives as the event is set (gh-86296), and this loop then polled on for ever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await wake.wait()
        wake.clear()
        try:
            if await asyncio.to_thread(lists.poll):
                changed(lists.snapshot.version)
        except StateError as exc:  # PostgreSQL away: logged once until it answers again
            if not failing:
                log.error("polling the operator lists failed, serving version %s: %s",
                          lists.snapshot.version, exc)
            failing = True
            continue
        except Exception:
            log.exception("polling the operator lists failed")
        if failing:
            log.info("operator lists polled again, version %s", lists.snapshot.version)
        failing = False
