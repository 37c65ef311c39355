"""Bad input never stops a partition.

The governance stage: any field of a valid event (or of its first line or item) replaced by
any JSON value or dropped, between two valid records, goes through the stage's whole path
(decode, lineage entry, core, flush) without an exception, the batch commits, and a record the
core rejects (rule 8) is one dead letter carrying its raw bytes. The inventory stage: any
bytes, any JSON or a near-valid forward or mark on the (internal) stock topic likewise."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.engine import FUTURE
from app.core.model import DeadLetter
from app.core.parse import validate
from tests.unit.runtime.test_stage_runner import Emitted, FakeStore, Msg, stage

DROP = object()


def _valid_events() -> list[dict[str, Any]]:
    """Valid events of every business and telemetry type of the simulator's default mix."""
    from app.simulator.generate import Simulation
    from app.simulator.model import DEFAULT_FAULTS, SimConfig

    config = SimConfig(seed=5, orders=60, warehouses=1, start="2026-11-27T08:00:00.000Z", faults=DEFAULT_FAULTS)
    out: dict[str, dict[str, Any]] = {}
    for batch in Simulation(config, on_truth=lambda m: None).batches():
        for _, raw in batch:
            d = orjson.loads(raw)
            if type(d) is dict and not isinstance(validate(d), str):
                out.setdefault(d["type"], d)
    return list(out.values())


EVENTS = _valid_events()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def test_the_fuzzed_events_are_of_every_input_type() -> None:
    from app.core.parse import SPECS

    assert sorted(e["type"] for e in EVENTS) == sorted(SPECS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_field_of_any_json_shape_is_processed_or_dead_lettered_never_a_crash(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(EVENTS))
    name = data.draw(st.sampled_from(sorted(base)))
    value = data.draw(st.just(DROP) | JSON)
    bad = {k: v for k, v in base.items() if k != name}
    entries = base[name]
    if type(entries) is list and entries and type(entries[0]) is dict and data.draw(st.booleans()):
        inner = data.draw(st.sampled_from(sorted(entries[0])))  # a field of a line or an item
        first = {k: v for k, v in entries[0].items() if k != inner}
        if value is not DROP:
            first[inner] = value
        bad[name] = [first, *entries[1:]]
    elif value is not DROP:
        bad[name] = value
    raw = orjson.dumps(bad)
    before = orjson.dumps({**EVENTS[0], "event_id": "fuzz-before"})
    after = orjson.dumps({**EVENTS[0], "event_id": "fuzz-after"})

    async def run() -> None:
        store, emitted = FakeStore(), Emitted()
        s = stage(store, emitted)
        await s.assign({0}, epoch=1)
        await s.process({0: [Msg(0, 0, before), Msg(0, 1, raw), Msg(0, 2, after)]}, {0: 3})
        assert s.committed() == {0: 3}
        dead = [o for o in emitted.outputs if isinstance(o, DeadLetter)]
        if isinstance(validate(bad), str):
            assert len(dead) == 1 and dead[0].raw == raw
        else:  # valid in its fields: only its time can make it a dead letter (too far ahead)
            assert [d.reason for d in dead] in ([], [FUTURE])

    asyncio.run(run())


# -- the inventory stage: any value on the (internal) stock topic -----------------------------

FORWARD = ["f", 0, 1, 1_800_000_000_000, "e1", "wms", 1_800_000_000_000, "W1",
           {"sku": "A", "location": "L1", "reason": "count", "delta": 3}]
MARK = ["m", 0, 2, 1_800_003_600_000, False]


@st.composite
def stock_values(draw: st.DrawFn) -> bytes:
    """Any bytes, any JSON, or a forward or mark of the governance stage's with one element
    (or one of the forward's data fields) replaced by any JSON value."""
    kind = draw(st.sampled_from(["bytes", "json", "near"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "json":
        return orjson.dumps(draw(JSON))
    rec = [*draw(st.sampled_from([FORWARD, MARK]))]
    i = draw(st.integers(0, len(rec) - 1))
    if type(rec[i]) is dict and draw(st.booleans()):
        rec[i] = {**rec[i], draw(st.sampled_from(sorted(rec[i]))): draw(JSON)}
    else:
        rec[i] = draw(JSON)
    return orjson.dumps(rec)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=stock_values())
def test_any_value_on_the_stock_topic_is_applied_or_dead_lettered_never_a_crash(raw: bytes) -> None:
    """A stock-topic record the governance stage did not write between two of its records (a
    forward, then a mark that closes the forward's window): no exception, the batch commits;
    a refused record is one dead letter with its raw bytes and the window closes with the
    forward's delta; an applied one is shaped as the governance stage writes them."""
    from app.core.model import CoreSettings, Milestone
    from app.core.stock import stock_reason
    from app.runtime.statestore import AtLeastOnceWriter
    from app.stages.inventory import InventoryStage

    async def run() -> None:
        store, emitted = FakeStore(), Emitted()
        s = InventoryStage(topic="stock", writer=AtLeastOnceWriter(store, emitted), settings=CoreSettings(),
                           sources=1)
        await s.assign({0}, epoch=1)
        msgs = [Msg(0, 0, orjson.dumps(FORWARD)), Msg(0, 1, raw), Msg(0, 2, orjson.dumps(MARK))]
        await s.process({0: msgs}, {0: 3})
        assert s.committed() == {0: 3}
        dead = [o for o in emitted.outputs if isinstance(o, DeadLetter)]
        if dead:
            assert len(dead) == 1 and dead[0].raw == raw
            adjusted = [o for o in emitted.outputs if isinstance(o, Milestone) and o.type == "InventoryAdjusted"]
            assert [m.body["net_delta"] for m in adjusted] == [3]
        else:
            assert stock_reason(orjson.loads(raw)) == ""

    asyncio.run(run())
