"""Reconciliation: do the ERP's documents match the milestones that should have made them?

``compare`` is pure: the ERP-bound milestones (from the milestones topic), the ERP's
documents (read through the ERP port: any adapter) and, when the caller has it, the ERP-sink ledger go in;
drift items come out, by kind:

- ``shipped_not_posted``: a ShipmentConfirmed whose customer shipment is not ``done``
  in the ERP (missing, reset, cancelled, or never posted);
- ``posted_not_shipped``: a shipment ``done`` in the ERP for an order syncgov handles,
  without a ShipmentConfirmed;
- ``stock_moves_missing``: an InventoryAdjusted (net delta not 0) without a done
  internal shipment (``reference`` = its milestone id) moving ``abs(net_delta)``.

``run`` does the IO: reads the topic and the ERP (``ErpPort.reconcile_states``, with its own
small share of the ERP quota; types the adapter cannot check are left unchecked),
sets the drift gauges and publishes one ``SyncDrift`` record per drift item older than
the window on the exceptions topic, with a deterministic id, unless the topic already
has it: a second run changes nothing. See docs/observability.md.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from confluent_kafka import KafkaException, Producer

from app import metrics
from app.core import model
from app.core.ids import milestone_id
from app.core.model import Milestone
from app.core.timeutil import format_ts, parse_ts
from app.erp import ErpError, ErpPort, make_port
from app.erp.port import MilestoneRecord, milestone_record
from app.kafka import codec
from app.kafka.clients import PRODUCER_DEFAULTS, client_config, create_topics, read_all, send
from app.settings import ReconcileSettings, Settings, load

KINDS = ("shipped_not_posted", "posted_not_shipped", "stock_moves_missing")
ORDER_TYPES = frozenset({model.M_ORDER_ACCEPTED, model.M_ORDER_PICKED, model.M_ORDER_PACKED, model.M_SHIPMENT_CONFIRMED})
ADJUSTED = model.M_INVENTORY_ADJUSTED
CONFIRMED = model.M_SHIPMENT_CONFIRMED
DRIFT_TYPE = "SyncDrift"
Ledger = Mapping[str, Mapping[str, Any]]
_M = TypeVar("_M", bound=Mapping[str, Any])
#: How the drift details name the ERP's documents.
SHIPMENT = "customer shipment"
INTERNAL = "stock move"


@dataclass(frozen=True)
class ErpShipment:
    warehouse_id: str
    number: str
    state: str
    document_ref: str
    written_ms: int
    done: bool | None = None  # the shipment is done (shipped) in the ERP; None: state == "done"

    @property
    def is_done(self) -> bool:
        return self.state == "done" if self.done is None else self.done


@dataclass(frozen=True)
class ErpInternal:
    reference: str
    state: str
    document_ref: str
    moved_qty: float | None  # quantity of its done moves (None: the ERP does not say)
    done: bool | None = None  # None: state == "done"

    @property
    def is_done(self) -> bool:
        return self.state == "done" if self.done is None else self.done


@dataclass(frozen=True)
class ErpView:
    shipments: Mapping[tuple[str, str], ErpShipment]  # (warehouse code, number) ->
    internal: Mapping[str, ErpInternal]  # reference (an InventoryAdjusted milestone id) ->
    unchecked: frozenset[str] = frozenset()  # milestone types the ERP's adapter cannot check


@dataclass(frozen=True)
class Drift:
    kind: str
    warehouse_id: str
    document: str  # WH1/OUT-000042, or WH1/SKU@location/window start
    since_ms: int
    detail: str
    key: str  # the Kafka key of the document's milestones
    order_id: str | None = None
    erp_ref: str = ""
    milestone_id: str | None = None  # the milestone that should have made the document

    @property
    def record_id(self) -> str:
        return milestone_id(model.M_SYNC_EXCEPTION, "DRIFT", self.kind, self.document)

    def record(self, detected_ms: int, window_s: float) -> dict[str, Any]:
        """The ``SyncDrift`` record for the exceptions topic (contract-milestone shaped)."""
        return {
            "milestone_id": self.record_id, "type": DRIFT_TYPE, "warehouse_id": self.warehouse_id,
            "occurred_at": format_ts(self.since_ms), "event_ids": [], "kind": self.kind,
            "document": self.document, "order_id": self.order_id, "erp_ref": self.erp_ref,
            "milestone": self.milestone_id, "detail": self.detail,
            "detected_at": format_ts(detected_ms), "window_s": window_s,
        }


@dataclass(frozen=True)
class Report:
    drift: tuple[Drift, ...]
    published: tuple[str, ...]  # SyncDrift ids published by this run
    known: int  # overdue drift whose SyncDrift was already on the topic

    def counts(self) -> dict[str, int]:
        return {kind: sum(d.kind == kind for d in self.drift) for kind in KINDS}


def erp_bound(milestones: Iterable[_M]) -> dict[str, _M]:
    """The milestones reconciliation checks, by id (redeliveries collapse)."""
    return {m["milestone_id"]: m for m in milestones
            if m["type"] in ORDER_TYPES or (m["type"] == ADJUSTED and int(m.get("net_delta") or 0) != 0)}


def _sink_note(ledger: Ledger | None, mid: str) -> str:
    entry = (ledger or {}).get(mid)
    return f"; ERP sink ledger: {entry.get('outcome')} at {entry.get('at')}" if entry else ""


def _shipment_drift(confirmed: Mapping[str, Any], ship: ErpShipment | None, ledger: Ledger | None) -> Drift | None:
    wh, order = confirmed["warehouse_id"], confirmed["order_id"]
    if ship is not None and ship.is_done:
        return None
    found = f"{SHIPMENT} {order} is {ship.state} in the ERP" if ship else f"the ERP has no {SHIPMENT} {order} in {wh}"
    return Drift("shipped_not_posted", wh, f"{wh}/{order}", parse_ts(confirmed["occurred_at"]),
                 f"shipped at {confirmed['occurred_at']} but {found}{_sink_note(ledger, confirmed['milestone_id'])}",
                 f"{wh}|{order}", order, ship.document_ref if ship else "", confirmed["milestone_id"])


def _stock_drift(adjusted: Mapping[str, Any], doc: ErpInternal | None, ledger: Ledger | None) -> Drift | None:
    wh, mid, qty = adjusted["warehouse_id"], adjusted["milestone_id"], abs(float(adjusted["net_delta"]))
    if doc is not None and doc.is_done and doc.moved_qty in (None, qty):
        return None
    if doc is None:
        found = f"the ERP has no {INTERNAL} with reference {mid}"
    elif not doc.is_done:
        found = f"{doc.document_ref} is {doc.state}"
    else:
        found = f"{doc.document_ref} moved {doc.moved_qty:g}, not {qty:g}"
    sku, location = adjusted["sku"], adjusted["location"]
    return Drift("stock_moves_missing", wh, f"{wh}/{sku}@{location}/{adjusted['window_start']}",
                 parse_ts(adjusted["occurred_at"]),
                 f"net {adjusted['net_delta']} of {sku} at {location} but {found}{_sink_note(ledger, mid)}",
                 f"{wh}|{sku}|{location}", None, doc.document_ref if doc else "", mid)


def compare(milestones: Iterable[Mapping[str, Any]], erp: ErpView, ledger: Ledger | None = None) -> list[Drift]:
    """Every drift between the ERP-bound milestones and the ERP's documents (pure)."""
    bound = erp_bound(milestones).values()
    confirmed = {(m["warehouse_id"], m["order_id"]): m for m in bound if m["type"] == model.M_SHIPMENT_CONFIRMED}
    orders = {(m["warehouse_id"], m["order_id"]) for m in bound if m["type"] in ORDER_TYPES}
    out: list[Drift] = []
    if CONFIRMED in erp.unchecked:
        confirmed, orders = {}, set()
    out += [d for key, m in confirmed.items() if (d := _shipment_drift(m, erp.shipments.get(key), ledger))]
    for wh, order in sorted(orders - confirmed.keys()):
        ship = erp.shipments.get((wh, order))
        if ship is not None and ship.is_done:
            out.append(Drift("posted_not_shipped", wh, f"{wh}/{order}", ship.written_ms,
                             f"{ship.document_ref} is done in the ERP but the warehouse never confirmed the shipment",
                             f"{wh}|{order}", order, ship.document_ref))
    out += [d for m in bound if m["type"] == ADJUSTED and ADJUSTED not in erp.unchecked
            if (d := _stock_drift(m, erp.internal.get(m["milestone_id"]), ledger))]
    return sorted(out, key=lambda d: (d.kind, d.document))


