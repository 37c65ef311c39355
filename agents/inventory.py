"""The inventory agent: StockAdjusted re-keyed by (warehouse_id, sku, location) in,
InventoryAdjusted out (rule 6 across input partitions; see ``app/core/stock.py``).

Per batch and stock partition: apply the forwards and watermark marks to the stage,
emit what closed (flushed), then store the partition's windows and marks (meta last).
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Sequence

from faust.types import EventT

from app import metrics
from app.core.stock import apply_record
from app.faust_app import SETTINGS, app
from app.topics import stock
from agents._failfast import or_exit
from agents._outputs import Origin, emit
from tables import inventory, state
from tables.records import InventoryState

log = logging.getLogger(__name__)
_stages: dict[int, InventoryState] = {}


@app.on_partitions_revoked.connect
async def _forget_revoked(sender: object, revoked: set, **_: object) -> None:  # type: ignore[type-arg]
    for tp in revoked:
        if tp.topic == SETTINGS.topics.stock:
            _stages.pop(tp.partition, None)


async def _process(batch: Sequence[EventT]) -> None:
    by_partition: dict[int, list[EventT]] = {}
    for ev in batch:
        by_partition.setdefault(ev.message.partition, []).append(ev)
    outputs: list[tuple[object, Origin]] = []
    done: list[tuple[InventoryState, EventT, int]] = []
    for partition, evs in by_partition.items():
        st = _stages.get(partition)
        if st is None:
            st = _stages[partition] = inventory.load_partition(partition)
        last = None
        for ev in evs:
            if ev.message.offset <= st.offset:
                continue  # already in the stored state
            outputs.extend((m, ev.message) for m in apply_record(st.stage, ev.value))
            last = ev.message.offset
        if last is not None:
            done.append((st, evs[-1], last))
    await emit(outputs)
    await state.commit_all(
        [(ev, lambda previous, st=st, last=last: st.flush(last, previous)) for st, ev, last in done],
        inventory.inventory_state,
    )
    for st, _, _ in done:
        if st.stage.watermark is not None:
            metrics.INVENTORY_WATERMARK.labels(str(st.partition)).set(st.stage.watermark / 1000)
    metrics.TABLE_KEYS.labels("inventory_windows").set(sum(len(st.windows) for st in _stages.values()))


@app.agent(stock)
async def count_stock(stream: AsyncIterable[EventT]) -> None:
    """Consume the stock topic in batches; one inventory stage per partition."""
    async for batch in stream.take_events(SETTINGS.worker.batch_size, within=SETTINGS.worker.batch_within_s):  # type: ignore[attr-defined]
        await or_exit(_process(batch), log, "inventory batch", batch)
