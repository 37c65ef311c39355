"""Tryton 8.2 adapter over its REST API (``/<db>/rest/model/...``).

Every state-changing call is preceded by a read of the document, so a repeat
is acknowledged (``already_done``) instead of failing. The exact calls per
milestone type are documented in ``docs/erp.md``. Requests authenticate with
``Authorization: bearer <key>`` (a ``res.user.application`` key); the key is
never logged and never part of an error.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import aiohttp

from app import metrics
from app.core import model
from app.erp.client import ErpHttpClient
from app.erp.memo import SingleFlight
from app.erp.port import (
    DocumentState,
    MilestoneRecord,
    NotReadyErpError,
    PermanentErpError,
    PostResult,
    TransientErpError,
)
from app.erp.ratelimit import RatePolicy
from app.erp.tryton_bulk import TrytonOps, TrytonRpc
from app.settings import ErpSettings

SHIPMENT = "stock.shipment.out"
RETURN = "stock.shipment.out.return"
INTERNAL = "stock.shipment.internal"

#: Shipment states in which each order milestone's effect is already in Tryton.
ORDER_DONE_STATES = {
    model.M_ORDER_PICKED: frozenset({"picked", "packed", "shipped", "done"}),
    model.M_ORDER_PACKED: frozenset({"packed", "shipped", "done"}),
    model.M_SHIPMENT_CONFIRMED: frozenset({"done"}),
}
#: A customer shipment's workflow, in order (``cancelled`` is off it: nothing follows it).
SHIPMENT_FLOW = ("draft", "waiting", "assigned", "picked", "packed", "shipped", "done")
_SHIPMENT_FIELDS = (
    "number", "state", "shipping_reference", "warehouse", "customer", "company",
    "inventory_moves.quantity", "inventory_moves.origin", "inventory_moves.state",
    "outgoing_moves.product.code", "outgoing_moves.quantity", "outgoing_moves.state",
    "outgoing_moves.to_location", "outgoing_moves.unit", "outgoing_moves.unit_price",
    "outgoing_moves.currency",
)


def _encode(obj: Any) -> Any:
    """Tryton's JSON for dates, datetimes and decimals."""
    if isinstance(obj, dt.datetime):
        return {"__class__": "datetime", "year": obj.year, "month": obj.month, "day": obj.day,
                "hour": obj.hour, "minute": obj.minute, "second": obj.second, "microsecond": obj.microsecond}
    if isinstance(obj, dt.date):
        return {"__class__": "date", "year": obj.year, "month": obj.month, "day": obj.day}
    if isinstance(obj, Decimal):
        return {"__class__": "Decimal", "decimal": str(obj)}
    raise TypeError(f"cannot encode {type(obj).__name__} for Tryton")


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "datetime":
        return dt.datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"],
                           obj["second"], obj["microsecond"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    return obj


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_encode, separators=(",", ":")).encode()


def loads(raw: bytes | str) -> Any:
    return json.loads(raw, object_hook=_decode)


#: Tryton's answer to a read of records that a concurrent transaction deleted.
_READ_RACE = "that don't exist"


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(dumps(value)).decode()


def ref(model: str, record_id: int) -> str:
    """A Tryton reference string, e.g. ``stock.shipment.out,12``."""
    return f"{model},{record_id}"


