"""The governance core for one ordered stream: decode -> rule 8 -> dedup (rule 1) ->
authority (rule 2) -> watermark -> order rules / inventory windows.

State lives in attributes that are plain mutable mappings (a worker may pass its own):
``orders`` (warehouse_id, order_id) -> ``OrderState``; ``windows.store``
(warehouse_id, sku, location) -> open windows; ``seen.store`` ``record_key(source,
event_id)`` -> base time; ``rejected`` the milestone ids of records already reported INVALID_EVENT;
``returns`` (warehouse_id, rma_id, sku) -> time of its ReturnReceived; ``watermark``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, MutableSet
from heapq import heappop, heappush
from math import inf
from typing import Any, Final, cast

import orjson

from app.core import ids, orders, telemetry
from app.core import milestones as ms
from app.core.dedup import Dedup, record_key
from app.core.inventory import StockKey, WindowRecord, Windows, late
from app.core.model import (
    M_RETURN_RECEIVED,
    M_SYNC_EXCEPTION,
    STOCK_ADJUSTED,
    Code,
    CoreSettings,
    DeadLetter,
    Event,
    Milestone,
    StockForward,
    new_event,
)
from app.core.orders import OrderState
from app.core.parse import TypeSpec, check, decode, identity
from app.core.timeutil import parse_ts

OrderKey = tuple[str, str]  # (warehouse_id, order_id)
Output = Milestone | DeadLetter | StockForward
#: Raw record -> its plain dict, or the reason (rule 8) it cannot be decoded.
Decode = Callable[[bytes], dict[str, Any] | str]
#: A record of a batch that was decoded or has outputs: (index in the batch, dict or None, outputs).
Processed = tuple[int, dict[str, Any] | None, list[Output]]
FUTURE: Final = "future"


class Engine:
    """Applies the contract's rules to one ordered stream of records."""

    def __init__(
        self,
        settings: CoreSettings = CoreSettings(),
        clock: Callable[[], int] | None = None,
        *,
        orders: MutableMapping[OrderKey, OrderState] | None = None,
        windows: MutableMapping[StockKey, dict[int, WindowRecord]] | None = None,
        seen: MutableMapping[str, int] | None = None,
        rejected: MutableSet[str] | None = None,
        returns: MutableMapping[tuple[str, str, str], int] | None = None,
        watermark: int | None = None,
        forward_stock: bool = False,
        pending: Iterable[OrderKey] | None = None,
    ) -> None:
        """``clock`` (int ms) enables the worker-only ``future`` check; the keyword
        stores let a worker supply its own (restored) state. With ``forward_stock`` an
        on-time StockAdjusted becomes a ``StockForward`` for the inventory stage
        (``app.core.stock``) instead of being counted in a local window. ``pending``: the
        keys of every stored order that may hold events or wait for its packing (others
        may be left out); None: every order in ``orders`` is looked at (a store that
        reads its orders lazily gives them, so the start does not read them all)."""
        self.settings = settings
        self.forward_stock = forward_stock
        self.clock = clock
        self.orders: MutableMapping[OrderKey, OrderState] = {} if orders is None else orders
        self.windows = Windows(settings.window_size_ms, settings.window_grace_ms, windows)
        self.seen = Dedup(settings.dedup_retention_ms, seen)
        self.rejected: MutableSet[str] = set() if rejected is None else rejected
        self.returns: MutableMapping[tuple[str, str, str], int] = {} if returns is None else returns
        self.watermark = watermark
        #: Records that passed rule 8, by (type, source); the worker turns them into metrics.
        self.counts: dict[tuple[str, str], int] = {}
        self._hold = settings.hold_window_ms
        self._future_ms: int = settings.future_tolerance_ms
        self._hold_heap: list[tuple[int, OrderKey]] = []
        self._hold_at: dict[OrderKey, int] = {}
        self._due: int | float = inf
        if pending is None:
            for key, state in self.orders.items():
                self._schedule(key, state)
        else:
            for key in pending:
                stored = self.orders.get(key)
                if stored is not None:
                    self._schedule(key, stored)
        self._refresh_due()

    # -- entry points -------------------------------------------------------------

    def process(self, raw: bytes, read: Decode = decode) -> list[Output]:
        """One raw record as ``process_batch`` reads it (``read``: JSON by default)."""
        outs = self.process_telemetry(raw)
        if outs is not None:
            return outs
        return self.process_decoded(raw, read)[1]

    def process_batch(self, raws: list[bytes], read: Decode) -> list[Processed]:
        """Records of one stream in order, as the worker and ``replay`` read them: accepted
        telemetry without a dict (``process_telemetry``), every other record by ``read`` (its
        dict, or its rule-8 reason) then ``process_event`` (``process_decoded``). Returns
        ``(index, dict, outputs)`` for each record that was decoded to a dict or has outputs
        (the dict None for the others): most records, accepted telemetry that moves no due
        deadline, give nothing. One compiled loop per batch instead of a call per record."""
        done: list[Processed] = []
        for i, raw in enumerate(raws):
            outs = self.process_telemetry(raw)
            if outs is None:
                d, outs = self.process_decoded(raw, read)
                done.append((i, d, outs))
            elif outs:
                done.append((i, None, outs))
        return done

    def process_decoded(self, raw: bytes, read: Decode) -> tuple[dict[str, Any] | None, list[Output]]:
        """A record the telemetry read did not take: ``read`` decodes it (a plain dict, or the
        rule-8 reason as a str), then rule 8 and the rest; the dict (None if there is none)
        and the outputs."""
        d = read(raw)
        if isinstance(d, str):
            return None, self._invalid(None, raw, d)
        return d, self.process_event(d, raw)

    def process_telemetry(self, raw: bytes) -> list[Output] | None:
        """One raw record if it is authorized telemetry that rule 8 accepts and that is not
        from the future, read without its dict (``app.core.telemetry``); None for any
        other record, which the caller passes on to ``process_decoded`` (``process`` and
        ``process_batch`` do). The outcome is the one
        ``process_event`` gives the record (counts included): only the cost differs."""
        read = telemetry.read(raw)  # (authorized sources only)
        if read is None:
            return None
        ckey, occurred_at = read
        clock = self.clock
        if clock is not None and occurred_at > clock() + self._future_ms:
            return None
        counts = self.counts
        counts[ckey] = counts.get(ckey, 0) + 1
        return self._telemetry(occurred_at)

    def _telemetry(self, occurred_at: int) -> list[Output]:
        """Authorized, accepted telemetry: it moves the watermark, nothing else."""
        wm = self.watermark
        if wm is None or occurred_at > wm:
            self.watermark = occurred_at
            if occurred_at >= self._due:
                return cast("list[Output]", self._advance(occurred_at))
        return []

    def process_event(self, d: Mapping[str, Any], raw: bytes | None = None) -> list[Output]:
        """One decoded record (timestamps as ISO str, int ms or aware datetime).

        ``raw`` is kept in the dead letter if the record fails rule 8; without it the
        dead letter holds the record as canonical JSON.
        """
        plain: dict[str, Any]
        if type(d) is dict:
            plain = cast("dict[str, Any]", d)
        elif isinstance(d, Mapping):
            plain = dict(d)
        else:
            return self._invalid(None, raw, "undecodable: record is not an object")
        checked = check(plain)
        if isinstance(checked, str):  # the rejection reason
            return self._invalid(plain, raw, checked)
        spec, event_id, source, occurred_at, data = checked
        counts = self.counts
        ckey = (spec.name, source)
        counts[ckey] = counts.get(ckey, 0) + 1
        clock = self.clock
        if clock is not None and occurred_at > clock() + self._future_ms:
            return self._invalid(plain, raw, FUTURE)
        wm = self.watermark
        authorized = source in spec.authority
        if data is None and authorized:
            # Telemetry fast path. A duplicate of authorized telemetry can change nothing
            # (it causes no milestone and its time is already in the watermark), so it
            # is not kept in the dedup store (docs/rules.md, "Deduplication").
            return self._telemetry(occurred_at)
        seen = self.seen
        if not seen.first(f"{source}\x1f{event_id}", occurred_at, wm):  # dedup.record_key
            return []
        if seen.next_prune < self._due:
            self._due = seen.next_prune
        if not authorized:
            return cast("list[Output]", self._filter([self._unauthorized(plain, spec, occurred_at)]))
        assert data is not None  # telemetry (data None) has returned above, authorized or not
        out: list[Output] = []
        if wm is None or occurred_at > wm:
            self.watermark = wm = occurred_at
            if wm >= self._due:
                out = cast("list[Output]", self._advance(wm))
        warehouse_id = plain["warehouse_id"]
        if spec.name == STOCK_ADJUSTED:
            ev = new_event((event_id, spec.name, source, occurred_at, warehouse_id, None, data))
            if not self.forward_stock:
                out.extend(self.windows.add(ev, wm))
                if self.windows.next_close < self._due:
                    self._due = self.windows.next_close
            elif self.windows.is_late(occurred_at, wm):
                out.append(late(ev))
            else:
                out.append(StockForward(ev, wm))
        else:
            order_id = plain["order_id"]
            ev = new_event((event_id, spec.name, source, occurred_at, warehouse_id, order_id, data))
            out.extend(self._apply_order(ev, wm))
        return out

    def reject(self, raw: bytes, reason: str) -> list[Output]:
        """A record the caller could not decode (e.g. bad Avro): INVALID_EVENT + dead letter."""
        return self._invalid(None, raw, reason)

    def advance(self, watermark: int) -> list[Milestone]:
        """Move the watermark forward (never back) and emit what becomes due."""
        if self.watermark is not None and watermark <= self.watermark:
            return []
        self.watermark = watermark
        return self._advance(watermark)

    def finish(self) -> list[Milestone]:
        """End of input (rule 9): the watermark goes to infinity; every open window
        closes and every held order or waiting dispatch expires."""
        out = self._expire_due(inf)
        self._refresh_due()
        return out

    # -- internals ----------------------------------------------------------------

    def _advance(self, watermark: int) -> list[Milestone]:
        out = self._expire_due(watermark)
        if watermark >= self.seen.next_prune:
            self.seen.prune(watermark)
        self._refresh_due()
        return out

    def _expire_due(self, watermark: int | float) -> list[Milestone]:
        """Holds first (deadline order, ties by key), then windows (same order)."""
        out: list[Milestone] = []
        heap = self._hold_heap
        while heap and heap[0][0] <= watermark:
            deadline, key = heappop(heap)
            if self._hold_at.get(key) != deadline:
                continue  # superseded by a later schedule
            del self._hold_at[key]
            state = self.orders.get(key)
            if state is None:
                continue
            state, expired = orders.expire(state, watermark, self._hold)
            self.orders[key] = state
            out.extend(self._filter(expired))
            self._schedule(key, state)
        out.extend(self.windows.close(watermark))
        return out

    def _refresh_due(self) -> None:
        hold = self._hold_heap[0][0] if self._hold_heap else inf
        self._due = min(hold, self.windows.next_close, self.seen.next_prune)

    def _schedule(self, key: OrderKey, state: OrderState) -> None:
        deadline = orders.next_deadline(state, self._hold)
        if deadline is None:
            self._hold_at.pop(key, None)
        elif self._hold_at.get(key) != deadline:
            self._hold_at[key] = deadline
            heappush(self._hold_heap, (deadline, key))
            if deadline < self._due:
                self._due = deadline

    def _apply_order(self, ev: Event, watermark: int) -> list[Milestone]:
        key = (ev.warehouse_id, ev.order_id or "")
        store = self.orders
        state, out = orders.apply(store.get(key), ev, watermark, self._hold)
        if state is not None:
            store[key] = state
            if state.held or state.waiting or key in self._hold_at:
                self._schedule(key, state)
        return self._filter(out) if out else out

    def _filter(self, out: list[Milestone]) -> list[Milestone]:
        """Rule 1 across orders: one ReturnReceived per (warehouse_id, rma_id, sku), and
        no second SyncException for a record already reported INVALID_EVENT."""
        if not out:
            return out
        kept = []
        for m in out:
            if m.type == M_SYNC_EXCEPTION:
                if m.milestone_id in self.rejected:
                    continue
            elif m.type == M_RETURN_RECEIVED:
                rkey = (m.warehouse_id or "", m.body["rma_id"], m.body["sku"])
                if rkey in self.returns:
                    continue
                self.returns[rkey] = m.occurred_at or 0
            kept.append(m)
        return kept

    def _unauthorized(self, d: Mapping[str, Any], spec: TypeSpec, occurred_at: int) -> Milestone:
        order_id = d.get("order_id") if spec.has_order_id else None
        ev = Event(
            d["event_id"], spec.name, d["source"], occurred_at, d["warehouse_id"], order_id, {}
        )
        allowed = ", ".join(sorted(spec.authority))
        return ms.record_exception(
            ev,
            Code.SOURCE_NOT_AUTHORIZED,
            f"source {d['source']!r} is not authorized for {spec.name} (allowed: {allowed})",
        )

    def _invalid(self, d: Mapping[str, Any] | None, raw: bytes | None, reason: str) -> list[Output]:
        """Rule 8: a dead letter always; the INVALID_EVENT once per record identity, and
        not for a corrupt copy of a record already accepted."""
        ident = identity(d)
        if raw is None:
            raw = _canonical(d)
        mid = ids.record_exception_id(*ident) if ident else ids.raw_exception_id(raw)
        letter = DeadLetter(raw, reason, mid)
        if mid in self.rejected or (
            ident is not None and self.seen.contains(record_key(*ident), self.watermark)
        ):
            return [letter]
        self.rejected.add(mid)
        warehouse_id = order_id = None
        occurred_at = self.watermark
        if d is not None:
            wh = d.get("warehouse_id")
            warehouse_id = wh if type(wh) is str and wh else None
            oid = d.get("order_id")
            order_id = oid if type(oid) is str and oid else None
            try:
                occurred_at = parse_ts(d.get("occurred_at"))
            except ValueError:
                pass
        event_ids = (ident[1],) if ident else ()
        milestone = ms.invalid_record(mid, warehouse_id, occurred_at, event_ids, order_id, reason)
        return [milestone, letter]


def _canonical(d: Mapping[str, Any] | None) -> bytes:
    """Stable bytes for a record handed over already decoded (sorted-key JSON)."""
    try:
        return orjson.dumps(d, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
    except (TypeError, orjson.JSONEncodeError):
        return repr(d).encode()
