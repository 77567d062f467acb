"""The one async worker pool: its bound, its order, its stop, and nothing left running."""

import asyncio

import pytest

from runtime.pool import run_pool


def test_at_most_concurrency_handlers_run_and_one_keeps_the_order():
    running, peak, seen = 0, 0, []

    async def handle(item):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (item % 3))
        seen.append(item)
        running -= 1

    asyncio.run(run_pool(range(20), 4, handle))
    assert peak == 4 and sorted(seen) == list(range(20))
    seen.clear()
    asyncio.run(run_pool(range(20), 1, handle))
    assert seen == list(range(20))
    asyncio.run(run_pool([], 4, handle))


def test_no_item_is_taken_once_stop_is_true():
    seen = []

    async def handle(item):
        seen.append(item)

    asyncio.run(run_pool(range(10), 2, handle, stop=lambda: len(seen) >= 3))
    assert len(seen) == 3


def test_a_failure_cancels_the_handlers_in_flight_before_it_propagates():
    cancelled = []

    async def handle(item):
        if item == 0:
            await asyncio.sleep(0)
            raise ValueError("boom")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    async def main():
        with pytest.raises(ValueError, match="boom"):
            await run_pool(range(5), 3, handle)
        return cancelled.copy()

    assert asyncio.run(main()) == [1, 2]
