"""Builders for every milestone the rules emit (ids from ``app.core.ids``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.core import ids
from app.core.model import (
    M_INVENTORY_ADJUSTED,
    M_ORDER_ACCEPTED,
    M_ORDER_PACKED,
    M_ORDER_PICKED,
    M_RETURN_RECEIVED,
    M_SHIPMENT_CONFIRMED,
    M_SYNC_EXCEPTION,
    MAX_EVIDENCE,
    Code,
    Event,
    Milestone,
)


def evidence(event_ids: Iterable[str]) -> tuple[str, ...]:
    """The first ``MAX_EVIDENCE`` event ids."""
    out: list[str] = []
    for event_id in event_ids:
        if len(out) == MAX_EVIDENCE:
            break
        out.append(event_id)
    return tuple(out)


def record_exception(ev: Event, code: str, detail: str) -> Milestone:
    """A SyncException about one accepted record (keyed on its source and event_id)."""
    return Milestone(
        ids.record_exception_id(ev.source, ev.event_id),
        M_SYNC_EXCEPTION,
        ev.warehouse_id,
        ev.occurred_at,
        (ev.event_id,),
        {"code": code, "order_id": ev.order_id, "detail": detail},
    )


def invalid_record(
    milestone_id: str,
    warehouse_id: str | None,
    occurred_at: int | None,
    event_ids: tuple[str, ...],
    order_id: str | None,
    detail: str,
) -> Milestone:
    """INVALID_EVENT for a record that failed rule 8 (or the clock check)."""
    return Milestone(
        milestone_id,
        M_SYNC_EXCEPTION,
        warehouse_id,
        occurred_at,
        event_ids,
        {"code": Code.INVALID_EVENT, "order_id": order_id, "detail": detail},
    )


def unknown_order(held: list[Event]) -> Milestone:
    """The one UNKNOWN_ORDER of an order whose held events (arrival order) expired."""
    first = held[0]
    return Milestone(
        ids.unknown_order_id(first.warehouse_id, first.order_id or ""),
        M_SYNC_EXCEPTION,
        first.warehouse_id,
        max(e.occurred_at for e in held),
        evidence(e.event_id for e in held),
        {
            "code": Code.UNKNOWN_ORDER,
            "order_id": first.order_id,
            "detail": f"no OrderReleased within the hold window; {len(held)} held event(s) dropped",
        },
    )


def order_accepted(ev: Event, version: int, lines: Iterable[tuple[int, str, int]]) -> Milestone:
    return Milestone(
        ids.order_accepted_id(ev.warehouse_id, ev.order_id or "", version),
        M_ORDER_ACCEPTED,
        ev.warehouse_id,
        ev.occurred_at,
        (ev.event_id,),
        {
            "order_id": ev.order_id,
            "version": version,
            "lines": [{"line_no": n, "sku": s, "qty": q} for n, s, q in lines],
        },
    )


def order_picked(
    ev: Event, lines: list[dict[str, Any]], short: bool, event_ids: tuple[str, ...]
) -> Milestone:
    return Milestone(
        ids.order_picked_id(ev.warehouse_id, ev.order_id or ""),
        M_ORDER_PICKED,
        ev.warehouse_id,
        ev.occurred_at,
        event_ids,
        {"order_id": ev.order_id, "lines": lines, "short": short},
    )


def order_packed(ev: Event, package_ids: list[str], event_ids: tuple[str, ...]) -> Milestone:
    return Milestone(
        ids.order_packed_id(ev.warehouse_id, ev.order_id or ""),
        M_ORDER_PACKED,
        ev.warehouse_id,
        ev.occurred_at,
        event_ids,
        {"order_id": ev.order_id, "package_ids": list(package_ids)},
    )


def shipment_confirmed(ev: Event, lines: list[dict[str, int]]) -> Milestone:
    """From the dispatch ``ev`` itself (its own time, also when released from a hold)."""
    data = ev.data
    return Milestone(
        ids.shipment_confirmed_id(ev.warehouse_id, ev.order_id or ""),
        M_SHIPMENT_CONFIRMED,
        ev.warehouse_id,
        ev.occurred_at,
        (ev.event_id,),
        {
            "order_id": ev.order_id,
            "shipment_id": data["shipment_id"],
            "carrier": data["carrier"],
            "tracking_no": data["tracking_no"],
            "lines": lines,
        },
    )


def return_received(ev: Event) -> Milestone:
    data = ev.data
    return Milestone(
        ids.return_received_id(ev.warehouse_id, data["rma_id"], data["sku"]),
        M_RETURN_RECEIVED,
        ev.warehouse_id,
        ev.occurred_at,
        (ev.event_id,),
        {
            "rma_id": data["rma_id"],
            "order_id": ev.order_id,
            "sku": data["sku"],
            "qty": data["qty"],
            "disposition": data["disposition"],
        },
    )


def inventory_adjusted(
    warehouse_id: str,
    sku: str,
    location: str,
    window_start: int,
    window_end: int,
    net_delta: int,
    event_count: int,
    event_ids: tuple[str, ...],
) -> Milestone:
    """A closed window; ``occurred_at`` is ``window_end``."""
    return Milestone(
        ids.inventory_adjusted_id(warehouse_id, sku, location, window_start),
        M_INVENTORY_ADJUSTED,
        warehouse_id,
        window_end,
        event_ids,
        {
            "sku": sku,
            "location": location,
            "net_delta": net_delta,
            "event_count": event_count,
            "window_start": window_start,
            "window_end": window_end,
        },
    )