def overdue(drift: Iterable[Drift], now_ms: int, window_s: float) -> list[Drift]:
    """Drift that has lasted longer than the reconciliation window."""
    return [d for d in drift if now_ms - d.since_ms > window_s * 1000]


def set_gauges(drift: Iterable[Drift], now_ms: int) -> None:
    """Absolute values (a repeat sets the same): count and oldest age per kind."""
    items = list(drift)
    for kind in KINDS:
        ages = [now_ms - d.since_ms for d in items if d.kind == kind]
        metrics.SYNC_DRIFT.labels(kind).set(len(ages))
        metrics.SYNC_DRIFT_OLDEST_AGE.labels(kind).set(max(ages, default=0) / 1000)
    metrics.RECONCILE_LAST_SUCCESS.set(now_ms / 1000)


# -- IO ------------------------------------------------------------------------------------


def _decoded(s: Settings, topic: str) -> list[dict[str, Any]]:
    return [Milestone.from_dict(codec.decode(r.value)).to_dict() for r in read_all(s.kafka.bootstrap_servers, topic, kafka=s.kafka)]


def read_milestones(s: Settings, since_ms: int) -> list[dict[str, Any]]:
    """The ERP-bound milestones that occurred since ``since_ms``."""
    return [m for m in erp_bound(_decoded(s, s.topics.milestones)).values()
            if m["occurred_at"] and parse_ts(m["occurred_at"]) >= since_ms]


