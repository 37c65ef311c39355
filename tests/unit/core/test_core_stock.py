"""The inventory stage (StockAdjusted re-keyed across input partitions) and the
partitioned replay that models the worker's two stages."""
from __future__ import annotations

from typing import Any

import orjson
import pytest
from core_support import ms, scan, stock

from app.commands.replay import PartitionedReplay, replay_partitions
from app.core import Engine, ids
from app.core.keys import event_key
from app.core.model import CoreSettings, Event, Milestone, StockForward
from app.core.stock import InventoryStage, Mark, apply_record, encode_forward, encode_mark
from app.kafka.clients import partition_for
from app.simulator import Simulation, preset

MIN = 60.0  # seconds
S = CoreSettings()  # 5 min windows, 1 min grace


def _ev(eid: str, t: float, delta: int, sku: str = "A") -> Event:
    return Event(eid, "StockAdjusted", "wms", ms(t), "W1", None, {"sku": sku, "location": "L1", "delta": delta})


def _summary(out: list[Milestone]) -> list[tuple[Any, ...]]:
    return [
        (m.body.get("code") or m.type, m.body.get("net_delta"), m.body.get("event_count"), m.body.get("detail"))
        for m in out
    ]


# (step, expected outputs) with two input partitions; steps: ("f", source, offset, eid, t, delta)
# is a forward stamped with its own time, ("m", source, offset, watermark_t, idle) a mark.
CASES: dict[str, list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]] = {
    "a window waits for every input partition": [
        (("f", 0, 0, "e1", 10, 5), []),
        (("m", 0, 0, 7 * MIN, False), []),  # partition 0 is past end + grace, 1 is unheard of
        (("m", 1, 3, 5 * MIN, False), []),  # partition 1 is not past it yet
        (("m", 1, 4, 6 * MIN, False), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "an idle partition that never had an event does not hold windows": [
        (("f", 0, 0, "e1", 10, 5), []),
        (("m", 1, -1, None, True), []),
        (("m", 0, 0, 6 * MIN, False), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "an idle partition that had events still counts with its watermark": [
        (("f", 0, 0, "e1", 10, 2), []),
        (("f", 0, 1, "e2", 20, 3), []),
        (("m", 0, 1, 2 * MIN, True), []),
        (("m", 1, 9, 6 * MIN, True), []),  # both idle: the slowest (2 min) holds the window
        (("m", 0, 2, 6 * MIN, False), [("InventoryAdjusted", 5, 2, None)]),
    ],
    "a re-sent forward (offset already seen) counts once": [
        (("f", 0, 5, "e1", 10, 5), []),
        (("f", 0, 5, "e1", 10, 5), []),
        (("f", 0, 4, "e0", 9, 100), []),
        (("m", 0, 5, 6 * MIN, True), []),
        (("m", 1, 0, 6 * MIN, True), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "a window that nets to zero gives nothing": [
        (("f", 0, 0, "e1", 10, 5), []),
        (("f", 1, 0, "e2", 20, -5), []),
        (("m", 0, 0, 6 * MIN, False), []),
        (("m", 1, 0, 6 * MIN, False), []),
    ],
    "an empty partition back from idleness with old events is late, the watermark stays": [
        (("m", 0, 0, 10 * MIN, False), []),
        (("m", 1, -1, None, True), []),  # partition 1 is empty and idle: 10 min counts
        (("f", 1, 1, "e1", 2 * MIN, 4), [("INVALID_EVENT", None, None, "late")]),
        (("m", 1, 1, 2 * MIN, False), []),  # the stage's watermark does not move back
    ],
    "forwards alone move a source's watermark": [
        (("f", 0, 0, "e1", 10, 5), []),
        (("m", 1, -1, None, True), []),
        (("f", 0, 1, "e2", 7 * MIN, 1), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "an idle empty partition listed first does not hold the others": [
        (("f", 1, 0, "e1", 10, 5), []),
        (("m", 0, -1, None, True), []),
        (("f", 1, 1, "e2", 7 * MIN, 1), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "every partition idle and empty closes nothing": [
        (("m", 0, -1, None, True), []),
        (("m", 1, -1, None, True), []),
    ],
    # A fresh topic before the load: every partition reports itself idle and empty. The
    # first partition to start must not close windows before the other is heard from.
    "an idle report made before any partition had an event is not kept": [
        (("m", 0, -1, None, True), []),
        (("m", 1, -1, None, True), []),
        (("f", 0, 0, "e1", 10, 5), []),
        (("m", 0, 0, 20 * MIN, False), []),  # partition 1 still holds the window
        (("f", 1, 0, "e2", 1 * MIN, 4), []),  # on time: counted, not late
        (("m", 1, 0, 20 * MIN, False), [("InventoryAdjusted", 9, 2, None)]),
    ],
    "an idle report repeated once a partition has had an event is kept": [
        (("m", 1, -1, None, True), []),
        (("f", 0, 0, "e1", 10, 5), []),
        (("m", 0, 0, 7 * MIN, False), []),
        (("m", 1, -1, None, True), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "an empty partition's first record, at offset 0, counts": [
        (("m", 1, -1, None, True), []),
        (("f", 1, 0, "e1", 10, 5), []),
        (("m", 0, 0, 7 * MIN, False), []),
        (("m", 1, 0, 7 * MIN, False), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "a partition's watermark is kept when a later mark has none": [
        (("f", 0, 0, "e1", 10, 5), []),
        (("m", 0, 0, 2 * MIN, False), []),
        (("m", 0, 1, None, True), []),
        (("m", 1, 0, 7 * MIN, False), []),  # partition 0 still holds the window at 2 min
        (("m", 0, 3, 6 * MIN, False), [("InventoryAdjusted", 5, 1, None)]),
    ],
    "a partition's watermark does not move back with an older mark": [
        (("f", 0, 0, "e1", 10, 5), []),
        (("m", 0, 1, 6.5 * MIN, False), []),
        (("m", 0, 2, 5.5 * MIN, False), []),
        (("m", 1, 0, 7 * MIN, False), [("InventoryAdjusted", 5, 1, None)]),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_inventory_stage(steps: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]) -> None:
    stage = InventoryStage(S, sources=2)
    for step, expected in steps:
        if step[0] == "f":
            _, source, offset, eid, t, delta = step
            out = stage.forward(source, offset, _ev(eid, t, delta), ms(t))
        else:
            _, source, offset, t, idle = step
            out = stage.mark(Mark(source, offset, None if t is None else ms(t), idle))
        assert _summary(out) == expected, step


def test_stage_records_round_trip_through_the_stock_topic_encoding() -> None:
    direct, encoded = InventoryStage(S, 1), InventoryStage(S, 1)
    ev = _ev("e1", 10, 3)
    assert direct.forward(0, 7, ev, ms(10)) == apply_record(encoded, encode_forward(0, 7, ev, ms(10)))
    mark = Mark(0, 7, ms(7 * MIN), False)
    out = apply_record(encoded, encode_mark(mark))
    assert out == direct.mark(mark) and [m.body["net_delta"] for m in out] == [3]
    assert direct.marks == encoded.marks


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "invalid JSON"), (b"null", "expected a JSON list"), (b"{}", "expected a JSON list"),
    (b"[]", "expected a JSON list"), (b'["m",0]', "not a stock-topic mark"),
    (b'["m",0,5,"x",false]', "not a stock-topic mark"), (b'["m",-1,5,null,false]', "not a stock-topic mark"),
    (b'["m",0,5,null,0]', "not a stock-topic mark"), (b'["x",0,5,null,false]', "a mark"),
    (b'["f",0,1,2,"e","wms",3,"W1",{"sku":"A","delta":1}]', "not a stock-topic forward"),
    (b'["f",0,1,2,"e","wms",3,"W1",{"sku":[1],"location":"L1","delta":1}]', "not a stock-topic forward"),
    (b'["f",0,1,2,"e","wms",3,"W1",{"sku":"A","location":"L1","delta":"1"}]', "not a stock-topic forward"),
    (b'["f",0,1,2,["e"],"wms",3,"W1",{"sku":"A","location":"L1","delta":1}]', "not a stock-topic forward"),
])
def test_a_stock_topic_record_not_written_by_the_governance_stage_is_refused_with_its_reason(
        raw: bytes, reason: str) -> None:
    """The stock topic is internal, but a record of another shape (another producer, an empty
    or truncated value) gives its reason and leaves the stage as it was: it once raised (a
    stopped partition), and a mark with a string watermark was stored and failed every later
    mark of its source."""
    stage = InventoryStage(S, 1)
    apply_record(stage, encode_forward(0, 1, _ev("e1", 10, 3), ms(10)))
    before = (dict(stage.marks), stage.watermark, repr(sorted(stage.windows.store.items())))
    out = apply_record(stage, raw)
    assert isinstance(out, str) and reason in out
    assert (dict(stage.marks), stage.watermark, repr(sorted(stage.windows.store.items()))) == before
    good = apply_record(stage, encode_mark(Mark(0, 2, ms(7 * MIN), False)))
    assert [m.body["net_delta"] for m in good] == [3]  # the stage goes on


def test_stage_restored_from_its_stores_goes_on_where_it_stopped() -> None:
    first = InventoryStage(S, 1)
    first.forward(0, 5, _ev("e1", 10, 5), ms(10))
    first.mark(Mark(0, 6, ms(5.5 * MIN), False))
    second = InventoryStage(S, 1, store=first.windows.store, marks=first.marks, watermark=first.watermark)
    assert second.forward(0, 5, _ev("e1", 10, 5), ms(10)) == []  # already counted
    late = second.forward(0, 7, _ev("e0", 10, 1, sku="B"), ms(5.5 * MIN))  # its window closes at 6 min
    assert _summary(late) == []
    old = second.forward(0, 8, _ev("e9", -MIN, 1, sku="C"), ms(5.5 * MIN))  # window [-5, 0) closed at 1 min
    assert _summary(old) == [("INVALID_EVENT", None, None, "late")]
    assert _summary(second.mark(Mark(0, 9, ms(6 * MIN), False))) == [
        ("InventoryAdjusted", 5, 1, None), ("InventoryAdjusted", 1, 1, None)]


def test_stage_restored_watermark_does_not_move_back() -> None:
    first = InventoryStage(S, 2)
    first.mark(Mark(0, 3, ms(10 * MIN), False))
    first.mark(Mark(1, -1, None, True))
    assert first.watermark == ms(10 * MIN)
    second = InventoryStage(S, 2, store=first.windows.store, marks=first.marks, watermark=first.watermark)
    # partition 1 comes back from idleness with an event of 1 min (its window closed at 6 min)
    assert _summary(second.forward(1, 0, _ev("e1", 1 * MIN, 4), ms(2 * MIN))) == [("INVALID_EVENT", None, None, "late")]
    assert second.watermark == ms(10 * MIN)


def test_stage_finish_closes_every_open_window() -> None:
    stage = InventoryStage(S, 2)
    stage.forward(0, 0, _ev("e1", 10, 5), ms(10))
    stage.forward(1, 0, _ev("e2", 20 * MIN, 2, sku="B"), ms(20 * MIN))
    assert _summary(stage.finish()) == [("InventoryAdjusted", 5, 1, None), ("InventoryAdjusted", 2, 1, None)]


def test_stock_topic_records_keep_idle_marks_and_the_forward_identity() -> None:
    stage = InventoryStage(S, 2)
    assert apply_record(stage, encode_forward(0, 0, _ev("e1", 10, 5), ms(10))) == []
    assert stage.watermark is None  # partition 1 is not heard from yet
    assert apply_record(stage, encode_mark(Mark(1, -1, None, True))) == []
    assert stage.marks[1] == [None, -1, True]
    assert stage.watermark == ms(10)  # the forward's stamp counts (partition 1 is idle)
    closed, late = apply_record(stage, encode_forward(0, 1, _ev("e2", 10, 1), ms(7 * MIN)))
    assert (closed.type, closed.body["net_delta"]) == ("InventoryAdjusted", 5)
    assert late.milestone_id == ids.record_exception_id("wms", "e2") and late.body["detail"] == "late"


def test_engine_forwards_on_time_stock_and_rejects_late_stock() -> None:
    engine = Engine(S, forward_stock=True)
    assert engine.process(orjson.dumps(scan("s1", 10 * MIN))) == []
    on_time = engine.process(orjson.dumps(stock("a1", 9.5 * MIN, 4)))
    assert [o.__class__ for o in on_time] == [StockForward]
    assert on_time[0].watermark == ms(10 * MIN) and on_time[0].event.data["delta"] == 4  # type: ignore[union-attr]
    late = engine.process(orjson.dumps(stock("a2", 1 * MIN, 4)))  # window [0, 5) closed at 6 min
    assert [(m.body["code"], m.body["detail"]) for m in late] == [("INVALID_EVENT", "late")]  # type: ignore[union-attr]
    assert engine.windows.store == {}  # nothing counted locally


def _stream(seed: int) -> list[tuple[bytes, bytes]]:
    sim = Simulation(preset("default", orders=60, seed=seed, warehouses=2))
    return [rec for batch in sim.batches(1000) for rec in batch]


def _by_id(out: list[Any]) -> dict[str, dict[str, Any]]:
    return {o.milestone_id: o.to_dict() for o in out if o.__class__ is Milestone}


@pytest.mark.parametrize("seed", [1, 2])
def test_one_partition_gives_exactly_the_single_engine_replay(seed: int) -> None:
    records = [raw for _, raw in _stream(seed)]
    engine = Engine(S)
    single: list[Any] = [o for raw in records for o in engine.process(raw)] + engine.finish()
    assert _by_id(replay_partitions([records], S, finish=True)) == _by_id(single)
    assert any(m["type"] == "InventoryAdjusted" for m in _by_id(single).values())


@pytest.mark.parametrize("partitions", [2, 4])
def test_partitioned_replay_does_not_depend_on_how_partitions_interleave(partitions: int) -> None:
    """The worker's partitions progress at their own pace: any interleaving of their
    records (each partition in order) gives the same milestones."""
    parts: list[list[bytes]] = [[] for _ in range(partitions)]
    for key, raw in _stream(3):
        parts[partition_for(key, partitions)].append(raw)
    assert all(parts), "every partition gets records"
    sequential = replay_partitions(parts, S)
    run = PartitionedReplay(partitions, S)
    interleaved: list[Any] = []
    cursors = [0] * partitions
    while any(c < len(p) for c, p in zip(cursors, parts, strict=False)):
        for p in range(partitions):
            for raw in parts[p][cursors[p] : cursors[p] + 7]:  # round robin, 7 records at a time
                interleaved.extend(run.route(p, run.engines[p].process(raw)))
            cursors[p] += 7
    for p in range(partitions):
        interleaved.extend(run.end_partition(p))
    assert _by_id(interleaved) == _by_id(sequential)
    assert sum(1 for o in sequential if o.__class__ is Milestone and o.type == "InventoryAdjusted") > 0


def test_keys_put_an_orders_events_together() -> None:
    assert event_key({"warehouse_id": "W1", "order_id": "O9", "type": "PickConfirmed"}) == b"W1|O9"
    assert event_key({"warehouse_id": "W1", "type": "StockAdjusted"}) == b"W1"
    assert event_key({"order_id": 7}) == b""  # malformed records still get a key
