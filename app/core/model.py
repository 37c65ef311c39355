"""Core vocabulary: event types, authority table, exception codes, and the record shapes
(input ``Event``, output ``Milestone`` and ``DeadLetter``) plus ``CoreSettings``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from app.core.timeutil import format_ts, parse_ts

# Input event types.
ORDER_RELEASED: Final = "OrderReleased"
ORDER_CHANGED: Final = "OrderChanged"
ORDER_CANCELLED: Final = "OrderCancelled"
ITEM_SCANNED: Final = "ItemScanned"
TOTE_CONVEYED: Final = "ToteConveyed"
PICK_CONFIRMED: Final = "PickConfirmed"
LINE_SHORT_CLOSED: Final = "LineShortClosed"
PACK_CONFIRMED: Final = "PackConfirmed"
SHIPMENT_DISPATCHED: Final = "ShipmentDispatched"
STOCK_ADJUSTED: Final = "StockAdjusted"
RETURN_RECEIVED: Final = "ReturnReceived"

SOURCES: Final = frozenset({"erp", "wms", "robotics", "conveyor", "carrier"})

#: type -> the sources that are its system of record (contract, "authority" column).
AUTHORITY: Final[dict[str, frozenset[str]]] = {
    ORDER_RELEASED: frozenset({"erp"}),
    ORDER_CHANGED: frozenset({"erp"}),
    ORDER_CANCELLED: frozenset({"erp"}),
    ITEM_SCANNED: frozenset({"wms", "robotics", "conveyor"}),
    TOTE_CONVEYED: frozenset({"conveyor"}),
    PICK_CONFIRMED: frozenset({"wms", "robotics"}),
    LINE_SHORT_CLOSED: frozenset({"wms"}),
    PACK_CONFIRMED: frozenset({"wms", "robotics"}),
    SHIPMENT_DISPATCHED: frozenset({"wms", "carrier"}),
    STOCK_ADJUSTED: frozenset({"wms", "robotics"}),
    RETURN_RECEIVED: frozenset({"wms"}),
}
TELEMETRY: Final = frozenset({ITEM_SCANNED, TOTE_CONVEYED})
DISPOSITIONS: Final = frozenset({"restock", "scrap", "inspect"})

# Milestone types.
M_ORDER_ACCEPTED: Final = "OrderAccepted"
M_ORDER_PICKED: Final = "OrderPicked"
M_ORDER_PACKED: Final = "OrderPacked"
M_SHIPMENT_CONFIRMED: Final = "ShipmentConfirmed"
M_INVENTORY_ADJUSTED: Final = "InventoryAdjusted"
M_RETURN_RECEIVED: Final = "ReturnReceived"
M_SYNC_EXCEPTION: Final = "SyncException"
MILESTONE_TYPES: Final = (
    M_ORDER_ACCEPTED,
    M_ORDER_PICKED,
    M_ORDER_PACKED,
    M_SHIPMENT_CONFIRMED,
    M_INVENTORY_ADJUSTED,
    M_RETURN_RECEIVED,
    M_SYNC_EXCEPTION,
)


class Code:
    """``SyncException.code`` values."""

    AUTHORITY_CONFLICT: Final = "AUTHORITY_CONFLICT"
    SOURCE_NOT_AUTHORIZED: Final = "SOURCE_NOT_AUTHORIZED"
    UNKNOWN_ORDER: Final = "UNKNOWN_ORDER"
    INVALID_EVENT: Final = "INVALID_EVENT"
    OVER_PICK: Final = "OVER_PICK"
    RETURN_NOT_SHIPPED: Final = "RETURN_NOT_SHIPPED"
    ORDER_CANCELLED: Final = "ORDER_CANCELLED"
    NOT_PACKED: Final = "NOT_PACKED"


MAX_EVIDENCE: Final = 50
_TOP: Final = ("milestone_id", "type", "warehouse_id", "occurred_at", "event_ids")
_TIME_FIELDS: Final = ("window_start", "window_end")

HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """Tunables of the governance rules, all in milliseconds of event time."""

    dedup_retention_ms: int = 24 * HOUR_MS
    hold_window_ms: int = 15 * MINUTE_MS
    window_size_ms: int = 5 * MINUTE_MS
    window_grace_ms: int = 1 * MINUTE_MS
    future_tolerance_ms: int = 5 * MINUTE_MS


class Event(NamedTuple):
    """A validated input event (immutable; a NamedTuple because it is built per event).

    ``data`` holds the type-specific fields, normalised: ``lines`` is a tuple of
    ``(line_no, sku, qty)``, ``items`` a tuple of ``(line_no, qty)``, ``package_ids`` a
    tuple of str; optional fields are present only when given.
    """

    event_id: str
    type: str
    source: str
    occurred_at: int
    warehouse_id: str
    order_id: str | None
    data: dict[str, Any]

    def to_record(self) -> dict[str, Any]:
        """Plain contract-shaped dict (``occurred_at`` in int ms); ``parse.validate`` reads it."""
        rec: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "source": self.source,
            "occurred_at": self.occurred_at,
            "warehouse_id": self.warehouse_id,
        }
        if self.order_id is not None:
            rec["order_id"] = self.order_id
        for key, value in self.data.items():
            if key == "lines":
                value = [{"line_no": n, "sku": s, "qty": q} for n, s, q in value]
            elif key == "items":
                value = [{"line_no": n, "qty": q} for n, q in value]
            elif key == "package_ids":
                value = list(value)
            rec[key] = value
        return rec


def new_event(fields: tuple[str, str, str, int, str, str | None, dict[str, Any]]) -> Event:
    """``Event(*fields)`` without the generated ``__new__`` (about 4x cheaper per event)."""
    return _tuple_new(Event, fields)


_tuple_new = tuple.__new__


@dataclass(frozen=True, slots=True, init=False)
class Milestone:
    """A record for the ERP. ``body`` holds the type-specific fields (contract names;
    ``window_start``/``window_end`` as int ms); ``occurred_at`` is int ms or None."""

    milestone_id: str
    type: str
    warehouse_id: str | None
    occurred_at: int | None
    event_ids: tuple[str, ...]
    body: dict[str, Any]

    def __init__(
        self,
        milestone_id: str,
        type: str,  # the contract's field name (shadows the builtin on purpose)
        warehouse_id: str | None,
        occurred_at: int | None,
        event_ids: tuple[str, ...],
        body: dict[str, Any] | None = None,
    ) -> None:
        # A generated frozen __init__ costs ~2 us (object.__setattr__ per field); one is
        # built per milestone, so the slots are filled through their descriptors instead.
        _SET_ID(self, milestone_id)
        _SET_TYPE(self, type)
        _SET_WAREHOUSE(self, warehouse_id)
        _SET_OCCURRED(self, occurred_at)
        _SET_EVENT_IDS(self, event_ids)
        _SET_BODY(self, {} if body is None else body)

    def to_wire(self) -> dict[str, Any]:
        """The contract's fields at top level with timestamps as int ms, as the Avro
        records carry them (``timestamp-millis``): what the worker encodes, without
        formatting a time only for the encoder to parse it back."""
        return {
            "milestone_id": self.milestone_id,
            "type": self.type,
            "warehouse_id": self.warehouse_id,
            "occurred_at": self.occurred_at,
            "event_ids": list(self.event_ids),
            **self.body,
        }

    def to_dict(self) -> dict[str, Any]:
        """The contract JSON form: every field at top level, timestamps as ISO strings."""
        out = self.to_wire()
        occurred_at = self.occurred_at
        if occurred_at is not None:
            out["occurred_at"] = format_ts(occurred_at)
        if self.type == M_INVENTORY_ADJUSTED:
            for key in _TIME_FIELDS:
                out[key] = format_ts(out[key])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Milestone:
        """Inverse of ``to_dict`` (timestamps may be ISO strings, int ms or datetimes)."""
        body = {k: v for k, v in d.items() if k not in _TOP}
        for key in _TIME_FIELDS:
            if key in body:
                body[key] = parse_ts(body[key])
        occurred_at = d.get("occurred_at")
        return cls(
            milestone_id=d["milestone_id"],
            type=d["type"],
            warehouse_id=d.get("warehouse_id"),
            occurred_at=None if occurred_at is None else parse_ts(occurred_at),
            event_ids=tuple(d.get("event_ids") or ()),
            body=body,
        )


_SET_ID, _SET_TYPE, _SET_WAREHOUSE, _SET_OCCURRED, _SET_EVENT_IDS, _SET_BODY = (
    Milestone.__dict__[name].__set__
    for name in ("milestone_id", "type", "warehouse_id", "occurred_at", "event_ids", "body")
)


@dataclass(frozen=True, slots=True)
class StockForward:
    """A ``StockAdjusted`` that passed rules 8, 1 and 2 and was on time at its input
    partition's watermark, handed to the inventory stage (re-keyed by (warehouse_id,
    sku, location)); ``watermark`` is that partition's watermark after the event."""

    event: Event
    watermark: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that failed rule 8: its raw bytes, why, and its record identity.

    ``record_id`` is the ``milestone_id`` of the record's INVALID_EVENT SyncException
    (a hash of (source, event_id), or of the raw bytes when there is no usable identity).
    """

    raw: bytes
    reason: str
    record_id: str