def published_ids(s: Settings) -> set[str]:
    """Ids of the SyncDrift records already on the exceptions topic."""
    return {m["milestone_id"] for m in _decoded(s, s.topics.exceptions) if m["type"] == DRIFT_TYPE}


def probes(milestones: Iterable[Mapping[str, Any]]) -> list[MilestoneRecord]:
    """What to ask the ERP: per order a ``ShipmentConfirmed`` (the order's own, or one made up
    with only its keys when the warehouse has not confirmed it), and each ``InventoryAdjusted``."""
    orders: dict[tuple[str, str], MilestoneRecord] = {}
    adjusted = []
    for m in milestones:
        if m["type"] in ORDER_TYPES:
            key = (m["warehouse_id"], m["order_id"])
            if m["type"] == CONFIRMED:
                orders[key] = milestone_record(m)
            else:
                orders.setdefault(key, {"milestone_id": f"probe:{key[0]}|{key[1]}", "type": model.M_SHIPMENT_CONFIRMED,
                                        "warehouse_id": key[0], "occurred_at": None, "event_ids": [],
                                        "order_id": key[1]})
        elif m["type"] == ADJUSTED:
            adjusted.append(milestone_record(m))
    return [*(orders[key] for key in sorted(orders)), *adjusted]


async def read_erp(port: ErpPort, milestones: Iterable[Mapping[str, Any]], page_size: int) -> ErpView:
    """The ERP's view of the documents the milestones name, through the port."""
    asked = probes(milestones)
    states = await port.reconcile_states(asked, page_size)
    shipments: dict[tuple[str, str], ErpShipment] = {}
    internal: dict[str, ErpInternal] = {}
    unchecked = set()
    for p in asked:
        mid = p["milestone_id"]
        if mid not in states:
            unchecked.add(p["type"])
            continue
        doc = states[mid]
        if doc is None:
            continue
        if p["type"] == CONFIRMED:
            key = (p["warehouse_id"] or "", p["order_id"])
            shipments[key] = ErpShipment(*key, doc.state, doc.document_ref, doc.changed_ms or 0, doc.done)
        else:
            internal[mid] = ErpInternal(mid, doc.state, doc.document_ref, doc.quantity, doc.done)
    return ErpView(shipments, internal, frozenset(unchecked))


