"""The ERP sink: governed milestones out of Kafka into the ERP, exactly once in effect.

Per batch: decode, drop what the ledger already has, then post each document's
milestones in order (documents concurrently, one shared adaptive rate limit).
Transient failures retry with capped, jittered backoff for as long as it takes (the
backlog waits in Kafka, not in memory); permanent ones go to the ERP dead-letter
topic with the ERP's answer. The ledger is written before the batch is acked, so
a crash re-posts at most the batch in flight, which the adapters' read-before-write
turns into acknowledgements.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from faust.types import EventT

from app import codec, metrics
from app.core.model import Milestone
from app.core.timeutil import format_ts, parse_ts
from app.erp import PermanentErpError, TransientErpError, make_port, post_with_retry
from app.erp.port import ErpPort
from app.faust_app import SETTINGS, app
from app.topics import erp_dead_letters, milestones
from agents._failfast import or_exit
from tables import ledger, lineage, state
from tables.records import Write

log = logging.getLogger(__name__)
ERP = SETTINGS.erp
SLA = {
    "ShipmentConfirmed": metrics.SLA_SHIPPED_TO_POSTED,
    "ReturnReceived": metrics.SLA_RETURN_TO_POSTED,
}


@dataclass(frozen=True)
class Result:
    event: EventT
    milestone: dict[str, Any]
    outcome: str  # posted, already_done, skipped, dead_lettered
    document_ref: str
    detail: str = ""
    status: int | None = None


def decode_milestone(raw: bytes) -> dict[str, Any]:
    """A milestones-topic record in the contract JSON form."""
    return Milestone.from_dict(codec.decode(raw)).to_dict()


class Revoked(Exception):
    """A rebalance began: the partitions may move to another worker, so this one makes no
    further ERP call for the batch (two workers posting one milestone at once could both
    pass the read-before-write)."""


def still_owner() -> None:
    if app.rebalancing:
        raise Revoked


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
    still_owner()


async def post_one(port: ErpPort, ev: EventT, m: dict[str, Any]) -> Result:
    """Post until the ERP answers for good: posted/acknowledged, or a permanent error;
    ``Revoked`` when a rebalance begins first."""
    while True:
        still_owner()
        try:
            result = await post_with_retry(
                port,
                m,
                max_retries=ERP.max_retries,
                backoff_base_s=ERP.backoff_base_s,
                backoff_cap_s=ERP.backoff_cap_s,
                rand=random.random,
                sleep=_sleep,
            )
        except TransientErpError as exc:
            metrics.ERP_CALLS.labels(m["type"], "transient_error").inc()
            log.warning("ERP still failing for %s %s after retries: %s", m["type"], m["milestone_id"], exc)
            await _sleep(ERP.backoff_cap_s)
            continue
        except PermanentErpError as exc:
            metrics.ERP_CALLS.labels(m["type"], "permanent_error").inc()
            return Result(ev, m, "dead_lettered", "", exc.detail, exc.status)
        metrics.ERP_CALLS.labels(m["type"], result.outcome).inc()
        if result.outcome == "posted" and m["type"] in SLA and m.get("occurred_at"):
            SLA[m["type"]].observe(max(0.0, time.time() - parse_ts(m["occurred_at"]) / 1000))
        return Result(ev, m, result.outcome, result.document_ref)


async def post_document(port: ErpPort, items: list[tuple[EventT, dict[str, Any]]]) -> list[Result]:
    """One document's milestones, strictly in order."""
    return [await post_one(port, ev, m) for ev, m in items]


def _call_entry(r: Result) -> dict[str, Any]:
    """The order-lineage entry of one ERP call (see tables/lineage.py)."""
    entry = {"at": int(time.time() * 1000), "kind": "erp_call", "id": r.milestone["milestone_id"],
             "type": r.milestone["type"], "outcome": r.outcome, "document_ref": r.document_ref}
    if r.detail:
        entry["detail"] = r.detail
    return entry


def _ledger_value(r: Result) -> bytes:
    return orjson.dumps(
        {"outcome": r.outcome, "ref": r.document_ref, "at": format_ts(int(time.time() * 1000)), "type": r.milestone["type"]}
    )


