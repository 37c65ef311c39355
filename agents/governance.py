"""The governance agent: warehouse events in, governed milestones out.

Thin by design: per batch and input partition it decodes, runs the pure core, emits
the outputs (flushed), then stores the partition's state (meta last). Events are
keyed by warehouse_id, so a site's stream stays ordered in one partition and its
event-time watermark is exact; redeliveries up to the stored offset are skipped.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Sequence

from faust.types import EventT

from app import codec, metrics
from app.core import parse
from app.core.model import M_ORDER_ACCEPTED, M_SYNC_EXCEPTION, SOURCES, DeadLetter, Milestone
from app.faust_app import SETTINGS, app
from app.topics import dead_letters, events, exceptions, milestones
from agents._failfast import or_exit
from tables import ledger, lineage, state
from tables.records import PartitionState

log = logging.getLogger(__name__)
SLA = {"release_to_picked": metrics.SLA_RELEASE_TO_PICKED, "packed_to_shipped": metrics.SLA_PACKED_TO_SHIPPED}
_partitions: dict[int, PartitionState] = {}


@app.on_partitions_revoked.connect
async def _forget_revoked(sender: object, revoked: set, **_: object) -> None:  # type: ignore[type-arg]
    """Revoked partitions' engines go; a partition reassigned later reloads from the table."""
    for tp in revoked:
        if tp.topic == SETTINGS.topics.events:
            _partitions.pop(tp.partition, None)


def milestone_key(m: Milestone) -> bytes:
    """One order's (or stock key's) milestones stay in one partition, in order."""
    body = m.body
    if "order_id" in body and body["order_id"]:
        return ledger.document_key(m.warehouse_id or "", body["order_id"])
    if "sku" in body and "location" in body:
        return f"{m.warehouse_id}|{body['sku']}|{body['location']}".encode()
    return m.milestone_id.encode()


def reason_category(reason: str) -> str:
    """A bounded label for a dead letter's reason (the full reason is in the record)."""
    if reason.startswith("undecodable"):
        return "undecodable"
    if reason.startswith("too_large"):
        return "too_large"
    return reason if reason == "future" else "invalid_field"


async def _emit(outputs: list[tuple[object, EventT]]) -> None:
    """Send every output and wait until the broker has them all."""
    pending = []
    for out, ev in outputs:
        if isinstance(out, Milestone):
            topic = exceptions if out.type == M_SYNC_EXCEPTION else milestones
            value = codec.encode_milestone(out.to_dict())
            pending.append(await topic.send(key=milestone_key(out), value=value))
            metrics.MILESTONES.labels(out.type).inc()
            if out.type == M_ORDER_ACCEPTED and out.body["version"] == 1 and out.occurred_at is not None:
                metrics.SLA_RELEASE_TO_ACCEPTED.observe(max(0.0, time.time() - out.occurred_at / 1000))
            if out.type == M_SYNC_EXCEPTION:
                metrics.SYNC_EXCEPTIONS.labels(out.body["code"]).inc()
        elif isinstance(out, DeadLetter):
            msg = ev.message
            value = codec.encode_dead_letter(
                raw=out.raw,
                reason=out.reason,
                record_id=out.record_id,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                failed_at=int(time.time() * 1000),
            )
            pending.append(await dead_letters.send(key=out.record_id.encode(), value=value))
            metrics.DEAD_LETTERS.labels(reason_category(out.reason)).inc()
    if pending:
        await asyncio.gather(*pending)


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
    """Run every partition's events, send all outputs and wait for them once, then store."""
    by_partition: dict[int, list[EventT]] = {}
    for ev in batch:
        by_partition.setdefault(ev.message.partition, []).append(ev)
    outputs: list[tuple[object, EventT]] = []
    done: list[tuple[PartitionState, EventT, int]] = []
    for partition, evs in by_partition.items():
        ps = _partitions.get(partition)
        if ps is None:
            ps = _partitions[partition] = state.load_partition(partition)
            first = evs[0].message.offset
            if first > ps.offset + 1:  # see the note on issue #4: a stop during a batch's send
                log.error("partition %d: state ends at offset %d but consumption resumes at %d",
                          partition, ps.offset, first)
        last = _run_partition(ps, evs, outputs)
        if last is not None:
            done.append((ps, evs[-1], last))
    await _emit(outputs)
    for ps, last_event, last in done:
        for (etype, source), n in ps.engine.counts.items():
            metrics.EVENTS.labels(etype, source if source in SOURCES else "other").inc(n)
        ps.engine.counts.clear()
        high = app.consumer.highwater(last_event.message.tp)
        if high is not None:
            metrics.CONSUMER_LAG.labels(SETTINGS.topics.events, str(ps.partition)).set(max(0, high - last - 1))
        state.write(last_event, ps.flush(last, state.stored))
        for name, seconds in ps.sla:
            SLA[name].observe(seconds)
        if ps.engine.watermark is not None:
            metrics.WATERMARK.labels(str(ps.partition)).set(ps.engine.watermark / 1000)
    keys: dict[str, int] = {}
    for local in _partitions.values():
        for table, n in local.sizes().items():
            keys[table] = keys.get(table, 0) + n
    for table, n in keys.items():
        metrics.TABLE_KEYS.labels(table).set(n)
    metrics.EVENTS_PROCESSED.inc(len(batch))


@app.agent(events)
async def govern(stream: AsyncIterable[EventT]) -> None:
    """Consume events in batches; one engine per input partition (fail-fast: see _failfast)."""
    async for batch in stream.take_events(SETTINGS.worker.batch_size, within=SETTINGS.worker.batch_within_s):  # type: ignore[attr-defined]
        started = time.perf_counter()
        await or_exit(_process(batch), log, "governance batch")
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.LAST_COMMIT.set(time.time())
