"""A cache of ERP master data (warehouses, locations, products) whose misses are loaded once.

A backlog of 10,000 inventory adjustments reaches the adapter at once, every one of them
missing the cache for its warehouse, bin and product: without this, each miss was an item of a
batched search, and the same product was asked for in every batch (371 of the 991 requests of
a 10,000 drain were these lookups). Here the first miss starts one load; every caller that
misses the same key while it runs awaits that load. A failed load is not cached: its callers
all get its error, the next caller loads again.

A load serves callers of several documents and partitions, so it runs in a context of its
own, not the first caller's: the sink's fence (``before_send``: no request for a partition
this worker no longer owns) reads the calling task's partition from a context variable, and
one caller's revoked partition must not fail the others' lookup. Master data reads change
nothing, so they need no fence.
"""
from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Values by key, each loaded at most once at a time; ``limit`` bounds what is kept."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._values: dict[K, V] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}
        self.loads = 0  # loads started

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> Iterator[V]:
        return iter(list(self._values.values()))

    def put(self, key: K, value: V) -> None:
        if len(self._values) >= self.limit and key not in self._values:
            self._values.clear()
        self._values[key] = value

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The value of ``key``: cached, or the load already running for it, or a new load.
        The load runs in a task of its own, in an empty context: a caller cancelled while it
        waits does not cancel it for the others, and no caller's context variables (the
        sink's partition, which its fence checks) apply to it."""
        if key in self._values:
            return self._values[key]
        task = self._loading.get(key)
        if task is None:
            self.loads += 1
            task = asyncio.get_running_loop().create_task(self._load(key, load), context=contextvars.Context())
            task.add_done_callback(_retrieved)  # every caller may be gone when it fails
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await load()
            self.put(key, value)
            return value
        finally:
            self._loading.pop(key, None)

    async def close(self) -> None:
        """Cancel the loads nobody will await any more (the adapter is closing)."""
        tasks = list(self._loading.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loading.clear()


def _retrieved(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()