async def _dead_letter(r: Result) -> None:
    value = orjson.dumps(
        {
            "milestone_id": r.milestone["milestone_id"],
            "type": r.milestone["type"],
            "milestone": r.milestone,
            "status": r.status,
            "detail": r.detail,
            "failed_at": format_ts(int(time.time() * 1000)),
        }
    )
    await (await erp_dead_letters.send(key=r.event.key, value=value))


def _update_backlog(batch: list[EventT]) -> None:
    lag = 0
    for ev in batch:
        msg = ev.message
        high = app.consumer.highwater(msg.tp)
        if high is not None:
            lag = max(lag, high - msg.offset - 1)
    metrics.ERP_BACKLOG.set(lag)
    oldest = batch[0].message.timestamp
    metrics.ERP_BACKLOG_AGE.set(max(0.0, time.time() - oldest) if lag else 0.0)


async def run_batch(port: ErpPort, batch: list[EventT]) -> None:
    docs: dict[bytes, list[tuple[EventT, dict[str, Any]]]] = {}
    for ev in batch:
        m = decode_milestone(ev.value)
        state.bind(ev)  # the ledger entry is in this milestone's partition
        if ledger.is_done(m["milestone_id"]):
            metrics.ERP_CALLS.labels(m["type"], "deduplicated").inc()
            continue
        docs.setdefault(ev.key or b"", []).append((ev, m))
    _update_backlog(batch)
    # Per milestones partition (= ledger changelog partition): its ledger entries and trails.
    writes: dict[int, tuple[EventT, list[Callable[[Callable[[bytes], bytes | None]], Write]]]] = {}
    outcomes = await asyncio.gather(*(post_document(port, items) for items in docs.values()), return_exceptions=True)
    if abandon_if_revoked(batch, outcomes):
        return
    for results in outcomes:
        if not results:
            continue
        makers = writes.setdefault(results[-1].event.message.partition, (results[-1].event, []))[1]
        calls: dict[bytes, list[dict[str, Any]]] = {}
        for r in results:
            if r.outcome == "dead_lettered":
                await _dead_letter(r)
            entry = (r.milestone["milestone_id"].encode(), _ledger_value(r))
            makers.append(lambda _, entry=entry: entry)
            if r.milestone.get("order_id"):
                calls.setdefault(ledger.order_key(r.milestone["warehouse_id"], r.milestone["order_id"]), []).append(
                    _call_entry(r)
                )
        for key, entries in calls.items():
            makers.append(lambda previous, key=key, entries=entries: _trail(previous, key, entries))
    await state.commit_all(
        [(ev, lambda previous, makers=makers: [make(previous) for make in makers]) for ev, makers in writes.values()],
        ledger.erp_ledger,
    )


def abandon_if_revoked(batch: Sequence[EventT], outcomes: Sequence[object]) -> bool:
    """After every document has stopped: True when a rebalance cut the batch short. Its
    messages are then marked acked without acking them (see agents/_failfast.py), so their
    offsets are not committed and the next owner posts them again (what was posted already
    is an acknowledgement by the read-before-write). Other errors are re-raised."""
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if not errors:
        return False
    if not all(isinstance(e, Revoked) for e in errors):
        raise next(e for e in errors if not isinstance(e, Revoked))
    for ev in batch:
        ev.message.acked = True
    log.info("rebalance during an ERP batch: %d milestones left to the next owner", len(batch))
    return True


def _trail(previous: Callable[[bytes], bytes | None], key: bytes, entries: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    """An order's ERP-call trail with this batch's calls appended (one document: one partition)."""
    return key, orjson.dumps(lineage.extend(orjson.loads(previous(key) or b"[]"), entries))


if ERP.sink_enabled:

    @app.agent(milestones)
    async def post_to_erp(stream: AsyncIterable[EventT]) -> None:
        """Milestones topic -> ERP (see the module docstring)."""
        port = make_port(ERP, before_send=still_owner)  # no request once a rebalance begins
        metrics.ERP_RATE.set(ERP.rate_per_s)
        try:
            # Small batches: a rebalance waits for the batch in flight (see the README, Guarantees).
            async for batch in stream.take_events(20, within=0.2):  # type: ignore[attr-defined]
                await or_exit(run_batch(port, list(batch)), log, "ERP sink batch", batch)
        finally:
            await port.close()
