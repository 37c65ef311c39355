"""Simulator configuration (frozen dataclasses) and the contract tables it relies on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Final

SOURCES: Final = ("erp", "wms", "robotics", "conveyor", "carrier")

#: type -> allowed sources (the contract's authority column).
AUTHORITY: Final[dict[str, frozenset[str]]] = {
    "OrderReleased": frozenset({"erp"}),
    "OrderChanged": frozenset({"erp"}),
    "OrderCancelled": frozenset({"erp"}),
    "ItemScanned": frozenset({"wms", "robotics", "conveyor"}),
    "ToteConveyed": frozenset({"conveyor"}),
    "PickConfirmed": frozenset({"wms", "robotics"}),
    "LineShortClosed": frozenset({"wms"}),
    "PackConfirmed": frozenset({"wms", "robotics"}),
    "ShipmentDispatched": frozenset({"wms", "carrier"}),
    "StockAdjusted": frozenset({"wms", "robotics"}),
    "ReturnReceived": frozenset({"wms"}),
}

TELEMETRY: Final = frozenset({"ItemScanned", "ToteConveyed"})

#: Fields every input event has, with their JSON kind.
COMMON: Final[dict[str, str]] = {
    "event_id": "str",
    "type": "str",
    "occurred_at": "str",
    "source": "str",
    "warehouse_id": "str",
}

#: type -> required type-specific fields -> JSON kind ('str', 'int', 'list').
REQUIRED: Final[dict[str, dict[str, str]]] = {
    "OrderReleased": {"order_id": "str", "lines": "list"},
    "OrderChanged": {"order_id": "str", "lines": "list"},
    "OrderCancelled": {"order_id": "str"},
    "ItemScanned": {"barcode": "str", "location": "str", "device_id": "str"},
    "ToteConveyed": {"tote_id": "str", "scanner_id": "str", "lane": "str"},
    "PickConfirmed": {"order_id": "str", "line_no": "int", "sku": "str", "qty": "int", "location": "str"},
    "LineShortClosed": {"order_id": "str", "line_no": "int"},
    "PackConfirmed": {"order_id": "str", "package_id": "str", "items": "list"},
    "ShipmentDispatched": {
        "order_id": "str",
        "shipment_id": "str",
        "carrier": "str",
        "tracking_no": "str",
        "package_ids": "list",
    },
    "StockAdjusted": {"sku": "str", "location": "str", "delta": "int", "reason": "str"},
    "ReturnReceived": {"rma_id": "str", "order_id": "str", "sku": "str", "qty": "int", "disposition": "str"},
}

#: type -> optional fields -> JSON kind ('float' for weight_kg).
OPTIONAL: Final[dict[str, dict[str, str]]] = {
    "OrderReleased": {"wave_id": "str", "carrier": "str"},
    "ItemScanned": {"order_id": "str", "tote_id": "str"},
    "ToteConveyed": {"order_id": "str"},
    "PickConfirmed": {"tote_id": "str", "wave_id": "str"},
    "PackConfirmed": {"weight_kg": "float"},
}

DISPOSITIONS: Final = ("restock", "scrap", "inspect")
CARRIERS: Final = ("DHL", "UPS", "FEDEX", "DPD", "GLS")


@dataclass(frozen=True)
class Faults:
    """Injected input faults; each rate is a probability in 0..1.

    ``duplicate``, ``malformed`` and ``wrong_source`` apply per emitted event,
    ``out_of_order`` per order, ``late`` per ``StockAdjusted``.
    """

    duplicate: float = 0.0
    out_of_order: float = 0.0
    late: float = 0.0
    malformed: float = 0.0
    wrong_source: float = 0.0


@dataclass(frozen=True)
class Incidents:
    """Business exceptions the warehouse itself produces; rates per order.

    ``conflict``: the ERP changes or cancels an order after picking started
    (``AUTHORITY_CONFLICT``); ``orphan``: picks for an order the ERP never
    released (``UNKNOWN_ORDER``); ``over_pick``: one unit too many on a full line
    (``OVER_PICK``); ``stray_return``: a return for an order never shipped here
    (``RETURN_NOT_SHIPPED``).
    """

    conflict: float = 0.0
    orphan: float = 0.0
    over_pick: float = 0.0
    stray_return: float = 0.0


@dataclass(frozen=True)
class Model:
    """Shape of the warehouse; durations in seconds of event time."""

    skus: int = 200
    wave_size: int = 40
    line_weights: tuple[int, ...] = (30, 25, 18, 12, 7, 4, 2, 2)  # P(1 line), P(2 lines), ...
    change_rate: float = 0.05  # orders with an OrderChanged before picking (a fifth of them get two)
    cancel_rate: float = 0.02  # orders cancelled before picking
    short_line_rate: float = 0.02  # lines short-closed (picked below the ordered qty)
    split_weights: tuple[int, ...] = (75, 20, 5)  # P(1 pick per line), P(2), P(3)
    route_nodes: tuple[int, int] = (6, 14)  # conveyor merges/diverts a tote passes per pick
    scan_tunnel_rate: float = 0.5  # nodes that also read the item barcode
    dup_read_rate: float = 0.02  # telemetry reads reported twice (same event_id)
    no_read_rate: float = 0.01  # telemetry reads that fail (barcode NOREAD)
    package_weights: tuple[int, ...] = (80, 15, 5)  # P(1 package), P(2), P(3)
    second_dispatch_rate: float = 0.3  # carrier/WMS confirms the dispatch a second time
    return_rate: float = 0.03  # shipped orders that come back
    adjustments_per_order: float = 0.3  # stock adjustment incidents per order
    pick_start: tuple[float, float] = (60.0, 600.0)
    pick_gap: tuple[float, float] = (8.0, 40.0)
    pack_start: tuple[float, float] = (60.0, 480.0)
    dispatch_after: tuple[float, float] = (300.0, 1800.0)
    return_after: tuple[float, float] = (1200.0, 7200.0)


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulated stream; same config, same bytes."""

    seed: int = 1
    orders: int = 1000
    warehouses: int = 1
    events_per_s: float = 200.0  # event-time density of the whole stream
    start: str = "2026-11-27T08:00:00.000Z"
    faults: Faults = field(default_factory=Faults)
    incidents: Incidents = field(default_factory=Incidents)
    model: Model = field(default_factory=Model)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.orders < 0 or self.warehouses < 1:
            raise ValueError("orders must be >= 0 and warehouses >= 1")
        if self.events_per_s <= 0:
            raise ValueError("events_per_s must be > 0")
        for group in (self.faults, self.incidents):
            for spec in fields(group):
                rate = getattr(group, spec.name)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"{spec.name} rate must be in 0..1, got {rate}")
        per_record = self.faults
        if per_record.duplicate + per_record.malformed + per_record.wrong_source > 1.0:
            raise ValueError("duplicate + malformed + wrong_source rates must not exceed 1")


