"""The governance agent: warehouse events in, governed milestones out.

Thin by design: per batch and input partition it decodes, runs the pure core, emits
the outputs (flushed), then stores the partition's state (meta last). Events are
keyed by (warehouse_id, order_id) (``app.core.keys``), so an order's events stay
ordered in one partition; each partition has its own event-time watermark. On-time
StockAdjusted go on to the inventory stage (``agents/inventory.py``) through the
stock topic, with this partition's watermark (a mark after every batch that moved
it, and an idle mark when the partition has had nothing to read for
``WORKER_IDLE_PARTITION_S``). Redeliveries up to the stored offset are skipped.
"""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

from faust.types import EventT

from app import codec, metrics
from app.core import parse
from app.core.model import SOURCES, Milestone
from app.core.stock import Mark
from app.faust_app import SETTINGS, app
from app.topics import events
from agents._failfast import or_exit
from agents._outputs import emit
from tables import lineage, state
from tables.records import PartitionState

log = logging.getLogger(__name__)
SLA = {"release_to_picked": metrics.SLA_RELEASE_TO_PICKED, "packed_to_shipped": metrics.SLA_PACKED_TO_SHIPPED}


@dataclass
class _Partition:
    """An assigned input partition: its state and what the inventory stage has been told."""

    state: PartitionState
    last_batch: float  # time.monotonic() of its last batch (or of its load)
    marked: int | None = None  # the watermark last reported
    idle: bool = False


_partitions: dict[int, _Partition] = {}


@app.on_partitions_revoked.connect
async def _forget_revoked(sender: object, revoked: set, **_: object) -> None:  # type: ignore[type-arg]
    """Revoked partitions' engines go; a partition reassigned later reloads from the table."""
    for tp in revoked:
        if tp.topic == SETTINGS.topics.events:
            _partitions.pop(tp.partition, None)


def _load(partition: int) -> _Partition:
    p = _partitions[partition] = _Partition(state.load_partition(partition), time.monotonic())
    return p


def _run_partition(ps: PartitionState, evs: Sequence[EventT], outputs: list[tuple[object, EventT]]) -> int | None:
    """Run the core over one partition's events; the last offset processed, or None."""
    last = None
    skip_to = ps.offset
    for ev in evs:
        msg = ev.message
        if msg.offset <= skip_to:
            continue  # already in the stored state (redelivery after a crash)
        raw = ev.value or b""
        if raw[:1] == codec.MAGIC[:1] and len(raw) > parse.MAX_RECORD_BYTES:
            outs = ps.engine.reject(raw, f"too_large: the record is {len(raw)} bytes, the limit is {parse.MAX_RECORD_BYTES}")
        elif raw[:1] == codec.MAGIC[:1]:  # Avro single-object
            try:
                d = codec.decode(raw)
            except codec.DecodeError as exc:
                outs = ps.engine.reject(raw, f"undecodable: {exc}")
            else:
                ps.note(lineage.decoded_entry(d))
                outs = ps.engine.process_event(d, raw)
        else:
            ps.note(lineage.event_entry(raw))
            outs = ps.process(raw)
        for out in outs:
            outputs.append((out, ev))
            if out.__class__ is Milestone:
                ps.note(lineage.milestone_entry(out))
        last = msg.offset
    return last


async def _process(batch: Sequence[EventT]) -> None:
    """Run every partition's events, send all outputs and marks and wait for them once, then store."""
    by_partition: dict[int, list[EventT]] = {}
    for ev in batch:
        by_partition.setdefault(ev.message.partition, []).append(ev)
    outputs: list[tuple[object, EventT]] = []
    marks: list[Mark] = []
    done: list[tuple[PartitionState, EventT, int]] = []
    now = time.monotonic()
    for partition, evs in by_partition.items():
        p = _partitions.get(partition) or _load(partition)
        ps = p.state
        first = evs[0].message.offset
        if first > ps.offset + 1:  # committed input ran ahead of the stored state: must not happen
            log.error("partition %d: state ends at offset %d but consumption resumes at %d", partition, ps.offset, first)
        p.last_batch, was_idle = now, p.idle
        p.idle = False
        last = _run_partition(ps, evs, outputs)
        if last is None:
            continue
        done.append((ps, evs[-1], last))
        wm = ps.engine.watermark
        if wm != p.marked or was_idle:
            marks.append(Mark(partition, last, wm))
            p.marked = wm
    await emit(outputs, marks)
    commits: list[tuple[EventT, state.Flush]] = []
    for ps, last_event, last in done:
        for (etype, source), n in ps.engine.counts.items():
            metrics.EVENTS.labels(etype, source if source in SOURCES else "other").inc(n)
        ps.engine.counts.clear()
        high = app.consumer.highwater(last_event.message.tp)
        if high is not None:
            metrics.CONSUMER_LAG.labels(SETTINGS.topics.events, str(ps.partition)).set(max(0, high - last - 1))
        commits.append((last_event, lambda previous, ps=ps, last=last: ps.flush(last, previous)))
        if ps.engine.watermark is not None:
            metrics.WATERMARK.labels(str(ps.partition)).set(ps.engine.watermark / 1000)
    await state.commit_all(commits, state.governance_state)
    for ps, _, _ in done:
        for name, seconds in ps.sla:
            SLA[name].observe(seconds)
    keys: dict[str, int] = {}
    for local in _partitions.values():
        for table, n in local.state.sizes().items():
            keys[table] = keys.get(table, 0) + n
    for table, n in keys.items():
        metrics.TABLE_KEYS.labels(table).set(n)
    metrics.EVENTS_PROCESSED.inc(len(batch))


@app.agent(events)
async def govern(stream: AsyncIterable[EventT]) -> None:
    """Consume events in batches; one engine per input partition (fail-fast: see _failfast)."""
    async for batch in stream.take_events(SETTINGS.worker.batch_size, within=SETTINGS.worker.batch_within_s):  # type: ignore[attr-defined]
        started = time.perf_counter()
        await or_exit(_process(batch), log, "governance batch", batch)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.LAST_COMMIT.set(time.time())


async def _report_idle() -> None:
    """Tell the inventory stage which assigned input partitions have nothing to read."""
    if app.rebalancing or app.in_recovery:
        return
    now = time.monotonic()
    marks = []
    for tp in app.assignor.assigned_actives():
        if tp.topic != SETTINGS.topics.events:
            continue
        p = _partitions.get(tp.partition) or _load(tp.partition)
        if p.idle or now - p.last_batch < SETTINGS.worker.idle_partition_s:
            continue
        high = app.consumer.highwater(tp)
        if high is not None and p.state.offset + 1 < high:
            continue  # records waiting: slow, not idle
        p.idle = True
        marks.append(Mark(tp.partition, p.state.offset, p.state.engine.watermark, idle=True))
    if marks:
        log.info("input partitions idle: %s", sorted(m.source for m in marks))
        await emit((), marks)


@app.timer(max(0.5, SETTINGS.worker.idle_partition_s / 4))
async def report_idle_partitions() -> None:
    await or_exit(_report_idle(), log, "idle report")
