"""Master data loaded once however many milestones miss it at once (``app.erp.memo``), and
the Tryton adapter's lookups built on it."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.erp.memo import SingleFlight
from app.erp.port import PermanentErpError
from app.erp.tryton import TrytonAdapter


async def test_callers_missing_the_same_key_at_once_share_one_load() -> None:
    memo: SingleFlight[str, int] = SingleFlight()
    started = 0

    async def load() -> int:
        nonlocal started
        started += 1
        await asyncio.sleep(0.01)
        return 7

    values = await asyncio.gather(*(memo.get("k", load) for _ in range(500)))
    assert values == [7] * 500 and started == 1 == memo.loads
    assert await memo.get("k", load) == 7 and started == 1  # cached afterwards
    assert "k" in memo and len(memo) == 1


async def test_a_failed_load_reaches_every_waiting_caller_and_is_not_cached() -> None:
    memo: SingleFlight[str, int] = SingleFlight()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise PermanentErpError(200, "no such product")
        return 3

    results = await asyncio.gather(*(memo.get("k", load) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, PermanentErpError) for r in results) and calls == 1
    assert await memo.get("k", load) == 3 and calls == 2


async def test_a_cancelled_caller_does_not_cancel_the_load_of_the_others() -> None:
    memo: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def load() -> int:
        await release.wait()
        return 1

    first = asyncio.ensure_future(memo.get("k", load))
    second = asyncio.ensure_future(memo.get("k", load))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_close_cancels_loads_nobody_awaits() -> None:
    memo: SingleFlight[str, int] = SingleFlight()

    async def load() -> int:
        await asyncio.sleep(3600)
        return 0

    waiter = asyncio.ensure_future(memo.get("k", load))
    await asyncio.sleep(0)
    waiter.cancel()
    await memo.close()
    assert memo.loads == 1 and "k" not in memo


async def test_the_kept_values_are_bounded() -> None:
    memo: SingleFlight[int, int] = SingleFlight(limit=3)
    for key in range(5):
        memo.put(key, key)
    assert len(memo) <= 3 and 4 in memo


class _Reads:
    """``TrytonOps.read_one`` as the adapter's lookups use it, counting what reaches the ERP."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, Any]] = []

    async def read_one(self, model: str, key_field: str, value: Any, fields: Any, extra: Any = ()) -> Any:
        self.reads.append((model, value))
        await asyncio.sleep(0.01)
        if model == "product.product":
            return None if value == "NOPE" else {"id": 40, "code": value, "default_uom": 1}
        if key_field == "code" and ["type", "=", "warehouse"] in extra:
            return {"id": 5, "code": value, "storage_location": 6, "lost_found_location": 7, "input_location": 8}
        if key_field == "id":
            return {"id": value, "code": "WH1", "storage_location": 6, "lost_found_location": 7}
        return {"id": 60}


async def test_a_backlog_of_adjustments_looks_up_each_warehouse_bin_and_product_once() -> None:
    adapter = TrytonAdapter(object())  # type: ignore[arg-type]  # no REST call is made here
    reads = _Reads()
    adapter.ops = reads  # type: ignore[assignment]

    async def lookups(i: int) -> tuple[int, int, int]:
        warehouse = await adapter._warehouse("WH1")
        product = await adapter._product(f"SKU-{i % 3}")
        return warehouse["id"], product["id"], await adapter._storage(warehouse, "A-01")

    found = await asyncio.gather(*(lookups(i) for i in range(1000)))
    assert set(found) == {(5, 40, 60)}
    assert sorted(reads.reads, key=str) == sorted(
        [("stock.location", "WH1"), ("product.product", "SKU-0"), ("product.product", "SKU-1"),
         ("product.product", "SKU-2"), ("stock.location", "A-01")], key=str)

    # a warehouse known by code answers a lookup by id without a read
    assert (await adapter._warehouse_by_id(5))["code"] == "WH1" and len(reads.reads) == 5
    # an unknown product fails every milestone that waits for it, and is asked again later
    results = await asyncio.gather(*(adapter._product("NOPE") for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, PermanentErpError) and "no product.product with code 'NOPE'" in str(r) for r in results)
    assert reads.reads.count(("product.product", "NOPE")) == 1
    with pytest.raises(PermanentErpError):
        await adapter._product("NOPE")
    assert reads.reads.count(("product.product", "NOPE")) == 2


async def test_a_load_does_not_run_in_its_first_callers_context() -> None:
    """The sink's fence raises ``Revoked`` for a request made in the context of a partition
    this worker lost; a shared lookup started by such a caller must still answer the callers
    of the partitions it owns."""
    from app.erp.sink import _PARTITION, Revoked, fence

    owned = {2}
    check = fence(lambda p: p in owned)
    memo: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def load() -> str:
        await release.wait()
        check()  # what the batcher runs right before the lookup's request
        return "product"

    async def caller(partition: int) -> str:
        _PARTITION.set(partition)
        return await memo.get("SKU-1", load)

    lost = asyncio.create_task(caller(1))  # each task has its own copy of the context
    await asyncio.sleep(0)  # partition 1's milestone starts the load
    kept = asyncio.create_task(caller(2))
    await asyncio.sleep(0)
    release.set()
    assert await kept == "product" and await lost == "product" and memo.loads == 1
    with pytest.raises(Revoked):  # the same call in partition 1's own context is fenced
        await asyncio.create_task(_fenced_in(1, check))


async def _fenced_in(partition: int, check: Any) -> None:
    from app.erp.sink import _PARTITION

    _PARTITION.set(partition)
    check()
