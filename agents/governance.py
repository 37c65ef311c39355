"""The governance stage: warehouse events in, governed milestones out.

Thin by design: per batch and input partition it decodes, runs the pure core, emits
the outputs (flushed), then stores the partition's state (meta last). Events are
keyed by (warehouse_id, order_id) (``app.core.keys``), so an order's events stay
ordered in one partition; each partition has its own event-time watermark. On-time
StockAdjusted go on to the inventory agent (``agents/inventory.py``) through the
stock topic with this partition's watermark (a mark after every batch that moved it,
an idle mark when the partition has had nothing to read for ``WORKER_IDLE_PARTITION_S``).

The input path. Faust hands a stream one message at a time at ~200 µs of its own
work each (~5k events/s here, whatever the agent does; see docs/benchmarks.md), so
this stage reads the events topic with a confluent-kafka consumer in batches instead,
and leaves to Faust what it does well: group membership, partition assignment, the
state tables (RocksDB + changelog, standbys, recovery) and the web server. The
worker reads events partition P exactly while Faust has it assigned partition P of
the stock topic (all topics and changelogs share the partition count and Faust
co-assigns equal partition numbers), starts only once P's table has recovered, and
resumes at the offset stored in P's state (the state and its input offset are one
commit, so nothing is skipped or applied twice). Offsets are also committed to
``<WORKER_APP_ID>-events`` for lag monitoring; they are never read back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from app import codec, metrics
from app.core import parse
from app.core.model import SOURCES, Milestone
from app.core.stock import Mark
from app.faust_app import SETTINGS, app
from app.kafka_io import client_config
from app.topics import dead_letters, events, exceptions, milestones, stock
from agents._failfast import or_exit
from agents._outputs import emit
from tables import lineage, state
from tables.records import PartitionState

log = logging.getLogger(__name__)
SLA = {"release_to_picked": metrics.SLA_RELEASE_TO_PICKED, "packed_to_shipped": metrics.SLA_PACKED_TO_SHIPPED}
TOPIC = SETTINGS.topics.events
OWNER_TOPIC = SETTINGS.topics.stock  # Faust's assignment of this topic decides which events partitions we read


@dataclass
class _Partition:
    """An owned input partition: its state and what the inventory stage has been told."""

    state: PartitionState
    last_record: float  # time.monotonic() of its last record (or of its load)
    marked: int | None = None  # the watermark last reported
    idle: bool = False


_partitions: dict[int, _Partition] = {}
#: Held while a batch is processed; a revocation waits for it.
_batch = asyncio.Lock()


@app.on_partitions_revoked.connect
async def _forget_revoked(sender: object, revoked: set, **_: object) -> None:  # type: ignore[type-arg]
    """Let the batch in flight finish, then drop the revoked partitions' engines (a
    partition assigned again later reloads from its recovered table)."""
    async with _batch:
        for tp in revoked:
            if tp.topic == OWNER_TOPIC:
                _partitions.pop(tp.partition, None)


def _owned() -> set[int] | None:
    """The events partitions this worker reads now; None while Faust rebalances or recovers."""
    if app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set():
        return None
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == OWNER_TOPIC}


def _run_partition(ps: PartitionState, msgs: Sequence[Message], outputs: list[tuple[object, state.Origin]]) -> int | None:
    """Run the core over one partition's records; the last offset processed, or None."""
    last = None
    skip_to = ps.offset
    for msg in msgs:
        offset = msg.offset()
        if offset <= skip_to:
            continue  # already in the stored state
        raw = msg.value() or b""
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
            d = parse.decode(raw)  # once: for the lineage and the core
            if d.__class__ is dict:
                ps.note(lineage.decoded_entry(d))  # type: ignore[arg-type]
                outs = ps.engine.process_event(d, raw)  # type: ignore[arg-type]
            else:
                outs = ps.process(raw)  # undecodable: the core's INVALID_EVENT and dead letter
        if outs:
            origin = state.Origin(TOPIC, msg.partition(), offset)
            for out in outs:
                outputs.append((out, origin))
                if out.__class__ is Milestone:
                    ps.note(lineage.milestone_entry(out))
        last = offset
    return last


