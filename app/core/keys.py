"""Kafka record keys: how events, forwards and milestones are partitioned.

The events topic is keyed by (warehouse_id, order_id) for every record that names an
order, so one order's events stay ordered in one partition, and by warehouse_id for the
rest (stock adjustments and order-less telemetry: a site's feed). StockAdjusted are
re-keyed by (warehouse_id, sku, location) for the inventory stage. Milestones use the
same keys, so one order's (or one stock key's) milestones stay in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.model import Milestone


def order_key(warehouse_id: str, order_id: str) -> bytes:
    return f"{warehouse_id}|{order_id}".encode()


def stock_key(warehouse_id: str, sku: str, location: str) -> bytes:
    return f"{warehouse_id}|{sku}|{location}".encode()


def event_key(event: Mapping[str, Any]) -> bytes:
    """The events-topic key of a (decoded) event; tolerant of missing fields."""
    warehouse_id = event.get("warehouse_id")
    wh = warehouse_id if isinstance(warehouse_id, str) else ""
    order_id = event.get("order_id")
    if isinstance(order_id, str) and order_id:
        return order_key(wh, order_id)
    return wh.encode()


def milestone_key(m: Milestone) -> bytes:
    """A milestone's key: one order's (or stock key's) milestones stay in one partition, in order."""
    body = m.body
    if body.get("order_id"):
        return order_key(m.warehouse_id or "", body["order_id"])
    if "sku" in body and "location" in body:
        return stock_key(m.warehouse_id or "", body["sku"], body["location"])
    return m.milestone_id.encode()