class TrytonRest:
    """Thin typed calls on Tryton's REST API for one database."""

    def __init__(self, client: ErpHttpClient, database: str) -> None:
        self.client = client
        self.database = database
        self._context: dict[str, Any] | None = None
        self._context_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.client.close()

    def _path(self, model: str, *tail: object) -> str:
        return "/".join([f"/{self.database}/rest/model/{model}", *map(str, tail)])

    async def _call(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
                    body: Any = None, context: dict[str, Any] | None = None, acquired: bool = False) -> Any:
        headers = {"X-Tryton-Context": _b64(context)} if context else None
        try:
            answer = await self.client.request(
                method, path, params=params, body=None if body is None else dumps(body), headers=headers,
                acquired=acquired)
        except PermanentErpError as exc:
            if method == "GET" and exc.status == 400 and _READ_RACE in exc.detail:
                # A read raced a transaction that replaced the document's records (an ERP user
                # changing the order deletes and re-creates its moves): reading again sees the
                # committed state. A read changes nothing, so retrying it is always safe.
                raise TransientErpError(400, None, exc.detail) from None
            raise
        if not answer.body:
            return None
        try:
            return json.loads(answer.body, object_hook=_decode)
        except (ValueError, KeyError, TypeError):
            text = self.client.scrub(answer.body.decode("utf-8", "replace"))
            raise PermanentErpError(answer.status, f"{method} {path}: unparseable answer: {text}") from None

    async def context(self) -> dict[str, Any]:
        """The REST user's company, as Tryton's own preferences give it (cached)."""
        async with self._context_lock:  # one lookup, however many callers wait for it
            if self._context is None:
                prefs = await self._call("POST", self._path("res.user", "get_preferences"),
                                         body={"context_only": True})
                if not isinstance(prefs, dict) or not prefs.get("company"):
                    raise PermanentErpError(200, f"res.user.get_preferences gave no company: {str(prefs)[:300]}")
                self._context = {"company": prefs["company"]}
            return self._context

    @staticmethod
    def _fields(fields: Iterable[str]) -> list[tuple[str, str]]:
        return [("f", name) for name in fields]

    async def search(self, model: str, domain: Sequence[Any], fields: Iterable[str], *,
                     limit: int | None = None, order: Sequence[tuple[str, str]] | None = None,
                     acquired: bool = False) -> list[dict[str, Any]]:
        params = [("d", _b64(list(domain))), *self._fields(fields)]
        if limit is not None:
            params.append(("s", str(limit)))
        if order:
            params.append(("o", _b64([list(item) for item in order])))
        context = await self.context()
        result = await self._call("GET", self._path(model), params=params, context=context, acquired=acquired)
        if not isinstance(result, list):
            raise PermanentErpError(200, f"GET {model}: expected a list, got {str(result)[:200]}")
        return result

    async def create(self, model: str, values: dict[str, Any], fields: Iterable[str] = ()) -> dict[str, Any]:
        created: dict[str, Any] = await self._call("POST", self._path(model), params=self._fields(fields), body=values,
                                                   context=await self.context())
        return created

    async def write(self, model: str, record_id: int, values: dict[str, Any],
                    fields: Iterable[str] = ()) -> dict[str, Any]:
        written: dict[str, Any] = await self._call("PUT", self._path(model, record_id), params=self._fields(fields),
                                                   body=values, context=await self.context())
        return written

    async def button(self, model: str, record_id: int, name: str, fields: Iterable[str] = ("state",)) -> dict[str, Any]:
        """Click a workflow button. Warnings (``res.user.warning``) are skipped: the warehouse
        reports facts, there is nobody to confirm a dialog."""
        context = {**await self.context(), "_skip_warnings": True}
        clicked: dict[str, Any] = await self._call("POST", self._path(model, record_id, name),
                                                   params=self._fields(fields), body={}, context=context)
        return clicked


def _warehouse_of(m: MilestoneRecord) -> str:
    warehouse = m["warehouse_id"]
    if not warehouse:
        raise ValueError(f"{m['type']} {m['milestone_id']} names no warehouse")
    return warehouse


def _get(record: dict[str, Any], key: str) -> Any:
    """A field of a Tryton answer; a missing one is a permanent (unparseable) answer."""
    try:
        return record[key]
    except (KeyError, TypeError):
        raise PermanentErpError(200, f"Tryton answer lacks {key!r}: {str(record)[:300]}") from None


def _id(value: Any) -> int:
    """A Many2One as read: an id or a nested ``{"id": ...}``."""
    return value["id"] if isinstance(value, dict) else int(value)


def _window_date(value: Any) -> dt.date:
    text = str(value).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC).date()


def _chunks(items: Iterable[str], size: int) -> Iterable[list[str]]:
    ordered = sorted(items)
    return (ordered[i:i + size] for i in range(0, len(ordered), size))