def publish(s: Settings, records: list[Drift], detected_ms: int, window_s: float) -> None:
    """SyncDrift records (JSON) on the exceptions topic, keyed like the document's milestones."""
    bootstrap = s.kafka.bootstrap_servers
    create_topics(bootstrap, [s.topics.exceptions], s.topics.partitions, s.kafka,
                  replication_factor=s.topics.replication_factor)
    producer = Producer({**client_config(bootstrap, s.kafka), **PRODUCER_DEFAULTS, "linger.ms": 0,
                         "batch.num.messages": 1})
    for d in records:
        send(producer, s.topics.exceptions, orjson.dumps(d.record(detected_ms, window_s)), d.key.encode())
    if producer.flush(30) != 0:
        raise RuntimeError("SyncDrift records not delivered to Kafka within 30 s")


async def run(s: Settings, options: ReconcileSettings | None = None, *,
              ledger: Callable[[str], Mapping[str, Any] | None] | None = None,
              clock: Callable[[], float] = time.time) -> Report:
    """One reconciliation: read, compare, set the gauges, publish new overdue drift."""
    options = options or s.reconcile
    now_ms = int(clock() * 1000)
    bound = await asyncio.to_thread(read_milestones, s, now_ms - int(options.lookback_s * 1000))
    port = make_port(dataclasses.replace(s.erp, rate_per_s=options.rate_per_s, burst=1), role="reconcile")
    try:
        erp = await read_erp(port, bound, options.page_size)
    finally:
        await port.close()
    entries = {m["milestone_id"]: e for m in bound if ledger and (e := ledger(m["milestone_id"]))}
    drift = compare(bound, erp, entries if ledger else None)
    late = overdue(drift, now_ms, options.window_s)
    known = await asyncio.to_thread(published_ids, s) if late else set()
    new = [d for d in late if d.record_id not in known]
    if new:
        await asyncio.to_thread(publish, s, new, now_ms, options.window_s)
        for d in new:
            metrics.SYNC_DRIFT_EXCEPTIONS.labels(d.kind).inc()
    set_gauges(drift, now_ms)
    return Report(tuple(drift), tuple(d.record_id for d in new), len(late) - len(new))


def format_report(report: Report, window_s: float) -> str:
    counts = report.counts()
    lines = [f"syncgov reconcile: {len(report.drift)} document(s) out of sync"]
    lines += [f"  {kind:<20} {counts[kind]}" for kind in KINDS]
    lines += [f"  - {d.kind} {d.document} since {format_ts(d.since_ms)}: {d.detail}" for d in report.drift]
    lines.append(f"SyncDrift records (drift older than {window_s:g} s): {len(report.published)} published, "
                 f"{report.known} already on the exceptions topic")
    return "\n".join(lines)


def report_json(report: Report, window_s: float) -> dict[str, Any]:
    """The report as one JSON document (`syncgov reconcile --json`)."""
    return {
        "in_sync": not report.drift,
        "counts": report.counts(),
        "drift": [{"kind": d.kind, "warehouse_id": d.warehouse_id, "document": d.document, "order_id": d.order_id,
                   "since": format_ts(d.since_ms), "detail": d.detail, "erp_ref": d.erp_ref,
                   "milestone_id": d.milestone_id, "record_id": d.record_id} for d in report.drift],
        "window_s": window_s,
        "published": list(report.published),
        "already_published": report.known,
    }


def main(*, as_json: bool = False) -> int:
    """`syncgov reconcile`: 0 in sync, 1 drift found or the ERP or Kafka could not be read,
    2 bad configuration."""
    from app import logs

    s = load()
    options = s.reconcile
    try:
        report = asyncio.run(run(s, options))
    except (ErpError, KafkaException, RuntimeError, TimeoutError, OSError) as exc:
        logs.error(f"failed: {exc}", command="reconcile")
        return 1
    if as_json:
        print(orjson.dumps(report_json(report, options.window_s)).decode(), flush=True)
    else:
        print(format_report(report, options.window_s), flush=True)
    return 1 if report.drift else 0
