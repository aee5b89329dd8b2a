"""SharedCount (gateway/shared_count.py): every callback called once with the count, in order,
whether one waits or several; one that raises harms none of the others."""

from __future__ import annotations

import contextlib
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.shared_count import SharedCount


@given(before=st.integers(0, 5), after=st.integers(0, 3), failing=st.sets(st.integers(0, 7)),
       count=st.integers(0, 10))
def test_every_callback_once_in_order_a_failing_one_harms_none(
    before: int, after: int, failing: set[int], count: int
) -> None:
    calls: list[tuple[int, int]] = []

    def callback(i: int) -> object:
        def called(n: int) -> None:
            calls.append((i, n))
            if i in failing:
                raise RuntimeError(f"check {i} failed")
        return called

    shared = SharedCount()
    for i in range(before):
        shared.add_callback(callback(i))
    assert calls == [] and shared.value is None
    logging.disable(logging.CRITICAL)  # the failing ones are logged
    try:
        shared.settle(count)
        shared.settle(count + 1)  # later settles change nothing
        for i in range(before, before + after):
            with pytest.raises(RuntimeError) if i in failing else contextlib.nullcontext():
                shared.add_callback(callback(i))  # settled: at once, in the caller
    finally:
        logging.disable(logging.NOTSET)
    assert calls == [(i, count) for i in range(before + after)]
    assert shared.value == count