#: How long a shipment state this adapter itself just moved stands in for the next read.
KNOWN_STATE_S = 30.0


class TrytonAdapter:
    """``ErpPort`` for Tryton: milestones become workflow steps on stock documents.

    Every read goes through the coalescing batcher (``TrytonOps``: one search for all the
    documents the calls in flight touch); with ``rpc`` (JSON-RPC credentials) the buttons,
    writes and creates are bulk calls too, grouped across documents."""

    def __init__(self, rest: TrytonRest, rpc: TrytonRpc | None = None, *, max_batch: int = 100,
                 target_s: float = 3.0, window_s: float = 0.01, clock: Callable[[], float] | None = None) -> None:
        import time

        self.rest = rest
        self.ops = TrytonOps(rest, rpc, max_items=max_batch, target_s=target_s, window_s=window_s)
        self._clock = clock or time.monotonic
        # order_id -> (when, the shipment as this adapter's own button left it): the next
        # milestone of the same document starts from it instead of a read (coalescing).
        self._known: dict[str, tuple[float, dict[str, Any]]] = {}
        # Master data, each key loaded once however many milestones miss it at once.
        self._products: SingleFlight[str, dict[str, Any]] = SingleFlight()
        self._warehouses: SingleFlight[str, dict[str, Any]] = SingleFlight()
        self._locations: SingleFlight[tuple[Any, ...], int] = SingleFlight()
        self._posts: dict[str, Callable[[MilestoneRecord], Awaitable[PostResult]]] = {
            model.M_ORDER_ACCEPTED: self._post_accepted,
            model.M_ORDER_PICKED: self._post_picked,
            model.M_ORDER_PACKED: self._post_packed,
            model.M_SHIPMENT_CONFIRMED: self._post_confirmed,
            model.M_INVENTORY_ADJUSTED: self._post_adjusted,
            model.M_RETURN_RECEIVED: self._post_return,
        }

    @classmethod
    def from_settings(
        cls, erp: ErpSettings, *, session: aiohttp.ClientSession | None = None, before_send: Callable[[], None] | None = None,
        rpc_login: str = "", rpc_password: str = "", max_batch: int = 100, role: str = "sink",
        window_s: float = 0.25,
    ) -> TrytonAdapter:
        """``rpc_login``/``rpc_password``: a Tryton user for JSON-RPC bulk writes (empty: writes
        one by one over REST; reads are batched either way)."""
        key = erp.api_key.value
        client = ErpHttpClient(
            erp.base_url,
            policy=RatePolicy(rate_per_s=erp.rate_per_s, burst=erp.burst, max_in_flight=erp.max_in_flight,
                              reserve=erp.burst_reserve),
            timeout_s=erp.timeout_s,
            throttle_statuses=erp.throttle_statuses,
            auth_header=("Authorization", f"bearer {key}"),
            secret=key,
            session=session,
            before_send=before_send,
            role=role,
        )
        rest = TrytonRest(client, erp.database)
        rpc = TrytonRpc(client, erp.database, rpc_login, rpc_password) if rpc_login else None
        # A batch is cut at about a third of the request timeout's worth of Tryton's work.
        return cls(rest, rpc, max_batch=max_batch, target_s=max(0.5, min(5.0, erp.timeout_s / 3)), window_s=window_s)

    async def close(self) -> None:
        for memo in (self._products, self._warehouses, self._locations):
            await memo.close()
        await self.ops.close()
        await self.rest.close()

    # -- the port ---------------------------------------------------------------------------

    async def post(self, milestone: MilestoneRecord) -> PostResult:
        kind = milestone.get("type")
        if kind == model.M_SYNC_EXCEPTION:
            return PostResult("skipped", "")
        handler = self._posts.get(kind)
        if handler is None:
            raise PermanentErpError(None, f"no Tryton mapping for milestone type {kind!r}")
        order_id = str(milestone.get("order_id") or "")
        known = bool(order_id) and order_id in self._known
        try:
            return await handler(milestone)
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentErpError(None, f"{kind} milestone cannot be mapped: {type(exc).__name__} {exc}") from None
        except PermanentErpError as exc:
            self._known.pop(order_id, None)
            if known:  # decided on a state this adapter remembered, not read: read it and try again
                raise TransientErpError(None, None, f"{exc.detail} (on a remembered state; read again)") from None
            raise
        except BaseException:
            self._known.pop(order_id, None)
            raise

    async def read_state(self, milestone: MilestoneRecord) -> DocumentState | None:
        try:
            return await self._read_state(milestone)
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentErpError(None, f"{milestone.get('type')} milestone cannot be mapped: "
                                          f"{type(exc).__name__} {exc}") from None

    async def _read_state(self, milestone: MilestoneRecord) -> DocumentState | None:
        kind = milestone.get("type")
        if kind in ORDER_DONE_STATES:
            ship = await self._find_shipment(milestone["order_id"], fresh=True)
            if ship is None:
                return None
            return self._order_state(kind, ship)
        if kind == model.M_ORDER_ACCEPTED:
            ship = await self._find_shipment(milestone["order_id"], fresh=True)
            if ship is None:
                return None
            note = await self._acceptance_note(ship, milestone)
            return DocumentState(ref(SHIPMENT, ship["id"]), _get(ship, "state"), note is not None,
                                 {"note": note})
        if kind == model.M_INVENTORY_ADJUSTED:
            doc = await self._internal(milestone)
            if doc is None:
                return None
            return DocumentState(ref(INTERNAL, doc["id"]), doc["state"], doc["state"] == "done", doc)
        if kind == model.M_RETURN_RECEIVED:
            doc = await self._return(milestone)
            if doc is None:
                return None
            return DocumentState(ref(RETURN, doc["id"]), doc["state"],
                                 doc["state"] in self._return_done_states(milestone), doc)
        return None

    # -- the release feed and reconciliation (the port's other two calls) --------------------

    async def releases(self, cursor: Any, *, page_size: int, overlap_s: float) -> tuple[list[dict[str, Any]], Any]:
        """Customer shipments released, changed or cancelled since ``cursor`` (``app.erp.source``)."""
        from app.erp.source import SourceCursor, poll  # the source reads through this module's REST calls

        start = SourceCursor.from_json(cursor) if cursor else SourceCursor()
        events, after = await poll(self.rest, start, page_size=page_size, overlap_s=overlap_s)
        return events, after.to_json()

    async def reconcile_states(self, probes: Sequence[MilestoneRecord],
                               page_size: int) -> dict[str, DocumentState | None]:
        """Customer shipments (a ``ShipmentConfirmed`` probe: done = ``done``) and internal
        shipments (an ``InventoryAdjusted`` probe: ``reference`` = its milestone id; done =
        ``done``, quantity = its done moves), ``page_size`` documents per search."""
        by_wh: dict[str, dict[str, str]] = {}  # warehouse -> order id -> probe id
        refs: dict[str, str] = {}
        out: dict[str, DocumentState | None] = {}
        for p in probes:
            if p["type"] == model.M_SHIPMENT_CONFIRMED:
                by_wh.setdefault(_warehouse_of(p), {})[p["order_id"]] = p["milestone_id"]
                out[p["milestone_id"]] = None
            elif p["type"] == model.M_INVENTORY_ADJUSTED:
                refs[p["milestone_id"]] = p["milestone_id"]
                out[p["milestone_id"]] = None
        for wh, orders in sorted(by_wh.items()):
            for chunk in _chunks(orders, page_size):
                rows = await self.rest.search(SHIPMENT, [("number", "in", chunk), ("warehouse.code", "=", wh)],
                                              ("number", "state", "write_date", "create_date"), limit=len(chunk))
                for r in rows:
                    stamp = r.get("write_date") or r.get("create_date")
                    changed = int(stamp.replace(tzinfo=dt.UTC).timestamp() * 1000) if isinstance(
                        stamp, dt.datetime) else None
                    out[orders[r["number"]]] = DocumentState(ref(SHIPMENT, r["id"]), r["state"], r["state"] == "done",
                                                             r, changed_ms=changed)
        for chunk in _chunks(refs, page_size):
            rows = await self.rest.search(INTERNAL, [("reference", "in", chunk)],
                                          ("reference", "state", "moves.quantity", "moves.state"), limit=len(chunk))
            for r in rows:
                moved = sum(float(mv.get("quantity") or 0) for mv in r.get("moves") or [] if mv.get("state") == "done")
                out[r["reference"]] = DocumentState(ref(INTERNAL, r["id"]), r["state"], r["state"] == "done", r,
                                                    quantity=moved)
        return out

    # -- customer shipments -----------------------------------------------------------------

    async def _find_shipment(self, order_id: str, *, fresh: bool = False, kind: str = "") -> dict[str, Any] | None:
        known = self._known.pop(order_id, None)
        if known is not None and not fresh and self._clock() - known[0] <= KNOWN_STATE_S:
            if kind:
                metrics.ERP_COALESCED.labels(kind).inc()
            return known[1]
        return await self.ops.read_one(SHIPMENT, "number", order_id, _SHIPMENT_FIELDS)

    def _remember(self, ship: dict[str, Any], state: str | None) -> None:
        """The shipment after this adapter's own successful button: the document's next
        milestone (packed after picked, confirmed after packed) starts from it, no read."""
        if state and ship.get("number"):
            self._known[str(ship["number"])] = (self._clock(), {**ship, "state": state})

    async def _shipment(self, order_id: str, *, fresh: bool = False, kind: str = "") -> dict[str, Any]:
        ship = await self._find_shipment(order_id, fresh=fresh, kind=kind)
        if ship is None:
            raise PermanentErpError(200, f"Tryton has no {SHIPMENT} with number {order_id!r} (search answered [])")
        return ship

    @staticmethod
    def _order_state(kind: str, ship: dict[str, Any]) -> DocumentState:
        state = _get(ship, "state")
        return DocumentState(ref(SHIPMENT, ship["id"]), state, state in ORDER_DONE_STATES[kind],
                             {"number": ship.get("number"), "shipping_reference": ship.get("shipping_reference")})

    @staticmethod
    def _check_state(ship: dict[str, Any], allowed: Iterable[str], kind: str) -> str:
        """The shipment's state if the milestone applies to it. A state *before* the allowed
        ones is a precondition not met yet (the predecessor's effect, or an ERP user's edit,
        is still to come): ``NotReadyErpError``, deferred. Any other state is permanent."""
        state: str = _get(ship, "state")
        allowed = tuple(allowed)
        if state not in allowed:
            detail = (f"{kind}: {SHIPMENT} {ship.get('number')!r} is in state {state!r} "
                      f"(needs one of {', '.join(sorted(allowed))})")
            first = min(SHIPMENT_FLOW.index(a) for a in allowed)
            if state in SHIPMENT_FLOW and SHIPMENT_FLOW.index(state) < first:
                raise NotReadyErpError(200, detail)
            raise PermanentErpError(200, detail)
        return state

    async def _post_accepted(self, m: MilestoneRecord) -> PostResult:
        ship = await self._shipment(m["order_id"], kind=model.M_ORDER_ACCEPTED)
        document = ref(SHIPMENT, ship["id"])
        if await self._acceptance_note(ship, m) is not None:
            return PostResult("already_done", document)
        lines = m.get("lines") or []
        await self.ops.create("ir.note", {
            "resource": document,
            "message": f"Warehouse {m.get('warehouse_id')} accepted order {m['order_id']} "
                       f"version {m.get('version')} ({len(lines)} lines) {self._marker(m)}",
        })
        return PostResult("posted", document)

    @staticmethod
    def _marker(m: MilestoneRecord) -> str:
        return f"[syncgov {m['milestone_id']}]"

    async def _acceptance_note(self, ship: dict[str, Any], m: MilestoneRecord) -> dict[str, Any] | None:
        notes = await self.ops.read("ir.note", "resource", ref(SHIPMENT, ship["id"]), ("message",),
                                    [["message", "like", "%[syncgov %"]])
        marker = self._marker(m)
        return next((n for n in notes if marker in str(n.get("message") or "")), None)

    async def _post_picked(self, m: MilestoneRecord) -> PostResult:
        ship = await self._shipment(m["order_id"], kind=model.M_ORDER_PICKED)
        document = ref(SHIPMENT, ship["id"])
        if _get(ship, "state") in ORDER_DONE_STATES[model.M_ORDER_PICKED]:
            return PostResult("already_done", document)
        state = self._check_state(ship, ("waiting", "assigned"), model.M_ORDER_PICKED)
        picked = {int(line["line_no"]): float(line["picked"]) for line in m.get("lines", [])}
        changes = self._pick_changes(ship, picked)
        if changes and state == "assigned":
            # Assigned moves are locked: back to waiting rebuilds the inventory moves.
            await self.ops.button(SHIPMENT, ship["id"], "wait")
            ship = await self._shipment(m["order_id"], fresh=True)
            state = self._check_state(ship, ("waiting",), model.M_ORDER_PICKED)
            changes = self._pick_changes(ship, picked)
        if changes:
            await self.ops.write(SHIPMENT, ship["id"], {
                "inventory_moves": [["write", [move_id], {"quantity": qty}] for move_id, qty in changes],
            })
        if state == "waiting":
            await self.ops.button(SHIPMENT, ship["id"], "assign_force")
        self._expect(await self.ops.button(SHIPMENT, ship["id"], "pick"), "picked", document)
        self._remember(ship, "picked")
        return PostResult("posted", document)

    @staticmethod
    def _pick_changes(ship: dict[str, Any], picked: dict[int, float]) -> list[tuple[int, float]]:
        """(inventory move id, quantity) writes that make the moves match the picked lines."""
        lines = {mv["id"] for mv in _get(ship, "outgoing_moves") if mv.get("state") != "cancelled"}
        unknown = sorted(set(picked) - lines)
        if unknown:
            raise PermanentErpError(
                200, f"OrderPicked: line_no {unknown} are not outgoing moves of {SHIPMENT} "
                     f"{ship.get('number')!r} (its lines: {sorted(lines)})")
        by_line: dict[int, list[dict[str, Any]]] = {}
        for mv in _get(ship, "inventory_moves"):
            origin = str(mv.get("origin") or "")
            if mv.get("state") != "cancelled" and origin.startswith("stock.move,"):
                by_line.setdefault(int(origin.split(",", 1)[1]), []).append(mv)
        changes = []
        for line_no in sorted(lines):
            moves = sorted(by_line.get(line_no, []), key=lambda mv: mv["id"])
            want = picked.get(line_no, 0.0)
            if not moves:
                if want:
                    raise PermanentErpError(200, f"OrderPicked: line {line_no} of {ship.get('number')!r} "
                                                 "has no inventory move to pick")
                continue
            for i, mv in enumerate(moves):
                qty = want if i == 0 else 0.0
                if float(mv["quantity"]) != qty:
                    changes.append((mv["id"], qty))
        return changes

    @staticmethod
    def _expect(answered: str | None, state: str, document: str) -> None:
        if answered != state:
            raise PermanentErpError(200, f"{document}: expected state {state!r} after the call, Tryton answered "
                                         f"{str(answered)[:300]}")

    async def _post_packed(self, m: MilestoneRecord) -> PostResult:
        ship = await self._shipment(m["order_id"], kind=model.M_ORDER_PACKED)
        document = ref(SHIPMENT, ship["id"])
        if _get(ship, "state") in ORDER_DONE_STATES[model.M_ORDER_PACKED]:
            return PostResult("already_done", document)
        self._check_state(ship, ("picked",), model.M_ORDER_PACKED)
        self._expect(await self.ops.button(SHIPMENT, ship["id"], "pack"), "packed", document)
        self._remember(ship, "packed")
        return PostResult("posted", document)

    async def _post_confirmed(self, m: MilestoneRecord) -> PostResult:
        ship = await self._shipment(m["order_id"], kind=model.M_SHIPMENT_CONFIRMED)
        document = ref(SHIPMENT, ship["id"])
        if _get(ship, "state") in ORDER_DONE_STATES[model.M_SHIPMENT_CONFIRMED]:
            return PostResult("already_done", document)
        self._check_state(ship, ("packed", "shipped"), model.M_SHIPMENT_CONFIRMED)
        tracking = m.get("tracking_no")
        if tracking and ship.get("shipping_reference") != tracking:
            await self.ops.write(SHIPMENT, ship["id"], {"shipping_reference": tracking})
            ship = {**ship, "shipping_reference": tracking}
        self._expect(await self.ops.button(SHIPMENT, ship["id"], "do"), "done", document)
        self._remember(ship, "done")
        return PostResult("posted", document)

    # -- inventory adjustments --------------------------------------------------------------

    async def _warehouse(self, code: str) -> dict[str, Any]:
        async def load() -> dict[str, Any]:
            found = await self.ops.read_one(
                "stock.location", "code", code, ("storage_location", "lost_found_location", "input_location"),
                [["type", "=", "warehouse"]])
            if not found:
                raise PermanentErpError(200, f"Tryton has no warehouse with code {code!r} (search answered [])")
            return found
        return await self._warehouses.get(code, load)

    async def _storage(self, warehouse: dict[str, Any], code: str) -> int:
        """The storage location with this code under the warehouse, else its storage zone."""
        storage = _id(_get(warehouse, "storage_location"))

        async def load() -> int:
            found = await self.ops.read_one(
                "stock.location", "code", code, (), [["type", "=", "storage"], ["parent", "child_of", [storage]]])
            return int(found["id"]) if found else storage
        return await self._locations.get((warehouse["id"], code), load)

    async def _lost_found(self, warehouse: dict[str, Any]) -> int:
        if warehouse.get("lost_found_location"):
            return _id(warehouse["lost_found_location"])

        async def load() -> int:
            found = await self.rest.search("stock.location", [("type", "=", "lost_found")], (), limit=1)
            if not found:
                raise PermanentErpError(200, "Tryton has no lost_found (inventory) location")
            return int(found[0]["id"])
        return await self._locations.get(("lost_found",), load)

    async def _product(self, sku: str) -> dict[str, Any]:
        async def load() -> dict[str, Any]:
            found = await self.ops.read_one("product.product", "code", sku, ("default_uom",))
            if not found:
                raise PermanentErpError(200, f"Tryton has no product.product with code {sku!r} (search answered [])")
            return found
        return await self._products.get(sku, load)

    async def _internal(self, m: MilestoneRecord) -> dict[str, Any] | None:
        return await self.ops.read_one(INTERNAL, "reference", m["milestone_id"], ("state", "number"))

    async def _post_adjusted(self, m: MilestoneRecord) -> PostResult:
        doc = await self._internal(m)
        if doc is None:
            delta = int(m["net_delta"])
            if delta == 0:
                return PostResult("skipped", "")
            warehouse = await self._warehouse(_warehouse_of(m))
            product = await self._product(m["sku"])
            storage = await self._storage(warehouse, m["location"])
            lost_found = await self._lost_found(warehouse)
            source, target = (lost_found, storage) if delta > 0 else (storage, lost_found)
            day = _window_date(m["window_end"])
            company = (await self.rest.context())["company"]
            doc = await self.ops.create(INTERNAL, {
                "company": company, "reference": m["milestone_id"],
                "from_location": source, "to_location": target,
                "planned_start_date": day, "planned_date": day,
                "moves": [["create", [{
                    "product": product["id"], "unit": _id(product["default_uom"]), "quantity": float(abs(delta)),
                    "from_location": source, "to_location": target, "company": company, "planned_date": day,
                }]]],
            }, fields=("state", "number"))
        document = ref(INTERNAL, doc["id"])
        state = _get(doc, "state")
        if state == "done":
            return PostResult("already_done", document)
        for current, button in (("draft", "wait"), ("waiting", "assign_force"), ("assigned", "do")):
            if state == current:
                state = await self.ops.button(INTERNAL, doc["id"], button)
        if state != "done":
            raise PermanentErpError(200, f"InventoryAdjusted: {document} is in state {state!r}, not done")
        return PostResult("posted", document)

    # -- customer returns -------------------------------------------------------------------

    @staticmethod
    def _return_done_states(m: MilestoneRecord) -> frozenset[str]:
        return frozenset({"done"}) if m.get("disposition") == "restock" else frozenset({"received", "done"})

    async def _return(self, m: MilestoneRecord) -> dict[str, Any] | None:
        return await self.ops.read_one(RETURN, "reference", f"{m['rma_id']}/{m['sku']}", ("state", "number"),
                                       [["warehouse.code", "=", m["warehouse_id"]]])

    async def _post_return(self, m: MilestoneRecord) -> PostResult:
        doc = await self._return(m)
        if doc is not None and doc["state"] in self._return_done_states(m):
            return PostResult("already_done", ref(RETURN, doc["id"]))
        if doc is None:
            doc = await self._create_return(m)
        document = ref(RETURN, doc["id"])
        state = _get(doc, "state")
        if state == "draft":
            state = await self.ops.button(RETURN, doc["id"], "receive")
        if state == "received" and m.get("disposition") == "restock":
            state = await self.ops.button(RETURN, doc["id"], "do")
        if state not in self._return_done_states(m):
            raise PermanentErpError(200, f"ReturnReceived: {document} is in state {state!r}")
        return PostResult("posted", document)

    async def _create_return(self, m: MilestoneRecord) -> dict[str, Any]:
        ship = await self._shipment(m["order_id"], fresh=True)  # needs its done moves, not a remembered state
        if ship["state"] != "done":
            error = NotReadyErpError if ship["state"] in SHIPMENT_FLOW else PermanentErpError
            raise error(200, f"ReturnReceived: {SHIPMENT} {m['order_id']!r} is in state "
                             f"{ship['state']!r}, not done (not shipped)")
        shipped = [mv for mv in ship["outgoing_moves"]
                   if (mv.get("product") or {}).get("code") == m["sku"] and mv.get("state") == "done"]
        if not shipped:
            raise PermanentErpError(200, f"ReturnReceived: {SHIPMENT} {m['order_id']!r} shipped no {m['sku']!r}")
        move = shipped[0]
        warehouse = await self._warehouse_by_id(_id(ship["warehouse"]))
        warehouse_input = _id(_get(warehouse, "input_location"))
        company = _id(ship["company"])
        return await self.ops.create(RETURN, {
            "company": company, "customer": _id(ship["customer"]), "warehouse": warehouse["id"],
            "warehouse_input": warehouse_input, "warehouse_storage": _id(warehouse["storage_location"]),
            "reference": f"{m['rma_id']}/{m['sku']}",
            "incoming_moves": [["create", [{
                "product": move["product"]["id"], "unit": _id(move["unit"]), "quantity": float(m["qty"]),
                "from_location": _id(move["to_location"]), "to_location": warehouse_input, "company": company,
                "unit_price": move.get("unit_price"), "currency": move.get("currency"),
                "origin": ref("stock.move", move["id"]),
            }]]],
        }, fields=("state", "number"))

    async def _warehouse_by_id(self, warehouse_id: int) -> dict[str, Any]:
        for warehouse in self._warehouses.values():
            if warehouse["id"] == warehouse_id:
                return warehouse

        async def load() -> dict[str, Any]:
            found = await self.ops.read_one(
                "stock.location", "id", warehouse_id, ("code", "storage_location", "lost_found_location", "input_location"))
            if not found:
                raise PermanentErpError(200, f"Tryton has no stock.location {warehouse_id}")
            if found.get("code"):
                self._warehouses.put(str(found["code"]), found)
            return found
        return await self._warehouses.get(f"id:{warehouse_id}", load)
