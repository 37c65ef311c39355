"""Unit tests of the core's building blocks: time, ids, records, parsing, state, stores."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from core_support import (
    DROP,
    HOLD,
    L,
    cancel,
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
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import ids, orders
from app.core.dedup import Dedup
from app.core.engine import Engine
from app.core.inventory import Windows
from app.core.model import AUTHORITY, SOURCES, CoreSettings, Milestone
from app.core.orders import OrderState
from app.core.parse import (
    MAX_LIST,
    MAX_RECORD_BYTES,
    MAX_STRING,
    SPECS,
    check,
    decode,
    identity,
    validate,
)
from app.core.timeutil import MAX_MS, MIN_MS, format_ts, parse_ts

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


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> None:
        return None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(MAX_MS + 1, f"timestamp {MAX_MS + 1} ms is out of range", id="int-out-of-range"),
        pytest.param(datetime(2026, 11, 27), "naive datetime has no UTC offset", id="naive-datetime"),
        pytest.param(datetime(2026, 11, 27, tzinfo=_NoOffset()), "naive datetime has no UTC offset",
                     id="datetime-whose-tzinfo-has-no-offset"),
        pytest.param(1.5, "not a timestamp: float", id="float"),
        pytest.param("x" * 50, f"not an ISO-8601 timestamp: {'x' * 40!r}", id="not-iso"),
        pytest.param("2026-11-27T10:00:00.000" + "0" * 30,
                     f"ISO-8601 timestamp without UTC offset: {('2026-11-27T10:00:00.000' + '0' * 30)[:40]!r}",
                     id="no-offset"),
    ],
)
def test_parse_ts_error_messages(value: Any, message: str) -> None:
    """They reach the rule-8 reason ``field 'occurred_at' is not a valid timestamp: ...``."""
    with pytest.raises(ValueError) as exc:
        parse_ts(value)
    assert str(exc.value) == message


def test_parse_ts_range_is_inclusive_and_datetimes_floor_to_int_ms() -> None:
    assert (parse_ts(MIN_MS), parse_ts(MAX_MS)) == (MIN_MS, MAX_MS)
    got = parse_ts(datetime(2026, 11, 27, 10, 0, 0, 999, tzinfo=UTC))
    assert got == 1795773600000 and got.__class__ is int


def test_every_millisecond_of_a_minute_formats_and_parses_through_the_tables() -> None:
    """The "SS.mmmZ" tables (built once, shared by format_ts and parse_ts's fast path) hold
    what formatting each millisecond gives, and parse back to it."""
    base = 1795773600000
    for rest in range(60_000):
        text = format_ts(base + rest)
        assert text == f"2026-11-27T10:00:{rest // 1000:02d}.{rest % 1000:03d}Z"
        assert parse_ts(text) == base + rest
    assert parse_ts("2026-11-27T10:00:59.999Z") == base + 59_999 and parse_ts("2026-11-27T10:01:00.000Z") == base + 60_000


def _reference_ts(text: str) -> int:
    """parse_ts of a string by ``datetime`` alone (no tables, no cached minute)."""
    dt = datetime.fromisoformat(text)
    if dt.utcoffset() is None:
        raise ValueError("naive")
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@settings(max_examples=400)
@given(st.integers(min_value=MIN_MS, max_value=MAX_MS - 60_000), st.lists(
    st.tuples(st.integers(min_value=0, max_value=27),
              st.sampled_from(["0", "5", "6", "9", "/", ":", ".", "Z", "z", "+", "٣", "０", "\x00", "", "00"])),
    max_size=3))
def test_parse_ts_of_the_last_minute_is_the_datetime_reading(t: int, edits: list[tuple[int, str]]) -> None:
    """The cached minute's fast path (prefix compare and five digits) accepts what the
    tables and ``datetime`` accept, with the same value: a canonical timestamp of the minute
    just parsed, edited anywhere (digits out of range, separators, non-ASCII digits, a
    character more or less), parses as ``datetime.fromisoformat`` reads it, or is refused."""
    text = format_ts(t)
    assert parse_ts(text) == t and parse_ts(text) == t  # the second: the minute is cached
    chars = list(text)
    for at, ch in edits:
        chars[min(at, len(chars) - 1)] = ch
    edited = "".join(chars)
    try:
        expected: int | None = _reference_ts(edited)
    except ValueError:
        expected = None
    try:
        got: int | None = parse_ts(edited)
    except ValueError:
        got = None
    assert got == expected, edited


def test_parse_ts_cached_minute_starts_as_no_prefix() -> None:
    """Before any canonical timestamp the cached minute matches no string (its text is longer
    than any timestamp): a 24-character string of the right shape but no date is refused."""
    from app.core import timeutil

    saved = timeutil._LAST.last
    try:
        timeutil._LAST.last = ("\x00" * 25, 0)
        with pytest.raises(ValueError):
            parse_ts("\x00" * 17 + "00.000Z")
        assert parse_ts("2026-11-27T10:00:01.002Z") == 1795773601002
        assert timeutil._LAST.last == ("2026-11-27T10:00:", 1795773600000)
        assert parse_ts("2026-11-27T10:00:59.999Z") == 1795773659999
    finally:
        timeutil._LAST.last = saved


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


def test_milestone_body_defaults_to_empty_and_a_null_time_round_trips() -> None:
    assert Milestone("m1", "OrderPicked", "W1", None, ()).body == {}
    (junk, _) = Engine().process(b"junk")
    assert junk.occurred_at is None and Milestone.from_dict(junk.to_dict()) == junk


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


# -- exact rule-8 reasons (the dead-letter reason and the INVALID_EVENT detail) ----------------

LONG = "x" * (MAX_STRING + 1)
EDGE = "x" * MAX_STRING


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        pytest.param({**scan("s", 0), "type": None}, "missing field 'type'", id="type-missing"),
        pytest.param({**scan("s", 0), "type": "T" * 50},
                     f"field 'type' must be one of {', '.join(sorted(SPECS))}, got {'T' * 40!r}", id="type-cut-at-40"),
        pytest.param({**scan("s", 0), "source": None}, "missing field 'source'", id="source-missing"),
        pytest.param({**release("r"), "lines": "x"}, "field 'lines' must be a list, got str", id="lines-str"),
        pytest.param({**release("r"), "lines": None}, "missing field 'lines'", id="lines-missing"),
        pytest.param({**release("r"), "lines": [L(1, "", 1)]}, "field 'lines[0].sku' must be a non-empty string",
                     id="line-sku-empty"),
        pytest.param({**release("r"), "lines": [L(1, 5, 1)]}, "field 'lines[0].sku' must be a non-empty string",
                     id="line-sku-int"),
        pytest.param({**release("r"), "lines": [L(1, LONG, 1)]},
                     f"field 'lines[0].sku' is longer than {MAX_STRING} characters", id="line-sku-long"),
        pytest.param({**release("r"), "lines": [L(1, "A", 1), L(1, "B", 1)]},
                     "field 'lines' has a duplicate line_no 1", id="duplicate-line"),
        pytest.param({**release("r"), "lines": [L(1, "A", 1)] * (MAX_LIST + 1)},
                     f"field 'lines' has more than {MAX_LIST} entries", id="lines-too-many"),
        pytest.param(dispatch("d", 0, package_ids=None), "missing field 'package_ids'", id="package-ids-missing"),
        pytest.param(dispatch("d", 0, package_ids=[LONG]),
                     f"field 'package_ids[0]' must be a non-empty string of at most {MAX_STRING} characters",
                     id="package-id-long"),
        pytest.param(ret("t", 0, qty=0), "field 'qty' must be > 0, got 0", id="return-qty"),
        pytest.param(ret("t", 0, disposition=None), "missing field 'disposition'", id="disposition-missing"),
        pytest.param(ret("t", 0, disposition="resell"), "field 'disposition' must be one of inspect, restock, scrap",
                     id="disposition-bad"),
        pytest.param(pick("p", 0, line=-2**31 - 1), f"field 'line_no' is out of range: {-2**31 - 1}",
                     id="int32-low"),
        pytest.param(stock("s", 0, 2**63), f"field 'delta' is out of range: {2**63}", id="int64"),
        pytest.param({**scan("s", 0), "event_id": LONG}, f"field 'event_id' is longer than {MAX_STRING} characters",
                     id="event-id-long"),
        pytest.param({**scan("s", 0), "warehouse_id": LONG},
                     f"field 'warehouse_id' is longer than {MAX_STRING} characters", id="warehouse-long"),
        pytest.param({**scan("s", 0), "barcode": LONG}, f"field 'barcode' is longer than {MAX_STRING} characters",
                     id="required-string-long"),
        pytest.param({**scan(EDGE, 0), "source": None}, "missing field 'source'",
                     id="event-id-at-the-limit-then-a-bad-common-field"),
        pytest.param(scan("s", 0, warehouse_id=EDGE, barcode=DROP), "missing field 'barcode'",
                     id="warehouse-id-at-the-limit-then-a-missing-type-field"),
        pytest.param({**release("r"), "wave_id": LONG},
                     f"field 'wave_id' must be a string of at most {MAX_STRING} characters, or null", id="optional-long"),
    ],
)
def test_rule8_exact_reasons(record: dict[str, Any], reason: str) -> None:
    assert validate(record) == reason


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({**scan(EDGE, 0), "warehouse_id": EDGE, "barcode": EDGE, "tote_id": EDGE}, id="telemetry"),
        pytest.param({**release(EDGE, lines=[L(0, EDGE, 2**31 - 1)]), "warehouse_id": EDGE, "order_id": EDGE,
                      "wave_id": EDGE}, id="release"),
        pytest.param(release("r", lines=[L(n, "A", 1) for n in range(MAX_LIST)]), id="lines-at-the-limit"),
        pytest.param(pick("p", 0, line=-2**31, qty=2**31 - 1), id="pick-int32-bounds-and-any-line-no"),
        pytest.param(short("s", 0, line=0), id="short-close-line-0"),
        pytest.param(pack("k", 0, items=[(-1, 1)], weight_kg=0), id="pack-line-minus-1-weight-0"),
        pytest.param(dispatch("d", 0, package_ids=[EDGE]), id="package-id-at-the-limit"),
        pytest.param(stock("s", 0, -2**63), id="delta-int64-low"),
        pytest.param(stock("s", 0, 2**63 - 1), id="delta-int64-high"),
        pytest.param({**release("r"), "lines": [MappingProxyType(L(1, "A", 1))]}, id="line-as-a-mapping"),
    ],
)
def test_rule8_values_at_the_limits_are_valid(record: dict[str, Any]) -> None:
    assert not isinstance(validate(record), str), validate(record)


def test_rule8_record_at_the_size_limit_is_decoded() -> None:
    base = orjson.dumps(scan("s1", 0, pad=""))
    raw = orjson.dumps(scan("s1", 0, pad="x" * (MAX_RECORD_BYTES - len(base))))
    assert len(raw) == MAX_RECORD_BYTES and isinstance(decode(raw), dict)
    assert decode(raw + b" ") == f"too_large: the record is {MAX_RECORD_BYTES + 1} bytes, the limit is {MAX_RECORD_BYTES}"
    assert decode(b"[1]") == "undecodable: JSON value is list, expected an object"


def test_validate_keeps_optional_fields_and_the_order_id_apart() -> None:
    rel = validate(release("r1", wave_id="WV1", carrier="UPS"))
    assert not isinstance(rel, str) and rel.data == {"lines": ((1, "A", 2),), "wave_id": "WV1", "carrier": "UPS"}
    sc = validate(scan("s1", 0, order_id="O1", tote_id="T1"))
    assert not isinstance(sc, str) and sc.order_id == "O1"
    assert sc.data == {"barcode": "0001", "location": "L1", "device_id": "D1", "tote_id": "T1"}
    st_ev = validate(stock("a1", 0, 1, order_id="O1"))
    assert not isinstance(st_ev, str) and st_ev.order_id is None and "order_id" not in st_ev.data


def test_event_to_record_is_the_contract_shape() -> None:
    ev = validate(release("r1", lines=[L(1, "A", 2), L(2, "B", 1)]))
    assert not isinstance(ev, str)
    assert ev.to_record()["lines"] == [L(1, "A", 2), L(2, "B", 1)]


# -- order state as plain data (what a worker stores) -------------------------------------------


def test_order_state_record_of_a_new_order() -> None:
    assert OrderState().to_record() == {
        "status": "unreleased", "version": 0, "lines": [], "started": False, "picked_done": False,
        "packed_done": False, "shipped": False, "unknown_reported": False, "held": [], "waiting": [],
        "package_ids": [], "pick_ev": [], "pack_ev": [], "seq": 0,
    }
    state, _ = orders.apply(None, _event(pick("p1", 0)), ms(0))
    assert state is not None and state.to_record()["seq"] == 1
    assert OrderState() != object() and OrderState() != {}  # __eq__ with another type


def test_order_state_record_keeps_pack_evidence_and_drops_what_a_finished_order_no_longer_needs() -> None:
    state, _ = orders.apply(None, _event(release("r1")), ms(0))
    state, _ = orders.apply(state, _event(pack("k1", 1, package="P1")), ms(1))
    assert state is not None
    record = state.to_record()
    assert (record["pack_ev"], record["package_ids"]) == ([[2, "k1"]], ["P1"])
    assert OrderState.from_record(record) == state
    empty, _ = orders.apply(state, _event(dispatch("d1", 2)), ms(2))
    empty, _ = orders.apply(empty, _event(short("s1", 3)), ms(3))  # ends at OrderPicked, nothing picked
    assert empty is not None
    record = empty.to_record()
    assert (record["lines"], record["package_ids"], record["pack_ev"], record["waiting"]) == (
        [[1, "A", 2, 0, 2, True]], [], [], [])
    state, _ = orders.apply(None, _event(release("r2")), ms(0))
    state, _ = orders.apply(state, _event(pack("k2", 1)), ms(1))
    state, _ = orders.apply(state, _event(cancel("x2", 2)), ms(2))
    assert state is not None
    record = state.to_record()
    assert (record["status"], record["lines"], record["package_ids"], record["pick_ev"], record["pack_ev"]) == (
        "cancelled", [], [], [], [])


def test_order_state_from_an_invalid_stored_event_names_the_reason() -> None:
    record = OrderState().to_record()
    record["held"] = [[1, {**pick("p1", 0), "occurred_at": ms(0), "qty": 0}]]
    with pytest.raises(ValueError, match=r"^stored event is invalid: field 'qty' must be > 0, got 0$"):
        OrderState.from_record(record)


# -- engine state supplied by a worker is used, not replaced -----------------------------------


def test_engine_uses_the_stores_and_watermark_it_is_given() -> None:
    first = Engine()
    run([*shipped_order(), ret("t1", 10), pick("p9", 11, qty=0)], finish=False, engine=first)
    second = Engine(orders=first.orders, seen=first.seen.store, rejected=first.rejected,
                    returns=first.returns, watermark=first.watermark)
    assert first.returns == {("W1", "R1", "A"): ms(10)}
    out = run([stock("a1", -400, 1), release("O1-r"), pick("p9", 12, qty=0), ret("t2", 13, order="O1")],
              finish=False, engine=second)
    # the restored watermark (11 s) makes a stock from -400 s late, a redelivery is a
    # duplicate, a reported bad record is a dead letter only, the return is not received twice
    assert [(type(o).__name__, getattr(o, "body", {}).get("code")) for o in out] == [
        ("Milestone", "INVALID_EVENT"), ("DeadLetter", None)]
    assert out[0].body["detail"] == "late"


def test_engine_advance_moves_time_without_a_record_and_never_back() -> None:
    engine = Engine()
    run([pick("p1", 0, order="O9"), stock("a1", 600, 2)], finish=False, engine=engine)  # window closes at 16 min
    assert engine.advance(ms(HOLD) - 1) == []
    assert [m.body.get("code") for m in engine.advance(ms(HOLD))] == ["UNKNOWN_ORDER"]
    assert engine.advance(ms(10)) == [] and engine.watermark == ms(HOLD)
    assert [m.type for m in engine.advance(ms(HOLD + 60))] == ["InventoryAdjusted"]


def test_dedup_add_remembers_a_key_from_its_base_time() -> None:
    dedup = Dedup(retention_ms=600_000)
    dedup.add("wms\x1fa", 1_000)
    assert dedup.contains("wms\x1fa", 600_999) and not dedup.contains("wms\x1fa", 601_000)
    assert dedup.next_prune == 60_000 + 600_000
    dedup.prune(660_000)
    assert len(dedup) == 0


def test_engine_counts_every_record_by_type_and_source() -> None:
    engine = Engine()
    run([scan("s1", 0), scan("s2", 1), pick("p1", 2, source="erp")], finish=False, engine=engine)
    assert engine.counts == {("ItemScanned", "wms"): 2, ("PickConfirmed", "erp"): 1}


def test_engine_takes_any_mapping_and_rejects_other_objects() -> None:
    out = Engine().process_event(MappingProxyType(release("r1")))
    assert [m.type for m in out] == ["OrderAccepted"]
    m, letter = Engine().process_event([1, 2], b"[1, 2]")  # type: ignore[arg-type]
    assert m.body["detail"] == letter.reason == "undecodable: record is not an object"
    assert letter.raw == b"[1, 2]"


def test_engine_future_record_is_dead_lettered_with_its_raw_bytes() -> None:
    raw = orjson.dumps(scan("s1", 3600))
    _, letter = Engine(clock=lambda: ms(0)).process(raw)
    assert letter.raw == raw and letter.reason == "future"


def test_engine_canonical_json_of_a_decoded_record_with_odd_values() -> None:
    _, letter = Engine().process_event({"type": "ItemScanned", "x": {1}})
    assert letter.raw == b'{"type":"ItemScanned","x":"{1}"}'
    d = {"type": "ItemScanned", "x": 2**70}
    _, letter = Engine().process_event(d)
    assert letter.raw == repr(d).encode()


def test_engine_unauthorized_event_without_an_order_id_field_names_no_order() -> None:
    (m,) = run([stock("a1", 0, 1, source="erp", order_id="O1")])
    assert m.body == {"code": "SOURCE_NOT_AUTHORIZED", "order_id": None,
                      "detail": "source 'erp' is not authorized for StockAdjusted (allowed: robotics, wms)"}
