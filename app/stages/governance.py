"""The governance stage: warehouse events in, governed milestones out.

Per batch and owned input partition it decodes, runs the pure core (``app/core``), then
hands the outputs and the partition's state with its input offset to its writer
(``app.runtime.statestore.BatchWriter``: outputs then state, or one Kafka transaction per
partition; the stage does not know which). Events are keyed by (warehouse_id, order_id) (``app.core.keys``), so
an order's events stay ordered in one partition; each partition has its own event-time
watermark. On-time StockAdjusted go on to the inventory stage through the stock topic
with this partition's watermark (a mark after every batch that moved it, an idle mark
when a partition has had nothing to read for ``WORKER_IDLE_PARTITION_S``; one that has
never had an event repeats it at that interval until it has made one after the load
started, since the inventory stage keeps an idle report of an empty partition only then,
see ``app/core/stock.py``; before such a report the partition's watermarks are asked of the
broker, ``end_offsets``, since the cached ones may be stale: a worker that was stalled or
starved of CPU must not report a partition empty whose first records it has not fetched).

The stage is a plain object with the lifecycle of ``app.runtime.runner.Stage``; it is
given its writer and its clock, so tests build it without a broker.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import inf

from app import metrics
from app.core.model import SOURCES, CoreSettings, Milestone
from app.core.stock import Mark
from app.kafka import codec
from app.runtime.runner import Batch, InputRecord
from app.runtime.statestore import BatchClock, BatchWriter, Flush, Origin, Outputs
from tables import lineage
from tables.records import InventoryState, PartitionState, fence_key, take_over_epoch

log = logging.getLogger(__name__)
SLA = {"release_to_picked": metrics.SLA_RELEASE_TO_PICKED, "packed_to_shipped": metrics.SLA_PACKED_TO_SHIPPED}


@dataclass
class _Partition:
    """An owned input partition: its state and what the inventory stage has been told."""

    state: PartitionState
    last_record: float  # monotonic time of its last record (or of its load)
    marked: int | None = None  # the watermark last reported
    idle: bool = False
    idle_at: float = -inf  # monotonic time of its last idle mark, or of the last ask for its end
    repeat: bool = False  # an empty partition's idle mark to repeat (made before the load started)


def _nothing_to_read(offset: int, low: int, high: int) -> bool:
    """Whether a partition whose state is at ``offset`` has no record to read, by the
    broker's (low, high) watermarks: none past the offset, or only records that aged out."""
    return high >= 0 and max(offset + 1, low) >= high


@dataclass(frozen=True)
class StoredPartition:
    """A partition's stored state as its writer reads it (``tables.records.PartitionSource``)."""

    writer: BatchWriter
    partition: int

    def records(self) -> Iterable[tuple[bytes, bytes]]:
        return self.writer.records(self.partition)

    def get(self, key: bytes) -> bytes | None:
        return self.writer.get(self.partition, key)


def flush_to(state: PartitionState | InventoryState, offset: int) -> Flush:
    """The flush that commits ``state`` up to ``offset`` (see ``tables/records.py``)."""
    return lambda previous: state.flush(offset, previous)


