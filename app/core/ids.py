"""Deterministic milestone ids: sha256 over the unit-separated parts, first 32 hex digits.

The first part is always the milestone type; the rest is the business key the contract
deduplicates on (rule 1), so the same input gives the same id on every replay and worker.
"""

from __future__ import annotations

import hashlib

from app.core.timeutil import format_ts


def milestone_id(*parts: str) -> str:
    """sha256("\\x1f".join(parts)) as hex, truncated to 32 characters."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def order_accepted_id(warehouse_id: str, order_id: str, version: int) -> str:
    return milestone_id("OrderAccepted", warehouse_id, order_id, str(version))


def order_picked_id(warehouse_id: str, order_id: str) -> str:
    return milestone_id("OrderPicked", warehouse_id, order_id)


def order_packed_id(warehouse_id: str, order_id: str) -> str:
    return milestone_id("OrderPacked", warehouse_id, order_id)


def shipment_confirmed_id(warehouse_id: str, order_id: str) -> str:
    return milestone_id("ShipmentConfirmed", warehouse_id, order_id)


def inventory_adjusted_id(warehouse_id: str, sku: str, location: str, window_start: int) -> str:
    """``window_start`` in int ms; it enters the id in its ISO form."""
    return milestone_id("InventoryAdjusted", warehouse_id, sku, location, format_ts(window_start))


def return_received_id(warehouse_id: str, rma_id: str, sku: str) -> str:
    return milestone_id("ReturnReceived", warehouse_id, rma_id, sku)


def record_exception_id(source: str, event_id: str) -> str:
    """SyncException about one record with a usable (source, event_id)."""
    return milestone_id("SyncException", source, event_id)


def unknown_order_id(warehouse_id: str, order_id: str) -> str:
    """The single UNKNOWN_ORDER SyncException of an order."""
    return milestone_id("SyncException", "UNKNOWN_ORDER", warehouse_id, order_id)


def raw_exception_id(raw: bytes) -> str:
    """SyncException about a record without a usable identity: keyed on sha256(raw)."""
    return milestone_id("SyncException", "raw", hashlib.sha256(raw).hexdigest())