#: The "default mix": a realistic trickle of every fault and incident.
DEFAULT_FAULTS: Final = Faults(duplicate=0.01, out_of_order=0.02, late=0.05, malformed=0.0005, wrong_source=0.0005)
DEFAULT_INCIDENTS: Final = Incidents(conflict=0.01, orphan=0.005, over_pick=0.01, stray_return=0.002)

PRESETS: Final[dict[str, tuple[Faults, Incidents]]] = {
    "default": (DEFAULT_FAULTS, DEFAULT_INCIDENTS),
    "clean": (Faults(), Incidents()),
}


def _rates(overrides: Mapping[str, object], names: set[str]) -> dict[str, float]:
    """The overrides among ``names`` (fault or incident rates), which must be numbers."""
    rates: dict[str, float] = {}
    for key, value in overrides.items():
        if key in names:
            if not isinstance(value, int | float):
                raise TypeError(f"{key} rate must be a number, got {value!r}")
            rates[key] = value
    return rates


def preset(name: str, **overrides: object) -> SimConfig:
    """A config from a named preset; ``overrides`` are SimConfig fields or fault/incident rates."""
    faults, incidents = PRESETS[name]
    fault_names = {f.name for f in fields(Faults)}
    incident_names = {f.name for f in fields(Incidents)}
    faults = replace(faults, **_rates(overrides, fault_names))
    incidents = replace(incidents, **_rates(overrides, incident_names))
    rest = {k: v for k, v in overrides.items() if k not in fault_names | incident_names}
    return SimConfig(faults=faults, incidents=incidents, **rest)  # type: ignore[arg-type]
