"""The generated stream: deterministic, contract-shaped, in event-time order, telemetry-heavy."""
from __future__ import annotations

from collections import Counter

import orjson
import pytest
from sim_support import Run, decode, generate, shape_problems

from app.core.keys import event_key
from app.core.timeutil import parse_ts
from app.simulator import Simulation, preset
from app.simulator.generate import mean_events_per_order
from app.simulator.model import TELEMETRY, Model, SimConfig


def _bytes(run: Run) -> bytes:
    return b"\n".join(raw for _, raw in run.records) + b"\n" + b"\n".join(orjson.dumps(m) for m in run.truth)


def test_same_seed_gives_identical_bytes() -> None:
    a = generate("default", orders=120, seed=3, warehouses=2)
    b = generate("default", orders=120, seed=3, warehouses=2)
    assert _bytes(a) == _bytes(b)
    assert [k for k, _ in a.records] == [k for k, _ in b.records]


def test_other_seed_gives_other_stream() -> None:
    assert _bytes(generate("default", orders=60, seed=1)) != _bytes(generate("default", orders=60, seed=2))


def test_clean_stream_is_all_valid_authorized_events(clean_run: Run) -> None:
    seen: dict[tuple[str, str], bytes] = {}
    for key, raw in clean_run.records:
        d = decode(raw)
        assert d is not None, raw[:80]
        assert shape_problems(d) == [], (d, shape_problems(d))
        assert key == event_key(d)  # order events (and telemetry naming an order) by order
        assert orjson.dumps(d) == raw  # compact JSON, contract field names, stable key order
        ident = (d["source"], d["event_id"])
        # an event_id repeats only as a byte-identical redelivery (a duplicate telemetry read)
        assert seen.setdefault(ident, raw) == raw


def test_clean_stream_arrives_in_event_time_order(clean_run: Run) -> None:
    times = [decode(raw)["occurred_at"] for _, raw in clean_run.records]  # type: ignore[index]
    assert times == sorted(times)
    assert times[0] >= SimConfig().start


def test_every_type_appears_and_telemetry_dominates(clean_run: Run) -> None:
    types = Counter(decode(raw)["type"] for _, raw in clean_run.records)  # type: ignore[index]
    assert set(types) == {
        "OrderReleased", "OrderChanged", "OrderCancelled", "ItemScanned", "ToteConveyed", "PickConfirmed",
        "LineShortClosed", "PackConfirmed", "ShipmentDispatched", "StockAdjusted", "ReturnReceived",
    }
    telemetry = sum(n for t, n in types.items() if t in TELEMETRY)
    assert 0.8 < telemetry / sum(types.values()) < 0.95
    assert 10 <= telemetry / types["PickConfirmed"] <= 30
    assert types["OrderReleased"] == 400


def test_sources_are_realistic(clean_run: Run) -> None:
    by_type: dict[str, set[str]] = {}
    for _, raw in clean_run.records:
        d = decode(raw)
        by_type.setdefault(d["type"], set()).add(d["source"])  # type: ignore[index]
    assert by_type["PickConfirmed"] == {"wms", "robotics"}
    assert by_type["ShipmentDispatched"] == {"wms", "carrier"}
    assert by_type["ItemScanned"] == {"wms", "robotics", "conveyor"}


def test_reversed_relocations_net_to_zero_within_their_window(clean_run: Run) -> None:
    stock = [decode(r) for _, r in clean_run.records if b'"StockAdjusted"' in r]
    backs = [d for d in stock if d["reason"] == "relocation_reversed"]  # type: ignore[index]
    assert backs
    for back in backs:
        t2 = parse_ts(back["occurred_at"])
        outs = [
            d for d in stock
            if (d["sku"], d["location"], d["delta"]) == (back["sku"], back["location"], -back["delta"])
            and parse_ts(d["occurred_at"]) <= t2 and parse_ts(d["occurred_at"]) // 300_000 == t2 // 300_000
        ]
        assert outs, back


def test_records_per_order_matches_the_rate_model(clean_run: Run) -> None:
    per_order = len(clean_run.records) / 400
    assert per_order == pytest.approx(mean_events_per_order(Model()), rel=0.12)


def test_event_time_density_follows_events_per_s() -> None:
    """Orders are released at events_per_s / records-per-order, so the release span scales inversely."""
    spans = []
    for eps in (100.0, 400.0):
        run = generate("clean", orders=200, seed=5, events_per_s=eps)
        releases = [decode(r)["occurred_at"] for _, r in run.records if b'"OrderReleased"' in r]
        spans.append(parse_ts(max(releases)) - parse_ts(min(releases)))
    assert spans[0] / spans[1] == pytest.approx(4.0, rel=0.2)


def test_several_warehouses_share_the_clock() -> None:
    run = generate("clean", orders=90, seed=2, warehouses=3)
    whs = Counter(decode(r)["warehouse_id"] for _, r in run.records)
    assert set(whs) == {"WH1", "WH2", "WH3"}
    orders = {decode(r)["order_id"]: k for k, r in run.records if b'"OrderReleased"' in r}
    assert len(orders) == 90


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        preset("default", duplicate=1.5)
    with pytest.raises(ValueError):
        SimConfig(events_per_s=0)
    with pytest.raises(ValueError):
        preset("clean", duplicate=0.6, malformed=0.6)


@pytest.mark.parametrize(
    "overrides", [{"orders": 1}, {"orders": 50, "events_per_s": 1e6}, {"orders": 5, "events_per_s": 0.5}]
)
def test_tiny_dense_and_sparse_runs(overrides: dict) -> None:
    run = generate("default", seed=8, **overrides)
    releases = [raw for _, raw in run.records if b'"OrderReleased"' in raw]
    assert len(releases) >= overrides["orders"]
    assert sum(1 for m in run.truth if m["type"] == "OrderPicked") <= overrides["orders"]


def test_empty_run() -> None:
    sim = Simulation(preset("default", orders=0))
    assert list(sim.batches()) == []
    assert sim.truth == []
