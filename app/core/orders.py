"""Per-order state machine (rules 3, 4, 5, 7 and the lifecycle edges of the contract).

``apply(state, event, watermark)`` and ``expire(state, watermark)`` are pure functions
of one order's state, keyed elsewhere by (warehouse_id, order_id): the engine (or a
worker partition) loads the state, calls them, and stores the state back.
"""

from __future__ import annotations

from bisect import insort
from operator import itemgetter
from typing import Any, Final

from app.core import milestones as ms
from app.core.model import (
    LINE_SHORT_CLOSED,
    MAX_EVIDENCE,
    ORDER_CANCELLED,
    ORDER_CHANGED,
    ORDER_RELEASED,
    PACK_CONFIRMED,
    PICK_CONFIRMED,
    RETURN_RECEIVED,
    SHIPMENT_DISPATCHED,
    Code,
    CoreSettings,
    Event,
    Milestone,
)
from app.core.parse import validate

UNRELEASED: Final = "unreleased"
OPEN: Final = "open"
CANCELLED: Final = "cancelled"

HOLD_WINDOW_MS: Final = CoreSettings().hold_window_ms

# Indexes into a line entry: [sku, ordered, picked, packed, short_closed].
SKU, ORDERED, PICKED, PACKED, SHORT = 0, 1, 2, 3, 4
_picked_of = itemgetter(PICKED)

Held = tuple[int, Event]  # (arrival seq within the order, event)
Evidence = tuple[int, str]  # (arrival seq within the order, event_id)


