"""Ground truth invariants (checked against the stream itself) and the compare helper."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sim_support import TS, Run, decode, shape_problems

from app.core import ids, model
from app.core.timeutil import parse_ts
from app.simulator.truth import Windows, compare

TOP = {"milestone_id", "type", "warehouse_id", "occurred_at", "event_ids"}
FIELDS = {
    "OrderAccepted": {"order_id", "version", "lines"},
    "OrderPicked": {"order_id", "lines", "short"},
    "OrderPacked": {"order_id", "package_ids"},
    "ShipmentConfirmed": {"order_id", "shipment_id", "carrier", "tracking_no", "lines"},
    "InventoryAdjusted": {"sku", "location", "net_delta", "event_count", "window_start", "window_end"},
    "ReturnReceived": {"rma_id", "order_id", "sku", "qty", "disposition"},
    "SyncException": {"code", "order_id", "detail"},
}


def _events(run: Run) -> list[dict[str, Any]]:
    seen: set[bytes] = set()
    out = []
    for _, raw in run.records:
        d = decode(raw)
        if raw not in seen and d is not None and not shape_problems(d):
            out.append(d)
        seen.add(raw)
    return out


def _by(run: Run, mtype: str) -> dict[str, dict[str, Any]]:
    out = {m["order_id"]: m for m in run.truth if m["type"] == mtype}
    assert len(out) == sum(1 for m in run.truth if m["type"] == mtype), f"one {mtype} per order"
    return out


def test_milestones_have_the_contract_shape(default_run: Run) -> None:
    assert Counter(m["milestone_id"] for m in default_run.truth).most_common(1)[0][1] == 1
    for m in default_run.truth:
        assert set(m) == TOP | FIELDS[m["type"]], m
        assert m["occurred_at"] is None or TS.match(m["occurred_at"])
        assert len(m["event_ids"]) <= 50
    assert set(Counter(m["type"] for m in default_run.truth)) == set(FIELDS)


def test_ids_follow_app_core_ids(default_run: Run) -> None:
    for m in default_run.truth:
        t, wh = m["type"], m["warehouse_id"]
        if t == "OrderAccepted":
            expected = ids.order_accepted_id(wh, m["order_id"], m["version"])
        elif t in ("OrderPicked", "OrderPacked", "ShipmentConfirmed"):
            expected = ids.milestone_id(t, wh, m["order_id"])
        elif t == "InventoryAdjusted":
            expected = ids.inventory_adjusted_id(wh, m["sku"], m["location"], parse_ts(m["window_start"]))
        elif t == "ReturnReceived":
            expected = ids.return_received_id(wh, m["rma_id"], m["sku"])
        elif m["code"] == "UNKNOWN_ORDER":
            expected = ids.unknown_order_id(wh, m["order_id"])
        else:
            continue  # record exceptions: checked against their records below
        assert m["milestone_id"] == expected


def test_order_milestones_follow_from_the_stream(default_run: Run) -> None:
    events = _events(default_run)
    exception_ids = {
        e for m in default_run.truth if m.get("code") in ("OVER_PICK", "AUTHORITY_CONFLICT") for e in m["event_ids"]
    }
    released = {d["order_id"]: d for d in events if d["type"] == "OrderReleased"}
    cancelled = {d["order_id"] for d in events if d["type"] == "OrderCancelled" and d["event_id"] not in exception_ids}
    accepted = defaultdict(list)
    for m in default_run.truth:
        if m["type"] == "OrderAccepted":
            accepted[m["order_id"]].append(m)
    assert set(accepted) == set(released)
    for ms in accepted.values():
        assert sorted(m["version"] for m in ms) == list(range(1, len(ms) + 1))
    picked = _by(default_run, "OrderPicked")
    assert set(picked) == set(released) - cancelled  # one OrderPicked per non-cancelled released order
    qty = defaultdict(int)
    for d in events:
        if d["type"] == "PickConfirmed" and d["event_id"] not in exception_ids:
            qty[d["order_id"], d["line_no"]] += d["qty"]
    for order_id, m in picked.items():
        final = max(accepted[order_id], key=lambda a: a["version"])
        assert [(ln["line_no"], ln["sku"], ln["ordered"]) for ln in m["lines"]] == [
            (ln["line_no"], ln["sku"], ln["qty"]) for ln in final["lines"]
        ]
        for ln in m["lines"]:
            assert ln["picked"] == qty[order_id, ln["line_no"]] <= ln["ordered"]
        assert m["short"] == any(ln["picked"] < ln["ordered"] for ln in m["lines"])
    packed, shipped = _by(default_run, "OrderPacked"), _by(default_run, "ShipmentConfirmed")
    assert set(packed) == {o for o, m in picked.items() if any(ln["picked"] for ln in m["lines"])}
    assert set(shipped) == set(packed)
    packages = defaultdict(list)
    for d in events:
        if d["type"] == "PackConfirmed":
            packages[d["order_id"]].append(d["package_id"])
    for order_id, m in packed.items():
        assert m["package_ids"] == packages[order_id]
        assert shipped[order_id]["lines"] == [
            {"line_no": ln["line_no"], "qty": ln["picked"]} for ln in picked[order_id]["lines"] if ln["picked"]
        ]
    for m in default_run.truth:
        if m["type"] == "ReturnReceived":
            assert m["order_id"] in shipped


def test_inventory_windows_sum_on_time_adjustments(default_run: Run) -> None:
    late = {e for m in default_run.truth if m.get("detail") == "late" for e in m["event_ids"]}
    sums: dict[tuple[str, str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for d in _events(default_run):
        if d["type"] == "StockAdjusted" and d["event_id"] not in late:
            t = parse_ts(d["occurred_at"])
            acc = sums[d["warehouse_id"], d["sku"], d["location"], t - t % 300_000]
            acc[0] += d["delta"]
            acc[1] += 1
    expected = {k: v for k, v in sums.items() if v[0]}
    got = {
        (m["warehouse_id"], m["sku"], m["location"], parse_ts(m["window_start"])): [m["net_delta"], m["event_count"]]
        for m in default_run.truth
        if m["type"] == "InventoryAdjusted"
    }
    assert got == expected
    assert any(v[0] == 0 for v in sums.values())  # some windows net to zero and give no milestone
    for m in default_run.truth:
        if m["type"] == "InventoryAdjusted":
            assert parse_ts(m["window_end"]) - parse_ts(m["window_start"]) == 300_000
            assert m["occurred_at"] == m["window_end"]


def test_incidents_have_their_exception(default_run: Run) -> None:
    codes = Counter(m["code"] for m in default_run.truth if m["type"] == "SyncException")
    assert codes.keys() >= {
        "INVALID_EVENT", "SOURCE_NOT_AUTHORIZED", "AUTHORITY_CONFLICT", "OVER_PICK", "UNKNOWN_ORDER"
    }
    released = {d["order_id"] for d in _events(default_run) if d["type"] == "OrderReleased"}
    for m in default_run.truth:
        if m.get("code") == "UNKNOWN_ORDER":
            assert m["order_id"] not in released and m["order_id"].startswith("MO")
        if m.get("code") in ("AUTHORITY_CONFLICT", "OVER_PICK"):
            assert m["order_id"] in released


def test_windows_close_only_after_grace() -> None:
    w = Windows()
    w.add({"warehouse_id": "WH1", "sku": "S", "location": "L", "delta": 2, "event_id": "a"}, 1_000)
    w.add({"warehouse_id": "WH1", "sku": "S", "location": "L", "delta": -2, "event_id": "b"}, 2_000)
    w.add({"warehouse_id": "WH1", "sku": "S", "location": "M", "delta": 5, "event_id": "c"}, 3_000)
    assert w.close(359_999) == []
    (m,) = w.close(360_000)
    assert (m["location"], m["net_delta"], m["event_count"], m["event_ids"]) == ("M", 5, 1, ["c"])
    assert m["window_start"] == "1970-01-01T00:00:00.000Z" and m["occurred_at"] == "1970-01-01T00:05:00.000Z"


# -- compare ---------------------------------------------------------------------------------


def _m(**kw: Any) -> dict[str, Any]:
    base = {"milestone_id": "a" * 32, "type": "OrderPicked", "warehouse_id": "WH1",
            "occurred_at": "2026-11-27T08:00:00.000Z", "event_ids": ["e1"], "order_id": "SO1",
            "lines": [
                {"line_no": 1, "sku": "S1", "ordered": 2, "picked": 2},
                {"line_no": 2, "sku": "S2", "ordered": 1, "picked": 1},
            ],
            "short": False}
    base.update(kw)
    return base


def test_compare_matches_on_id_and_normalises_order() -> None:
    exp = _m()
    act = _m(lines=list(reversed(exp["lines"])), event_ids=["other"])
    report = compare([exp], [act])
    assert report.ok and report.matched == 1
    assert not compare([exp], [act], check_event_ids=True).ok


def test_compare_reports_each_kind_of_difference() -> None:
    exp = [_m(), _m(milestone_id="b" * 32, order_id="SO2")]
    act = [_m(short=True, occurred_at="2026-11-27T08:00:01.000Z"), _m(milestone_id="c" * 32), _m(short=True)]
    r = compare(exp, act)
    assert not r.ok
    assert [m["milestone_id"] for m in r.missing] == ["b" * 32]
    assert [m["milestone_id"] for m in r.unexpected] == ["c" * 32]
    assert r.duplicated == ("a" * 32,)
    assert {mm.field for mm in r.mismatched} == {"short"}  # the last copy of a duplicated id is compared
    assert "missing 1" in r.summary()
    assert {mm.field for mm in compare(exp[:1], act[:1]).mismatched} == {"short", "occurred_at"}
    assert {mm.field for mm in compare(exp[:1], act[:1], check_occurred_at=False).mismatched} == {"short"}


def test_compare_detail_only_for_late_and_none_equals_missing() -> None:
    exc = {"milestone_id": "d" * 32, "type": "SyncException", "warehouse_id": "WH1", "occurred_at": None,
           "event_ids": [], "code": "INVALID_EVENT", "order_id": None, "detail": "anything"}
    other = {k: v for k, v in exc.items() if k != "order_id"} | {"detail": "something else"}
    assert compare([exc], [other]).ok
    late = exc | {"detail": "late"}
    assert not compare([late], [exc]).ok
    assert compare([late], [late | {"order_id": None}]).ok


def test_compare_accepts_milestone_objects() -> None:
    m = model.Milestone.from_dict(_m())
    assert compare([_m()], [m]).ok
