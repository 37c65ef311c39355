"""The inventory stage: StockAdjusted re-keyed by (warehouse_id, sku, location) in,
InventoryAdjusted out (rule 6 across input partitions; see ``app/core/stock.py``).

Per batch and owned stock partition: apply the forwards and watermark marks to the
partition's windows, then hand what closed and the windows and marks with the input offset
to the writer (``app.runtime.statestore.BatchWriter``). Same lifecycle as every stage
(``app.runtime.runner.Stage``).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from app import metrics
from app.core.ids import raw_exception_id
from app.core.model import CoreSettings, DeadLetter
from app.core.stock import apply_record
from app.runtime.runner import Batch
from app.runtime.statestore import BatchWriter, Origin, Outputs
from app.stages.governance import flush_to
from tables.records import InventoryState, fence_key, take_over_epoch

log = logging.getLogger(__name__)


class InventoryStage:
    """Stock partitions -> InventoryAdjusted."""

    name = "inventory"

    def __init__(self, *, topic: str, writer: BatchWriter, settings: CoreSettings, sources: int) -> None:
        self.topic = topic
        self.writer = writer
        self.settings = settings
        self.sources = sources  # input (events) partitions that send forwards and marks
        self.partitions: dict[int, InventoryState] = {}

    async def assign(self, partitions: set[int], epoch: int) -> dict[int, int]:
        epoch = take_over_epoch(epoch, (self.writer.get(p, fence_key(p)) for p in partitions))
        for partition in partitions:
            st = InventoryState(partition, self.settings, self.sources, self.writer.records(partition))
            st.epoch = epoch
            self.partitions[partition] = st
        await self.writer.fence(partitions, epoch)
        return {p: self.partitions[p].offset + 1 for p in partitions}

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)
        self.writer.forget(partitions)

    def committed(self) -> dict[int, int]:
        return {p: st.offset + 1 for p, st in self.partitions.items()}

    async def process(self, batch: Batch, highs: Mapping[int, int]) -> None:
        outputs: Outputs = []
        done: list[tuple[InventoryState, int]] = []
        for partition, msgs in batch.items():
            st = self.partitions[partition]
            last = None
            for msg in msgs:
                offset = msg.offset()
                if offset <= st.offset:
                    continue  # already in the stored state
                origin = Origin(self.topic, partition, offset)
                raw = msg.value() or b""
                applied = apply_record(st.stage, raw)
                if isinstance(applied, str):  # not a record the governance stage wrote
                    log.warning("inventory: %s partition %d offset %d dead-lettered: %s", self.topic, partition,
                                offset, applied)
                    outputs.append((DeadLetter(raw, applied, raw_exception_id(raw)), origin))
                else:
                    outputs.extend((m, origin) for m in applied)
                last = offset
            if last is not None:
                done.append((st, last))
        seen = [(st.partition, st.stage.watermark) for st, _ in done]  # as this batch left them
        await self.writer.write(outputs, [], [(st.partition, last, flush_to(st, last)) for st, last in done],
                                on_committed=lambda: self._observe(seen))

    def _observe(self, seen: list[tuple[int, int | None]]) -> None:
        for partition, watermark in seen:
            if watermark is not None:
                metrics.INVENTORY_WATERMARK.labels(str(partition)).set(watermark / 1000)
        metrics.TABLE_KEYS.labels("inventory_windows").set(sum(len(st.windows) for st in self.partitions.values()))

    async def settle(self) -> None:
        await self.writer.settle()
