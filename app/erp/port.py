"""The ERP port: post a milestone, read the state of the document it touches, the ERP's
order releases since a cursor (``syncgov source``) and the documents reconciliation checks
(``syncgov reconcile``): no module outside the adapters speaks an ERP's protocol.

Adapters (``app.erp.tryton``, ``app.erp.http``) raise :class:`TransientErpError`
for answers worth retrying (throttled, 5xx, timeout, connection refused) and
:class:`PermanentErpError` for answers that will never succeed (validation
4xx, unknown document, unparseable answer); the latter go to the ERP dead
letter topic with ``detail`` (the ERP's own words). No detail ever contains
the ERP key.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, cast, get_args

import orjson

from app.core import model
from app.erp.ratelimit import backoff

Outcome = Literal["posted", "already_done", "skipped"]

#: The milestone types a port may be given (``app.core.model.MILESTONE_TYPES``).
MilestoneType = Literal["OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed", "InventoryAdjusted",
                        "ReturnReceived", "SyncException"]
assert set(get_args(MilestoneType)) == set(model.MILESTONE_TYPES)


class MilestoneLine(TypedDict, total=False):
    """A line of ``OrderAccepted`` (``qty``), ``OrderPicked`` (``ordered``, ``picked``) or
    ``ShipmentConfirmed`` (``qty``)."""

    line_no: int
    sku: str
    qty: float
    ordered: float
    picked: float


class _MilestoneHead(TypedDict):
    milestone_id: str
    type: MilestoneType
    warehouse_id: str | None
    occurred_at: str | None  # ISO 8601
    event_ids: list[str]


class MilestoneRecord(_MilestoneHead, total=False):
    """A milestone as the ERP port receives it: the contract's JSON form (every field at top
    level, timestamps as ISO strings; ``app.core.model.Milestone.to_dict``). The head is
    always there; the rest depends on ``type`` (contract, "Milestones")."""

    order_id: str
    version: int
    lines: list[MilestoneLine]
    short: bool
    package_ids: list[str]
    shipment_id: str
    carrier: str
    tracking_no: str
    sku: str
    location: str
    net_delta: int
    event_count: int
    window_start: str
    window_end: str
    rma_id: str
    qty: float
    disposition: str
    code: str
    detail: str


_HEAD = tuple(_MilestoneHead.__annotations__)


def milestone_record(d: Mapping[str, Any]) -> MilestoneRecord:
    """``d`` (a decoded milestone) as a :class:`MilestoneRecord`, else ``ValueError`` naming
    what is wrong (the sink makes it a dead letter): its head fields present and of their
    types, its type one the port knows, an ``order_id`` a string, and the whole record JSON
    (a milestone decoded with another producer's Avro schema may hold bytes or decimals,
    which the sink's ledger, holds and dead letters could not write)."""
    missing = [k for k in _HEAD if k not in d]
    if missing:
        raise ValueError(f"milestone without {', '.join(missing)}")
    kind = d["type"]
    if kind.__class__ is not str or kind not in model.MILESTONE_TYPES:
        raise ValueError(f"unknown milestone type {kind!r}")
    mid = d["milestone_id"]
    if mid.__class__ is not str or not mid:
        raise ValueError(f"milestone_id must be a non-empty string, got {type(mid).__name__}")
    for name in ("warehouse_id", "occurred_at", "order_id"):
        value = d.get(name)
        if value is not None and value.__class__ is not str:
            raise ValueError(f"{name} must be a string or null, got {type(value).__name__}")
    ids = d["event_ids"]
    if not isinstance(ids, list | tuple) or any(i.__class__ is not str for i in ids):
        raise ValueError("event_ids must be a list of strings")
    try:
        orjson.dumps(d)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise ValueError(f"milestone is not JSON: {exc}") from None
    return cast(MilestoneRecord, dict(d))


def as_record(milestone: model.Milestone) -> MilestoneRecord:
    """A core milestone in the port's form."""
    return cast(MilestoneRecord, milestone.to_dict())


@dataclass(frozen=True)
class PostResult:
    """``posted``: the ERP changed; ``already_done``: a repeat, acknowledged without a
    change; ``skipped``: this milestone type is not posted to this ERP."""

    outcome: Outcome
    document_ref: str


@dataclass(frozen=True)
class DocumentState:
    """The ERP document a milestone touches, as the ERP sees it now."""

    document_ref: str
    state: str
    done: bool  # the milestone's effect is already in the ERP
    fields: Mapping[str, Any] = field(default_factory=dict)
    quantity: float | None = None  # what a stock document moved (reconciliation), when the ERP says
    changed_ms: int | None = None  # when the document last changed (epoch ms), when the ERP says


class ErpError(Exception):
    """Base of the ERP errors; ``detail`` is the ERP's answer (never the key)."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(f"ERP {status or 'no answer'}: {detail}")
        self.status = status
        self.detail = detail


class TransientErpError(ErpError):
    """Worth retrying later; ``retry_after_s`` is the ERP's Retry-After, if any.

    ``unknown``: the request may have reached the ERP and may still commit (no answer: a
    timeout or a connection lost after sending; a gateway's 502/504). A retry must not
    decide on a read before such a request can no longer commit (see ``app.erp.sink``)."""

    def __init__(self, status: int | None, retry_after_s: float | None, detail: str, *, unknown: bool = False) -> None:
        super().__init__(status, detail)
        self.retry_after_s = retry_after_s
        self.unknown = unknown


class NotReadyErpError(ErpError):
    """The ERP document is not yet in a state this milestone applies to (a precondition not
    met, e.g. OrderPacked while the shipment is still ``waiting``): the milestone is
    deferred and tried again later, never dead-lettered for it."""


class PermanentErpError(ErpError):
    """Will never succeed as is: the milestone goes to the ERP dead letter topic."""


class ErpPort(Protocol):
    async def post(self, milestone: MilestoneRecord) -> PostResult:
        """Apply the milestone (contract JSON form) to the ERP, idempotently."""
        ...

    async def read_state(self, milestone: MilestoneRecord) -> DocumentState | None:
        """The document the milestone touches, or None when it does not exist (yet)."""
        ...

    async def releases(self, cursor: Any, *, page_size: int, overlap_s: float) -> tuple[list[dict[str, Any]], Any]:
        """The ERP's order-release events (OrderReleased, and OrderChanged/OrderCancelled where the
        ERP tells them) since ``cursor`` (None: from the feed's start), and the next cursor. The
        cursor is JSON (an object or None), opaque to the caller, which stores it durably
        (``app.commands.source``). Repeats after an older cursor carry the same event ids."""
        ...

    async def reconcile_states(self, probes: Sequence[MilestoneRecord],
                               page_size: int) -> dict[str, DocumentState | None]:
        """For reconciliation: the document each probe (a milestone, contract JSON: a
        ``ShipmentConfirmed`` for each order, an ``InventoryAdjusted`` for each stock
        adjustment) touches, by the probe's ``milestone_id``; None when the ERP has none. A probe
        this adapter cannot check is left out of the answer. ``page_size``: documents per read."""
        ...

    async def close(self) -> None:
        ...


async def post_with_retry(
    port: ErpPort,
    milestone: MilestoneRecord,
    *,
    max_retries: int,
    backoff_base_s: float,
    backoff_cap_s: float,
    rand: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PostResult:
    """``port.post`` with up to ``max_retries`` retries of transient errors.

    Each wait is the full-jitter backoff, but never shorter than the ERP's
    Retry-After. A repeat is safe: adapters read the document before changing
    it (or send an Idempotency-Key). The last transient error is re-raised;
    a permanent error is raised at once.
    """
    attempt = 0
    while True:
        try:
            return await port.post(milestone)
        except TransientErpError as exc:
            if attempt >= max_retries:
                raise
            wait = backoff(attempt, backoff_base_s, backoff_cap_s, rand)
            await sleep(max(wait, exc.retry_after_s or 0.0))
            attempt += 1