class OrderState:
    """Mutable state of one order. ``to_record``/``from_record`` give plain data.

    ``held``: events before the release (arrival order); ``waiting``: dispatches
    waiting for OrderPacked; ``pick_ev``/``pack_ev``: evidence of the next OrderPicked /
    OrderPacked, the 50 earliest arrivals; ``seq`` counts arrivals at this order.
    """

    __slots__ = (
        "held",
        "lines",
        "pack_ev",
        "package_ids",
        "packed_done",
        "pick_ev",
        "picked_done",
        "seq",
        "shipped",
        "started",
        "status",
        "unknown_reported",
        "version",
        "waiting",
    )

    def __init__(self) -> None:
        self.status: str = UNRELEASED
        self.version = 0
        self.lines: dict[int, list[Any]] = {}
        self.started = False
        self.picked_done = False
        self.packed_done = False
        self.shipped = False
        self.unknown_reported = False
        self.held: list[Held] = []
        self.waiting: list[Held] = []
        self.package_ids: list[str] = []
        self.pick_ev: list[Evidence] = []
        self.pack_ev: list[Evidence] = []
        self.seq = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderState) and self.to_record() == other.to_record()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"OrderState({self.to_record()!r})"

    def to_record(self) -> dict[str, Any]:
        """Plain data (dict/list/int/str/bool) for a state store."""
        return {
            "status": self.status,
            "version": self.version,
            "lines": [[n, *line] for n, line in self.lines.items()],
            "started": self.started,
            "picked_done": self.picked_done,
            "packed_done": self.packed_done,
            "shipped": self.shipped,
            "unknown_reported": self.unknown_reported,
            "held": [[s, e.to_record()] for s, e in self.held],
            "waiting": [[s, e.to_record()] for s, e in self.waiting],
            "package_ids": list(self.package_ids),
            "pick_ev": [list(x) for x in self.pick_ev],
            "pack_ev": [list(x) for x in self.pack_ev],
            "seq": self.seq,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> OrderState:
        """Inverse of ``to_record``."""

        def event(r: dict[str, Any]) -> Event:
            ev = validate(r)
            if isinstance(ev, str):
                raise ValueError(f"stored event is invalid: {ev}")
            return ev

        st = cls()
        st.status = rec["status"]
        st.version = rec["version"]
        st.lines = {n: list(rest) for n, *rest in rec["lines"]}
        st.started = rec["started"]
        st.picked_done = rec["picked_done"]
        st.packed_done = rec["packed_done"]
        st.shipped = rec["shipped"]
        st.unknown_reported = rec["unknown_reported"]
        st.held = [(s, event(r)) for s, r in rec["held"]]
        st.waiting = [(s, event(r)) for s, r in rec["waiting"]]
        st.package_ids = list(rec["package_ids"])
        st.pick_ev = [(s, e) for s, e in rec["pick_ev"]]
        st.pack_ev = [(s, e) for s, e in rec["pack_ev"]]
        st.seq = rec["seq"]
        return st


def apply(
    state: OrderState | None,
    ev: Event,
    watermark: int | float,
    hold_ms: int = HOLD_WINDOW_MS,
) -> tuple[OrderState | None, list[Milestone]]:
    """Apply one order-scoped event (already past rules 8, 1 and 2) to its order.

    Holds that are already due at ``watermark`` (e.g. a late event for an unreleased
    order) expire right away. Returns None as state only when there was none and the
    event leaves nothing to remember (a ReturnReceived for an unknown order).
    """
    out: list[Milestone] = []
    if state is None:
        if ev.type == RETURN_RECEIVED:
            out.append(ms.record_exception(ev, Code.RETURN_NOT_SHIPPED, "order is unknown"))
            return None, out
        state = OrderState()
    state.seq += 1
    _route(state, ev, state.seq, out)
    if state.held or state.waiting:
        _expire(state, watermark, hold_ms, out)
    return state, out


def expire(
    state: OrderState, watermark: int | float, hold_ms: int = HOLD_WINDOW_MS
) -> tuple[OrderState, list[Milestone]]:
    """Expire what is due at ``watermark``: the pre-release hold (UNKNOWN_ORDER once per
    order, then silent drops) and dispatches still waiting for OrderPacked (NOT_PACKED)."""
    out: list[Milestone] = []
    _expire(state, watermark, hold_ms, out)
    return state, out


def next_deadline(state: OrderState, hold_ms: int = HOLD_WINDOW_MS) -> int | None:
    """The watermark at which ``expire`` will next have something to do, if any."""
    if not state.held and not state.waiting:
        return None
    times = [e.occurred_at for _, e in state.held]
    times.extend(e.occurred_at for _, e in state.waiting)
    return min(times) + hold_ms


def _expire(state: OrderState, watermark: int | float, hold_ms: int, out: list[Milestone]) -> None:
    held = state.held
    if held and min(e.occurred_at for _, e in held) + hold_ms <= watermark:
        if not state.unknown_reported:
            state.unknown_reported = True
            out.append(ms.unknown_order([e for _, e in held]))
        state.held = []
    if state.waiting:
        due = [w for w in state.waiting if w[1].occurred_at + hold_ms <= watermark]
        if due:
            state.waiting = [w for w in state.waiting if w[1].occurred_at + hold_ms > watermark]
            for _, d in _by_time(due):
                detail = "order not packed within the hold window; dispatch dropped"
                out.append(ms.record_exception(d, Code.NOT_PACKED, detail))


def _by_time(held: list[Held]) -> list[Held]:
    """Held events in occurred_at order, ties by arrival."""
    return sorted(held, key=lambda h: (h[1].occurred_at, h[0]))


def _note(evidence: list[Evidence], seq: int, event_id: str) -> None:
    """Keep the ``MAX_EVIDENCE`` earliest arrivals, sorted by arrival seq."""
    if len(evidence) < MAX_EVIDENCE:
        if not evidence or evidence[-1][0] < seq:
            evidence.append((seq, event_id))
        else:
            insort(evidence, (seq, event_id))
    elif seq < evidence[-1][0]:
        insort(evidence, (seq, event_id))
        evidence.pop()


def _ids(evidence: list[Evidence]) -> tuple[str, ...]:
    return tuple([e for _, e in evidence])


def _route(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    if state.status == CANCELLED:
        out.append(ms.record_exception(ev, Code.ORDER_CANCELLED, "order is cancelled"))
        return
    kind = ev.type
    if kind == ORDER_RELEASED:
        if state.status == OPEN:
            out.append(
                ms.record_exception(
                    ev, Code.INVALID_EVENT, "order already released; changes must be OrderChanged"
                )
            )
        else:
            _release(state, ev, out)
    elif state.status == UNRELEASED:
        if kind == RETURN_RECEIVED:
            out.append(ms.record_exception(ev, Code.RETURN_NOT_SHIPPED, "order is unknown"))
        else:
            state.held.append((seq, ev))
    else:
        _HANDLERS[kind](state, ev, seq, out)


def _new_lines(ev: Event) -> dict[int, list[Any]]:
    return {n: [sku, qty, 0, 0, False] for n, sku, qty in ev.data["lines"]}


def _release(state: OrderState, ev: Event, out: list[Milestone]) -> None:
    state.status = OPEN
    state.version = 1
    state.lines = _new_lines(ev)
    out.append(ms.order_accepted(ev, 1, ev.data["lines"]))
    held, state.held = state.held, []
    for seq, h in _by_time(held):
        _route(state, h, seq, out)


def _content_frozen(state: OrderState, ev: Event, out: list[Milestone]) -> bool:
    """Rule 3: once picking started (its first accepted PickConfirmed) the warehouse owns
    the order's content. An OrderPicked reached with nothing picked (every line
    short-closed before any pick) does not start picking: the content stays the ERP's."""
    if state.started:
        out.append(
            ms.record_exception(
                ev, Code.AUTHORITY_CONFLICT, f"picking has started; {ev.type} rejected"
            )
        )
        return True
    return False


def _changed(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    if _content_frozen(state, ev, out):
        return
    # A new version restarts the content (lines, and the short-closes, packs and package
    # ids recorded against the old lines). After an OrderPicked with nothing picked the
    # order stays ended there (``picked_done``): rule 1 allows one OrderPicked per order,
    # so the new version is accepted as the ERP's content but is not picked again.
    state.version += 1
    state.lines = _new_lines(ev)
    state.package_ids = []
    state.pick_ev = []
    state.pack_ev = []
    out.append(ms.order_accepted(ev, state.version, ev.data["lines"]))


def _cancelled(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    if _content_frozen(state, ev, out):
        return
    state.status = CANCELLED
    waiting, state.waiting = state.waiting, []
    for _, d in _by_time(waiting):
        out.append(ms.record_exception(d, Code.ORDER_CANCELLED, "order is cancelled"))
    state.lines = {}
    state.package_ids = []
    state.pick_ev = []
    state.pack_ev = []


def _no_such_line(ev: Event, line_no: int) -> Milestone:
    return ms.record_exception(ev, Code.INVALID_EVENT, f"order has no line_no {line_no}")


def _line(state: OrderState, ev: Event, line_no: int, out: list[Milestone]) -> list[Any] | None:
    line = state.lines.get(line_no)
    if line is None:
        out.append(_no_such_line(ev, line_no))
    return line


def _picked(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    data = ev.data
    line_no = data["line_no"]
    line = _line(state, ev, line_no, out)
    if line is None:
        return
    if line[SKU] != data["sku"]:
        out.append(
            ms.record_exception(
                ev,
                Code.INVALID_EVENT,
                f"sku {data['sku']!r} differs from line {line_no}'s sku {line[SKU]!r}",
            )
        )
        return
    if state.picked_done:
        out.append(
            ms.record_exception(ev, Code.OVER_PICK, "order already picked; pick not counted")
        )
        return
    state.started = True
    qty = data["qty"]
    room = line[ORDERED] - line[PICKED]
    if qty > room:
        line[PICKED] = line[ORDERED]
        out.append(
            ms.record_exception(
                ev,
                Code.OVER_PICK,
                f"line {line_no}: pick of {qty} exceeds the open qty {max(room, 0)} "
                f"(ordered {line[ORDERED]}); only the ordered qty counts",
            )
        )
    else:
        line[PICKED] += qty
    _note(state.pick_ev, seq, ev.event_id)
    _check_picked(state, ev, out)


def _short_closed(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    line = _line(state, ev, ev.data["line_no"], out)
    if line is None or state.picked_done or line[SHORT]:
        return
    line[SHORT] = True
    _note(state.pick_ev, seq, ev.event_id)
    _check_picked(state, ev, out)


def _check_picked(state: OrderState, ev: Event, out: list[Milestone]) -> None:
    lines = state.lines
    for line in lines.values():
        if line[PICKED] < line[ORDERED] and not line[SHORT]:
            return
    state.picked_done = True
    report = []
    short = False
    for n, line in lines.items():
        report.append(
            {"line_no": n, "sku": line[SKU], "ordered": line[ORDERED], "picked": line[PICKED]}
        )
        short = short or line[PICKED] < line[ORDERED]
    out.append(ms.order_picked(ev, report, short, _ids(state.pick_ev)))
    state.pick_ev = []
    if not _any_picked(state):
        waiting, state.waiting = state.waiting, []
        for _, d in _by_time(waiting):
            out.append(ms.record_exception(d, Code.NOT_PACKED, "order has nothing picked"))
        state.package_ids = []
        state.pack_ev = []
        return
    _check_packed(state, ev, out)


def _packed(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    items = ev.data["items"]
    lines = state.lines
    for line_no, _ in items:
        if line_no not in lines:
            out.append(_no_such_line(ev, line_no))
            return
    if state.packed_done or (state.picked_done and not _any_picked(state)):
        return
    for line_no, qty in items:
        lines[line_no][PACKED] += qty
    package_id = ev.data["package_id"]
    if package_id not in state.package_ids:
        state.package_ids.append(package_id)
    _note(state.pack_ev, seq, ev.event_id)
    if state.picked_done:
        _check_packed(state, ev, out)


def _any_picked(state: OrderState) -> bool:
    return any(map(_picked_of, state.lines.values()))  # as cheap as a loop; any(genexpr) is ~3x dearer


def _check_packed(state: OrderState, ev: Event, out: list[Milestone]) -> None:
    for line in state.lines.values():
        if line[PACKED] < line[PICKED]:
            return
    state.packed_done = True
    out.append(ms.order_packed(ev, state.package_ids, _ids(state.pack_ev)))
    state.package_ids = []
    state.pack_ev = []
    waiting, state.waiting = state.waiting, []
    for seq, d in _by_time(waiting):
        _dispatched(state, d, seq, out)


def _dispatched(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    if state.shipped:
        return
    if state.packed_done:
        state.shipped = True
        lines = [
            {"line_no": n, "qty": line[PICKED]} for n, line in state.lines.items() if line[PICKED]
        ]
        out.append(ms.shipment_confirmed(ev, lines))
    elif state.picked_done and not _any_picked(state):
        out.append(ms.record_exception(ev, Code.NOT_PACKED, "order has nothing picked"))
    else:
        state.waiting.append((seq, ev))


def _returned(state: OrderState, ev: Event, seq: int, out: list[Milestone]) -> None:
    if state.shipped:
        out.append(ms.return_received(ev))
    else:
        out.append(
            ms.record_exception(ev, Code.RETURN_NOT_SHIPPED, "order has no ShipmentConfirmed")
        )


_HANDLERS: Final = {
    ORDER_CHANGED: _changed,
    ORDER_CANCELLED: _cancelled,
    PICK_CONFIRMED: _picked,
    LINE_SHORT_CLOSED: _short_closed,
    PACK_CONFIRMED: _packed,
    SHIPMENT_DISPATCHED: _dispatched,
    RETURN_RECEIVED: _returned,
}
