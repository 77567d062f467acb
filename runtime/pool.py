"""The one pool of async workers: batch jobs, extractions, abstractions and judge ratings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def run_pool(
    items: Sequence[T],
    concurrency: int,
    handle: Callable[[T], Awaitable[object]],
    stop: Callable[[], object] = lambda: False,
) -> None:
    """Await `handle(item)` for every item, `concurrency` at a time, taken in the items' order.

    A worker takes the next item as soon as it is done with one; none takes a new item once
    `stop()` is true. When a handler raises (or the pool is cancelled), the other workers are
    cancelled and awaited here before the error propagates, so nothing the pool started outlives
    the call (no request torn down at loop shutdown, no write after the caller's cleanup).

    Args:
        items: What to handle.
        concurrency: Handlers in flight at once (at least 1; 1 handles the items in order).
        handle: Called once per item; its result is ignored (store what you need in it).
        stop: Checked before each item; true ends the pool once the running handlers finish.
    """
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            if stop():
                return
            await handle(item)

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(items))))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
