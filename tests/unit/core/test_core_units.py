"""Unit tests of the core's building blocks: time, ids, records, parsing, state, stores."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from core_support import (
    HOLD,
    L,
    change,
    dispatch,
    ms,
    pack,
    pick,
    release,
    ret,
    run,
    scan,
    shipped_order,
    short,
    stock,
)
from hypothesis import given
from hypothesis import strategies as st

from app.core import ids, orders
from app.core.dedup import Dedup
from app.core.engine import Engine
from app.core.inventory import Windows
from app.core.model import AUTHORITY, SOURCES, CoreSettings, Milestone
from app.core.orders import OrderState
from app.core.parse import SPECS, check, identity, validate
from app.core.timeutil import MAX_MS, MIN_MS, format_ts, parse_ts

UTC = timezone.utc

# -- timeutil ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2026-11-27T10:00:00.000Z", 1795773600000, id="canonical"),
        pytest.param("2026-11-27T10:00:00Z", 1795773600000, id="no-millis"),
        pytest.param("2026-11-27T11:00:00.000+01:00", 1795773600000, id="offset"),
        pytest.param("2026-11-27T10:00:00.123456Z", 1795773600123, id="micros-truncated"),
        pytest.param("1969-12-31T23:59:59.999Z", -1, id="before-epoch"),
        pytest.param(1795773600000, 1795773600000, id="int-ms"),
        pytest.param(datetime(2026, 11, 27, 10, tzinfo=UTC), 1795773600000, id="aware-datetime"),
        pytest.param(datetime(2026, 11, 27, 11, tzinfo=timezone(timedelta(hours=1))), 1795773600000,
                     id="aware-datetime-offset"),
    ],
)
def test_parse_ts(value: Any, expected: int) -> None:
    assert parse_ts(value) == expected
    assert parse_ts(value) == expected  # second call may take the cached fast path


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-27T10:00:00.000", "2026-11-27", "yesterday", "", "2026-11-27T10:00:60.000Z",
        "2026-11-27T10:00:0٣.000Z", 1.5, True, None, MAX_MS + 1, MIN_MS - 1, datetime(2026, 11, 27),
    ],
)
def test_parse_ts_rejects(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_ts(value)


def test_format_ts() -> None:
    assert format_ts(1795773600000) == "2026-11-27T10:00:00.000Z"
    assert format_ts(-1) == "1969-12-31T23:59:59.999Z"
    assert format_ts(7) == "1970-01-01T00:00:00.007Z"


@given(st.integers(min_value=MIN_MS, max_value=MAX_MS))
def test_format_parse_round_trip(t: int) -> None:
    text = format_ts(t)
    assert parse_ts(text) == t
    assert parse_ts(text) == t
    assert datetime.fromisoformat(text) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=t)


# -- ids -----------------------------------------------------------------------------------


def test_milestone_id_is_sha256_of_unit_separated_parts() -> None:
    assert ids.milestone_id("a", "b") == hashlib.sha256(b"a\x1fb").hexdigest()[:32]
    assert len(ids.milestone_id("x")) == 32


def test_id_helpers_use_the_documented_parts() -> None:
    m = ids.milestone_id
    assert ids.order_accepted_id("W", "O", 2) == m("OrderAccepted", "W", "O", "2")
    assert ids.order_picked_id("W", "O") == m("OrderPicked", "W", "O")
    assert ids.order_packed_id("W", "O") == m("OrderPacked", "W", "O")
    assert ids.shipment_confirmed_id("W", "O") == m("ShipmentConfirmed", "W", "O")
    assert ids.inventory_adjusted_id("W", "S", "L", 1795773600000) == m(
        "InventoryAdjusted", "W", "S", "L", "2026-11-27T10:00:00.000Z"
    )
    assert ids.return_received_id("W", "R", "S") == m("ReturnReceived", "W", "R", "S")
    assert ids.record_exception_id("wms", "e1") == m("SyncException", "wms", "e1")
    assert ids.unknown_order_id("W", "O") == m("SyncException", "UNKNOWN_ORDER", "W", "O")
    assert ids.raw_exception_id(b"x") == m("SyncException", "raw", hashlib.sha256(b"x").hexdigest())


def test_engine_uses_the_id_helpers() -> None:
    out = run([*shipped_order(), stock("s1", 0, 1), ret("t1", 10), pick("p9", 0, order="O9")])
    got = {m.type + m.body.get("code", ""): m.milestone_id for m in out}
    assert got == {
        "OrderAccepted": ids.order_accepted_id("W1", "O1", 1),
        "OrderPicked": ids.order_picked_id("W1", "O1"),
        "OrderPacked": ids.order_packed_id("W1", "O1"),
        "ShipmentConfirmed": ids.shipment_confirmed_id("W1", "O1"),
        "ReturnReceived": ids.return_received_id("W1", "R1", "A"),
        "SyncExceptionUNKNOWN_ORDER": ids.unknown_order_id("W1", "O9"),
        "InventoryAdjusted": ids.inventory_adjusted_id("W1", "A", "L1", ms(0)),
    }


# -- model ---------------------------------------------------------------------------------


def test_milestone_to_dict_and_back() -> None:
    out = run([*shipped_order(), stock("s1", 0, 3), b"junk", pick("p9", 0, order="O9")])
    for m in out:
        if isinstance(m, Milestone):
            d = orjson.loads(orjson.dumps(m.to_dict()))
            assert Milestone.from_dict(d) == m
    inv = next(m for m in out if isinstance(m, Milestone) and m.type == "InventoryAdjusted")
    assert inv.to_dict() == {
        "milestone_id": inv.milestone_id, "type": "InventoryAdjusted", "warehouse_id": "W1",
        "occurred_at": "2026-11-27T10:05:00.000Z", "event_ids": ["s1"], "sku": "A", "location": "L1",
        "net_delta": 3, "event_count": 1, "window_start": "2026-11-27T10:00:00.000Z",
        "window_end": "2026-11-27T10:05:00.000Z",
    }
    junk = next(m for m in out if isinstance(m, Milestone) and m.warehouse_id is None)
    assert junk.to_dict()["occurred_at"] == "2026-11-27T10:00:03.000Z"  # the watermark
    assert junk.to_dict()["order_id"] is None


def test_authority_table_names_only_known_sources() -> None:
    assert set().union(*AUTHORITY.values()) == SOURCES
    assert set(SPECS) == set(AUTHORITY)


# -- parse ---------------------------------------------------------------------------------


def test_validate_normalises_fields() -> None:
    ev = validate(pack("k1", 1, items=[(1, 2)], weight_kg=1.5))
    assert not isinstance(ev, str)
    assert ev.order_id == "O1" and ev.occurred_at == ms(1)
    assert ev.data == {"items": ((1, 2),), "package_id": "P1", "weight_kg": 1.5}
    assert validate(ev.to_record()) == ev


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        pytest.param({}, "missing field 'event_id'", id="empty"),
        pytest.param({**scan("s", 0), "event_id": ""}, "field 'event_id' must be a non-empty string", id="eid"),
        pytest.param({**scan("s", 0), "type": 3}, "field 'type' must be one of", id="type-int"),
        pytest.param({**scan("s", 0), "type": ["x"]}, "field 'type' must be one of", id="type-list"),
        pytest.param({**scan("s", 0), "occurred_at": None}, "missing field 'occurred_at'", id="no-time"),
        pytest.param({**scan("s", 0), "warehouse_id": ""}, "field 'warehouse_id'", id="wh"),
        pytest.param({**scan("s", 0), "tote_id": 5}, "field 'tote_id' must be a string of at most 256 characters, or null", id="opt"),
        pytest.param({**release("r"), "lines": "x"}, "field 'lines' must be a list", id="lines-str"),
        pytest.param({**release("r"), "lines": [5]}, "field 'lines[0]' must be an object", id="line-int"),
        pytest.param({**release("r"), "lines": [{"line_no": 1, "qty": 1}]}, "missing field 'lines[0].sku'",
                     id="line-sku"),
        pytest.param({**release("r"), "lines": [L(1, "A", -1)]}, "field 'lines[0].qty' must be > 0",
                     id="line-qty"),
        pytest.param(pack("k", 0, items=[(1, 0)]), "field 'items[0].qty' must be > 0", id="pack-qty"),
        pytest.param(pack("k", 0, weight_kg=-1), "field 'weight_kg' must be a number >= 0", id="weight"),
        pytest.param(dispatch("d", 0, package_ids=[""]), "field 'package_ids[0]'", id="package-ids"),
        pytest.param(stock("s", 0, 1.5), "field 'delta' must be an integer, got float", id="delta"),
        pytest.param(pick("p", 0, qty=2**31), "field 'qty' is out of range", id="int32"),
        pytest.param(short("s", 0, line=None), "missing field 'line_no'", id="short-line"),
    ],
)
def test_validate_reasons(record: dict[str, Any], reason: str) -> None:
    got = validate(record)
    assert isinstance(got, str) and got.startswith(reason), got


def test_extra_fields_are_ignored_and_null_optional_is_absent() -> None:
    ev = validate({**release("r1"), "wave_id": None, "priority": "high"})
    assert not isinstance(ev, str) and ev.data == {"lines": ((1, "A", 2),)}


def test_check_skips_building_telemetry() -> None:
    got = check(scan("s1", 0))
    assert not isinstance(got, str) and got[4] is None


def test_identity() -> None:
    assert identity({"source": "wms", "event_id": "e"}) == ("wms", "e")
    assert identity({"source": "wms", "event_id": ""}) is None
    assert identity({"source": 1, "event_id": "e"}) is None
    assert identity(None) is None


# -- per-order functions on their own -------------------------------------------------------


def _event(d: dict[str, Any]) -> Any:
    ev = validate(d)
    assert not isinstance(ev, str)
    return ev


def test_orders_apply_and_expire_without_the_engine() -> None:
    state, out = orders.apply(None, _event(pick("p1", 0)), ms(0))
    assert out == [] and state is not None
    assert orders.next_deadline(state) == ms(HOLD)
    state, out = orders.expire(state, ms(HOLD) - 1)
    assert out == []
    state, out = orders.expire(state, ms(HOLD))
    assert [m.body["code"] for m in out] == ["UNKNOWN_ORDER"]
    assert orders.next_deadline(state) is None


def test_rule3_new_version_after_order_picked_with_nothing_picked_keeps_the_order_ended() -> None:
    state, _ = orders.apply(None, _event(release("r1")), ms(0))
    state, out = orders.apply(state, _event(short("s1", 1)), ms(1))
    assert [(m.type, m.body["short"]) for m in out] == [("OrderPicked", True)]
    state, out = orders.apply(state, _event(change("c1", 2, [L(3, "B", 4)])), ms(2))
    assert [(m.type, m.body["version"]) for m in out] == [("OrderAccepted", 2)]
    assert state is not None
    record = state.to_record()
    # the new version's lines, nothing picked or short-closed; still open, picking not
    # started (the ERP may change or cancel again), and still past its one OrderPicked
    assert (record["status"], record["version"], record["lines"]) == ("open", 2, [[3, "B", 4, 0, 0, False]])
    assert (record["started"], record["picked_done"], record["packed_done"]) == (False, True, False)
    assert (record["package_ids"], record["pick_ev"], record["pack_ev"]) == ([], [], [])


def test_orders_apply_return_for_unknown_order_keeps_no_state() -> None:
    state, out = orders.apply(None, _event(ret("t1", 0)), ms(0))
    assert state is None and [m.body["code"] for m in out] == ["RETURN_NOT_SHIPPED"]


def test_order_state_round_trips_through_plain_data() -> None:
    state, _ = orders.apply(None, _event(dispatch("d1", 1)), ms(1))
    state, _ = orders.apply(state, _event(pick("p1", 0)), ms(1))
    state, _ = orders.apply(state, _event(release("r1", 2, lines=[L(1, "A", 2), L(2, "B", 1)])), ms(2))
    assert state is not None
    record = state.to_record()
    assert orjson.loads(orjson.dumps(record)) == record
    assert OrderState.from_record(orjson.loads(orjson.dumps(record))) == state


def test_windows_add_and_close_without_the_engine() -> None:
    windows = Windows(300_000, 60_000)
    assert windows.add(_event(stock("s1", 10, 4)), ms(10)) == []
    assert windows.next_close == ms(360)
    assert windows.close(ms(359)) == []
    (m,) = windows.close(ms(360))
    assert (m.body["net_delta"], m.occurred_at) == (4, ms(300))
    assert windows.store == {}


def test_dedup_prunes_by_bucket_without_losing_exactness() -> None:
    dedup = Dedup(retention_ms=1000 * 60 * 10)
    assert dedup.first("wms\x1fa", 0, None)
    assert not dedup.first("wms\x1fa", 0, 599_999)
    assert dedup.first("wms\x1fa", 0, 600_000)  # expired: processed again, base moves on
    dedup.prune(10**9)
    assert len(dedup) == 0 and dedup.next_prune == float("inf")


# -- engine state is plain data that a worker can supply ------------------------------------


def _stream() -> list[dict[str, Any]]:
    return [
        pick("p0", 0, order="O2", qty=1), release("r1", 1, lines=[L(1, "A", 2), L(2, "B", 1)]),
        stock("s1", 2, 5), pick("p1", 3, qty=2), dispatch("d1", 4), scan("x1", 5),
        pick("p2", 6, line=2, sku="B"), stock("s2", 400, -1), pack("k1", 500, items=[(1, 2), (2, 1)]),
        ret("t1", 600), scan("x2", 2000), release("r2", 2100, order="O2"),
    ]


@pytest.mark.parametrize("cut", range(len(_stream()) + 1))
def test_engine_restored_from_plain_records_gives_the_same_output(cut: int) -> None:
    stream = [orjson.dumps(d) for d in _stream()]
    whole = run(stream)

    first = Engine()
    out = run(stream[:cut], finish=False, engine=first)
    snapshot = orjson.loads(orjson.dumps({
        "orders": [[list(k), s.to_record()] for k, s in first.orders.items()],
        "windows": [[list(k), [[s, w] for s, w in v.items()]] for k, v in first.windows.store.items()],
        "seen": [[k, b] for k, b in first.seen.store.items()],
        "rejected": sorted(first.rejected),
        "returns": [[list(k), v] for k, v in first.returns.items()],
        "watermark": first.watermark,
    }))
    second = Engine(
        CoreSettings(),
        orders={tuple(k): OrderState.from_record(r) for k, r in snapshot["orders"]},
        windows={tuple(k): {s: w for s, w in v} for k, v in snapshot["windows"]},
        seen=dict(snapshot["seen"]),
        rejected=set(snapshot["rejected"]),
        returns={tuple(k): v for k, v in snapshot["returns"]},
        watermark=snapshot["watermark"],
    )
    out += run(stream[cut:], engine=second)
    assert out == whole