async def _process(by_partition: dict[int, list[Message]], highs: dict[int, int]) -> None:
    """Run every partition's records, send all outputs and marks and wait for them once,
    then store every partition's state."""
    outputs: list[tuple[object, state.Origin]] = []
    marks: list[Mark] = []
    done: list[tuple[PartitionState, int]] = []
    now = time.monotonic()
    state.CLOCK.tick()
    for partition, msgs in by_partition.items():
        p = _partitions[partition]
        p.last_record = now
        was_idle, p.idle = p.idle, False
        last = _run_partition(p.state, msgs, outputs)
        if last is None:
            continue
        done.append((p.state, last))
        wm = p.state.engine.watermark
        if wm != p.marked or was_idle:
            marks.append(Mark(partition, last, wm))
            p.marked = wm
    marks.extend(_idle_marks(now, highs))
    await emit(outputs, marks)
    await state.commit_all(
        [(state.Origin(TOPIC, ps.partition, last), lambda previous, ps=ps, last=last: ps.flush(last, previous)) for ps, last in done],
        state.governance_state,
    )
    count = 0
    for ps, last in done:
        for (etype, source), n in ps.engine.counts.items():
            metrics.EVENTS.labels(etype, source if source in SOURCES else "other").inc(n)
            count += n
        ps.engine.counts.clear()
        for name, seconds in ps.sla:
            SLA[name].observe(seconds)
        if ps.engine.watermark is not None:
            metrics.WATERMARK.labels(str(ps.partition)).set(ps.engine.watermark / 1000)
        high = highs.get(ps.partition)
        if high is not None:
            metrics.CONSUMER_LAG.labels(TOPIC, str(ps.partition)).set(max(0, high - last - 1))
    sizes: dict[str, int] = {}
    for local in _partitions.values():
        for table, n in local.state.sizes().items():
            sizes[table] = sizes.get(table, 0) + n
    for table, n in sizes.items():
        metrics.TABLE_KEYS.labels(table).set(n)
    metrics.EVENTS_PROCESSED.inc(sum(len(m) for m in by_partition.values()))


def _idle_marks(now: float, highs: dict[int, int]) -> list[Mark]:
    """Idle marks for owned partitions with nothing to read for WORKER_IDLE_PARTITION_S."""
    marks = []
    for partition, p in _partitions.items():
        if p.idle or now - p.last_record < SETTINGS.worker.idle_partition_s:
            continue
        high = highs.get(partition)
        if high is not None and p.state.offset + 1 < high:
            continue  # records waiting: slow, not idle
        p.idle = True
        marks.append(Mark(partition, p.state.offset, p.state.engine.watermark, idle=True))
        log.info("input partition %d idle at offset %d", partition, p.state.offset)
    return marks


class _Reader:
    """The events consumer: manual assignment, used from one thread only."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="events-reader")
        self.consumer = Consumer(
            {
                **client_config(SETTINGS.kafka.bootstrap_servers, SETTINGS.kafka),
                "group.id": f"{SETTINGS.worker.app_id}-events",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
            }
        )
        self.assigned: set[int] | None = None

    async def call(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def sync(self, owned: set[int]) -> None:
        """Read exactly ``owned``, each from the offset after its stored state."""
        for partition in list(_partitions):
            if partition not in owned:
                del _partitions[partition]
        for partition in owned - _partitions.keys():
            _partitions[partition] = _Partition(state.load_partition(partition), time.monotonic())
        starts = [TopicPartition(TOPIC, p, _partitions[p].state.offset + 1) for p in sorted(owned)]
        await self.call(self.consumer.assign, starts)
        self.assigned = owned
        log.info("reading %s partitions %s", TOPIC, sorted(owned))

    def highs(self) -> dict[int, int]:
        """The broker's last reported end offset of each assigned partition (cached)."""
        out = {}
        for partition in self.assigned or ():
            _, high = self.consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), cached=True)
            if high >= 0:
                out[partition] = high
        return out

    def commit(self) -> None:
        offsets = [TopicPartition(TOPIC, p, x.state.offset + 1) for p, x in _partitions.items() if x.state.offset >= 0]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=True)


async def _read_loop() -> None:
    for topic in (events, milestones, exceptions, dead_letters, stock):
        await topic.maybe_declare()  # the input may not exist yet; outputs go through confluent-kafka
    reader = _Reader()
    size, within = SETTINGS.worker.batch_size, SETTINGS.worker.batch_within_s
    try:
        while True:
            owned = _owned()
            if owned is None:
                await asyncio.sleep(0.1)
                continue
            if owned != reader.assigned or owned != _partitions.keys():
                async with _batch:
                    await reader.sync(owned)
            if not owned:
                await asyncio.sleep(0.2)
                continue
            msgs = await reader.call(reader.consumer.consume, size, within)
            started = time.perf_counter()
            async with _batch:
                if _owned() != reader.assigned or owned != _partitions.keys():
                    reader.assigned = None  # assignment changed meanwhile: resync (and re-seek) first
                    continue
                by_partition: dict[int, list[Message]] = {}
                for msg in msgs:
                    if msg.error() is None:
                        by_partition.setdefault(msg.partition(), []).append(msg)
                    else:
                        log.warning("events consumer: %s", msg.error())
                await _process(by_partition, reader.highs())
                if by_partition:
                    reader.commit()  # progress for lag monitoring; nothing new when idle
            if msgs:
                metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
                metrics.LAST_COMMIT.set(time.time())
    finally:
        await reader.call(reader.consumer.close)
        reader.executor.shutdown(wait=False)


@app.task
async def govern() -> None:
    """Read the owned events partitions in batches (fail-fast: see agents/_failfast.py)."""
    await or_exit(_read_loop(), log, "governance stage")
