"""Sending what the core produced: milestones (Avro) keyed so that one order's or one
stock key's milestones stay in order, dead letters with their origin, and forwards and
watermark marks to the inventory stage's repartition topic."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import Protocol

from app import codec, metrics
from app.core import keys
from app.core.model import M_ORDER_ACCEPTED, M_SYNC_EXCEPTION, DeadLetter, Milestone, StockForward
from app.core.stock import Mark, encode_forward, encode_mark
from app.faust_app import SETTINGS
from app.topics import dead_letters, exceptions, milestones, stock


class Origin(Protocol):
    """Where an output's input record came from (a Faust message or ``tables.state.Origin``)."""

    topic: str
    partition: int
    offset: int


def milestone_key(m: Milestone) -> bytes:
    """One order's (or stock key's) milestones stay in one partition, in order."""
    body = m.body
    if "order_id" in body and body["order_id"]:
        return keys.order_key(m.warehouse_id or "", body["order_id"])
    if "sku" in body and "location" in body:
        return keys.stock_key(m.warehouse_id or "", body["sku"], body["location"])
    return m.milestone_id.encode()


def reason_category(reason: str) -> str:
    """A bounded label for a dead letter's reason (the full reason is in the record)."""
    if reason.startswith("undecodable"):
        return "undecodable"
    if reason.startswith("too_large"):
        return "too_large"
    return reason if reason == "future" else "invalid_field"


async def emit(outputs: Iterable[tuple[object, Origin]], marks: Iterable[Mark] = ()) -> None:
    """Send every output, then the marks (to every stock partition), and wait until the
    broker has them all. Per partition the producer keeps this order."""
    pending: list[Awaitable[object]] = []
    for out, msg in outputs:
        cls = out.__class__
        if cls is Milestone:
            pending.append(await _milestone(out))  # type: ignore[arg-type]
        elif cls is StockForward:
            e = out.event  # type: ignore[attr-defined]
            value = encode_forward(msg.partition, msg.offset, e, out.watermark)  # type: ignore[attr-defined]
            key = keys.stock_key(e.warehouse_id, e.data["sku"], e.data["location"])
            pending.append(await stock.send(key=key, value=value))
        elif cls is DeadLetter:
            value = codec.encode_dead_letter(
                raw=out.raw,  # type: ignore[attr-defined]
                reason=out.reason,  # type: ignore[attr-defined]
                record_id=out.record_id,  # type: ignore[attr-defined]
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                failed_at=int(time.time() * 1000),
            )
            pending.append(await dead_letters.send(key=out.record_id.encode(), value=value))  # type: ignore[attr-defined]
            metrics.DEAD_LETTERS.labels(reason_category(out.reason)).inc()  # type: ignore[attr-defined]
    for mark in marks:
        value = encode_mark(mark)
        for partition in range(SETTINGS.topics.partitions):
            pending.append(await stock.send(key=b"", value=value, partition=partition))
    if pending:
        await asyncio.gather(*pending)


async def _milestone(m: Milestone) -> Awaitable[object]:
    topic = exceptions if m.type == M_SYNC_EXCEPTION else milestones
    sent = await topic.send(key=milestone_key(m), value=codec.encode_milestone(m.to_dict()))
    metrics.MILESTONES.labels(m.type).inc()
    if m.type == M_ORDER_ACCEPTED and m.body["version"] == 1 and m.occurred_at is not None:
        metrics.SLA_RELEASE_TO_ACCEPTED.observe(max(0.0, time.time() - m.occurred_at / 1000))
    if m.type == M_SYNC_EXCEPTION:
        metrics.SYNC_EXCEPTIONS.labels(m.body["code"]).inc()
    return sent
