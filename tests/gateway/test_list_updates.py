"""follow_lists (gateway/list_updates.py), the operator lists' poll loop, ends when cancelled."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.list_updates import follow_lists


async def test_cancelled_while_waiting_it_ends_where_wait_for_lost_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.11's asyncio.wait_for loses a cancellation that arrives as what it awaits
    completes (gh-86296): the loop waited for its next poll with it, and polled on for ever
    after a stop, which awaited it. Here every wait_for loses it; the loop must end all the
    same (it waits with asyncio.timeout)."""
    real_wait_for = asyncio.wait_for
    lost: list[bool] = []

    async def losing_wait_for(awaitable: Any, timeout: float | None) -> Any:
        task = asyncio.ensure_future(awaitable)
        waiting = asyncio.ensure_future(asyncio.wait({task}, timeout=timeout))
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            lost.append(True)
            await waiting  # the cancellation gone, as when the awaited finished with it
        if not task.done():
            task.cancel()
            raise TimeoutError
        return task.result()

    monkeypatch.setattr(asyncio, "wait_for", losing_wait_for)
    polls: list[bool] = []

    def poll() -> bool:
        polls.append(True)
        return False

    lists = SimpleNamespace(store=None, poll=poll, snapshot=SimpleNamespace(version=1))
    following = asyncio.create_task(follow_lists(lists, 0.05, lambda version: None))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert polls
    following.cancel()
    done, _ = await real_wait_for(asyncio.wait({following}, timeout=5), 10)
    assert following in done and following.cancelled()
    assert not lost  # it no longer waits with wait_for at all