class GovernanceStage:
    """Events partitions -> milestones, dead letters, stock forwards and marks."""

    name = "governance"

    def __init__(
        self,
        *,
        topic: str,
        writer: BatchWriter,
        settings: CoreSettings,
        idle_partition_s: float,
        batch_clock: BatchClock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        end_offsets: Callable[[list[int]], Awaitable[dict[int, tuple[int, int]]]] | None = None,
    ) -> None:
        self.topic = topic
        self.writer = writer
        self.settings = settings
        self.idle_partition_s = idle_partition_s
        self.clock = batch_clock or BatchClock()
        self.monotonic = monotonic
        #: The broker's (low, high) watermarks of partitions, asked before an empty one is
        #: reported idle (the runner's ``end_offsets``; None: the batch's cached ends are trusted).
        self.end_offsets = end_offsets
        self.partitions: dict[int, _Partition] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def assign(self, partitions: set[int], epoch: int) -> dict[int, int]:
        now = self.monotonic()
        epoch = take_over_epoch(epoch, (self.writer.get(p, fence_key(p)) for p in partitions))
        for partition in partitions:
            ps = PartitionState(partition, self.settings, self.clock.read, source=StoredPartition(self.writer, partition))
            ps.epoch = epoch
            self.partitions[partition] = _Partition(ps, now)
        try:
            await self.writer.fence(partitions, epoch)
        except BaseException:
            for partition in partitions:  # not this stage's (the runner re-syncs)
                self.partitions.pop(partition, None)
            raise
        return {p: self.partitions[p].state.offset + 1 for p in partitions}

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)
        self.writer.forget(partitions)

    def committed(self) -> dict[int, int]:
        return {p: x.state.offset + 1 for p, x in self.partitions.items()}

    # -- processing --------------------------------------------------------------------

    def _run_partition(self, ps: PartitionState, msgs: Sequence[InputRecord], outputs: Outputs) -> int | None:
        """Run the core over one partition's records; the last offset processed, or None.
        The records come in offset order (the consumer is assigned its partitions by the
        runner and never seeks inside a batch), so those the state already holds are a
        leading run, skipped; the others go to the core in one
        call (``Engine.process_batch``: accepted telemetry read without a dict, every other
        record decoded once by ``codec.decode_input``), which returns only the records that
        were decoded or have outputs; their lineage entries and outputs are taken here, in
        the records' order (an event's entry before its milestones'), as ``replay`` takes them."""
        skip_to = ps.offset
        start, n = 0, len(msgs)
        while start < n and msgs[start].offset() <= skip_to:
            start += 1  # already in the stored state
        if start == n:
            return None
        if start:
            msgs = msgs[start:]
        entry_of = lineage.decoded_entry
        untrailed = lineage.UNTRAILED  # most events: no call for them
        for i, d, outs in ps.engine.process_batch([msg.value() or b"" for msg in msgs], codec.decode_input):
            if d is not None:
                kind = d.get("type")
                if kind.__class__ is str and kind not in untrailed:  # (decoded_entry: None for others)
                    entry = entry_of(d)
                    if entry is not None:
                        ps.note(entry)
            if outs:
                msg = msgs[i]
                origin = Origin(self.topic, msg.partition(), msg.offset())
                for out in outs:
                    outputs.append((out, origin))
                    if isinstance(out, Milestone):
                        ps.note(lineage.milestone_entry(out))
        return msgs[-1].offset()

    async def process(self, batch: Batch, highs: Mapping[int, int]) -> None:
        """Run every partition's records, then write all outputs, marks and every
        partition's state in one call to the writer."""
        outputs: Outputs = []
        marks: list[Mark] = []
        done: list[tuple[PartitionState, int]] = []
        now = self.monotonic()
        self.clock.tick()
        started = any(p.marked is not None for p in self.partitions.values())  # in an earlier batch
        for partition, msgs in batch.items():
            p = self.partitions[partition]
            p.last_record = now
            was_idle, p.idle = p.idle, False
            last = self._run_partition(p.state, msgs, outputs)
            if last is None:
                continue
            done.append((p.state, last))
            wm = p.state.engine.watermark
            if wm != p.marked or was_idle:
                marks.append(Mark(partition, last, wm))
                p.marked = wm
        marks.extend(await self._idle_marks(now, highs, started))
        records = sum(len(m) for m in batch.values())
        # What this batch counted, taken now: the next batch's core may run before this one
        # has committed (its bookkeeping runs then), and must not be counted with it.
        seen = [(ps, dict(ps.engine.counts), ps.engine.watermark, last) for ps, last in done]
        for ps, _ in done:
            ps.engine.counts.clear()
        await self.writer.write(outputs, marks, [(ps.partition, last, flush_to(ps, last)) for ps, last in done],
                                on_committed=lambda: self._observe(seen, highs, records))

    async def settle(self) -> None:
        await self.writer.settle()

    async def _idle_marks(self, now: float, highs: Mapping[int, int], started: bool) -> list[Mark]:
        """Idle marks for owned partitions with nothing to read for the idle time. One that
        has never had an event repeats its report every idle time until it makes one after
        ``started`` (a mark with a watermark of another partition of this stage committed in
        an earlier batch, so ahead of the report in every stock partition): the inventory
        stage ignores a report of an empty partition made before any partition had an event.
        An empty partition is reported only if the broker, asked now, has nothing to read for
        it either (``end_offsets``: the consumer's cached end may be from before a stall); it
        is asked at most once an idle time, answered or not."""
        idle: list[tuple[int, _Partition]] = []
        for partition, p in self.partitions.items():
            if now - p.last_record < self.idle_partition_s or now - p.idle_at < self.idle_partition_s:
                continue
            empty = p.state.engine.watermark is None
            if p.idle and not (empty and p.repeat):
                continue
            high = highs.get(partition)
            if not (empty and self.end_offsets is not None) and high is not None and p.state.offset + 1 < high:
                continue  # records waiting: slow, not idle
            idle.append((partition, p))
        asked = [partition for partition, p in idle if p.state.engine.watermark is None]
        if asked and self.end_offsets is not None:
            for partition in asked:
                self.partitions[partition].idle_at = now
            # the previous batch's commit first: the broker's answer must hold until the
            # report is appended, and only this batch's own write is left in between
            await self.writer.settle()
            try:
                ends = await self.end_offsets(asked)
            except Exception as exc:  # the broker did not answer: not reported idle this time
                log.warning("end offsets of input partitions %s: %s", asked, exc)
                ends = {}
            idle = [(partition, p) for partition, p in idle if partition not in asked
                    or (partition in ends and _nothing_to_read(p.state.offset, *ends[partition]))]
        marks = []
        for partition, p in idle:
            if not p.idle:
                log.info("input partition %d idle at offset %d", partition, p.state.offset)
            p.idle, p.idle_at = True, now
            p.repeat = p.state.engine.watermark is None and not started
            marks.append(Mark(partition, p.state.offset, p.state.engine.watermark, idle=True))
        return marks

    def _observe(self, seen: list[tuple[PartitionState, dict[tuple[str, str], int], int | None, int]],
                 highs: Mapping[int, int], records: int) -> None:
        """A committed batch's bookkeeping: per partition its event counts and watermark as
        the batch left them, its SLA samples, its lag."""
        for ps, counts, watermark, last in seen:
            for (etype, source), n in counts.items():
                metrics.EVENTS.labels(etype, source if source in SOURCES else "other").inc(n)
            for name, seconds in ps.sla:
                SLA[name].observe(seconds)
            if watermark is not None:
                metrics.WATERMARK.labels(str(ps.partition)).set(watermark / 1000)
            high = highs.get(ps.partition)
            if high is not None:
                metrics.CONSUMER_LAG.labels(self.topic, str(ps.partition)).set(max(0, high - last - 1))
        sizes: dict[str, int] = {}
        for local in self.partitions.values():
            for table, n in local.state.sizes().items():
                sizes[table] = sizes.get(table, 0) + n
        for table, n in sizes.items():
            metrics.TABLE_KEYS.labels(table).set(n)
        if records:
            metrics.EVENTS_PROCESSED.inc(records)
