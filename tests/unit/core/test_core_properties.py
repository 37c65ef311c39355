"""Property tests: redelivery is harmless, replay is deterministic, ids are unique per key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from core_support import (
    HOLD,
    L,
    cancel,
    change,
    dispatch,
    pack,
    pick,
    release,
    ret,
    run,
    scan,
    short,
    stock,
    tote,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.commands.replay import run_replay
from app.core import ids
from app.core.model import MILESTONE_TYPES, DeadLetter, Milestone

LINES = {"O1": [L(1, "A", 2)], "O2": [L(1, "A", 1), L(2, "B", 2)], "O3": [L(1, "C", 3)]}
SKU = {("O1", 1): "A", ("O2", 1): "A", ("O2", 2): "B", ("O3", 1): "C"}
KINDS = [
    "release", "release", "change", "cancel", "pick", "pick", "pick", "short", "pack", "pack",
    "dispatch", "dispatch", "return", "stock", "stock", "scan", "tote", "bad", "garbage",
]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def streams(draw: Any) -> list[bytes]:
    """A small random stream over three orders, two warehouses and every event type."""
    out: list[bytes] = []
    for i in range(draw(st.integers(1, 45))):
        eid = f"e{i}"
        kind = draw(st.sampled_from(KINDS))
        t = draw(st.integers(0, 3 * HOLD))
        order = draw(st.sampled_from(sorted(LINES)))
        line = draw(st.sampled_from([1, 1, 2]))
        qty = draw(st.integers(1, 3))
        kw: dict[str, Any] = {}
        if draw(st.integers(0, 9)) == 0:
            kw["source"] = draw(st.sampled_from(["erp", "wms", "carrier", "mes"]))
        if draw(st.integers(0, 5)) == 0:
            kw["warehouse_id"] = "W2"
        sku = SKU.get((order, line), "Z")
        d: dict[str, Any]
        if kind == "release":
            d = release(eid, t, order=order, lines=LINES[order], **kw)
        elif kind == "change":
            d = change(eid, t, [L(1, SKU[(order, 1)], qty)], order=order, **kw)
        elif kind == "cancel":
            d = cancel(eid, t, order=order, **kw)
        elif kind == "pick":
            d = pick(eid, t, line=line, qty=qty, sku=sku, order=order, **kw)
        elif kind == "short":
            d = short(eid, t, line=line, order=order, **kw)
        elif kind == "pack":
            d = pack(eid, t, items=[(line, qty)], package=f"P{qty}", order=order, **kw)
        elif kind == "dispatch":
            d = dispatch(eid, t, order=order, **kw)
        elif kind == "return":
            d = ret(eid, t, order=order, sku=sku, rma=f"R{qty}", **kw)
        elif kind == "stock":
            d = stock(eid, t, draw(st.integers(-3, 3)), sku=sku, **kw)
        elif kind == "scan":
            d = scan(eid, t, order_id=order, **kw)
        elif kind == "tote":
            d = tote(eid, t, **kw)
        elif kind == "bad":
            d = pick(eid, t, qty=0, order=order, **kw)
        else:
            out.append(b"not json " + str(qty).encode())
            continue
        out.append(orjson.dumps(d))
    return out


def _milestones(records: list[bytes]) -> list[Milestone]:
    return [m for m in run(records) if isinstance(m, Milestone)]


@PROPS
@given(streams(), st.data())
def test_redelivering_events_later_leaves_milestones_unchanged(records: list[bytes], data: Any) -> None:
    redelivered = list(records)
    for _ in range(data.draw(st.integers(1, 10))):
        i = data.draw(st.integers(0, len(records) - 1))
        original_pos = redelivered.index(records[i])
        j = data.draw(st.integers(original_pos + 1, len(redelivered)))
        redelivered.insert(j, records[i])
    assert _milestones(redelivered) == _milestones(records)


@PROPS
@given(streams())
def test_processing_is_deterministic(records: list[bytes]) -> None:
    assert run(records) == run(records)


def _business_key(m: Milestone) -> tuple[Any, ...]:
    b = m.body
    if m.type == "OrderAccepted":
        return (m.type, m.warehouse_id, b["order_id"], b["version"])
    if m.type in ("OrderPicked", "OrderPacked", "ShipmentConfirmed"):
        return (m.type, m.warehouse_id, b["order_id"])
    if m.type == "InventoryAdjusted":
        return (m.type, m.warehouse_id, b["sku"], b["location"], b["window_start"])
    if m.type == "ReturnReceived":
        return (m.type, m.warehouse_id, b["rma_id"], b["sku"])
    if b["code"] == "UNKNOWN_ORDER":
        return (m.type, "UNKNOWN_ORDER", m.warehouse_id, b["order_id"])
    return (m.type, "record", m.event_ids)


_ID_OF = {
    "OrderAccepted": lambda k: ids.order_accepted_id(k[1], k[2], k[3]),
    "OrderPicked": lambda k: ids.order_picked_id(k[1], k[2]),
    "OrderPacked": lambda k: ids.order_packed_id(k[1], k[2]),
    "ShipmentConfirmed": lambda k: ids.shipment_confirmed_id(k[1], k[2]),
    "InventoryAdjusted": lambda k: ids.inventory_adjusted_id(*k[1:]),
    "ReturnReceived": lambda k: ids.return_received_id(*k[1:]),
}


@PROPS
@given(streams())
def test_milestone_ids_are_unique_per_business_key(records: list[bytes]) -> None:
    out = run(records)
    milestones = [m for m in out if isinstance(m, Milestone)]
    assert {m.type for m in milestones} <= set(MILESTONE_TYPES)
    assert len({m.milestone_id for m in milestones}) == len(milestones)
    keys = [_business_key(m) for m in milestones if m.type != "SyncException" or m.body["code"] == "UNKNOWN_ORDER"]
    assert len(set(keys)) == len(keys)
    for m in milestones:
        if m.type in _ID_OF:
            assert m.milestone_id == _ID_OF[m.type](_business_key(m))
    assert len([o for o in out if isinstance(o, DeadLetter)]) == sum(
        1 for r in records if r.startswith(b"not json") or b'"qty":0' in r
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(streams())
def test_replay_output_is_byte_identical_across_runs(tmp_path: Path, records: list[bytes]) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(records) + b"\n")
    outputs = []
    for n in range(2):
        out, dead = tmp_path / f"out{n}", tmp_path / f"dead{n}"
        assert run_replay(str(src), str(out), str(dead)) == 0
        outputs.append((out.read_bytes(), dead.read_bytes()))
    assert outputs[0] == outputs[1]
    expected = b"".join(
        orjson.dumps(m.to_dict(), option=orjson.OPT_SORT_KEYS) + b"\n" for m in _milestones(records)
    )
    assert outputs[0][0] == expected
