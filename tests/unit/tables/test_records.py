"""State records: a flushed partition reloads to the same engine, and a batch cut short
by a crash rolls back to the previous commit point (nothing half-applied)."""
from __future__ import annotations

import orjson
import pytest

from app.core import Engine
from app.core.model import CoreSettings, StockForward
from app.core.stock import Mark, apply_record, encode_forward, encode_mark
from tables.records import InventoryState, PartitionState


def ev(i: int, type_: str, **fields: object) -> bytes:
    base = {
        "event_id": f"e{i}",
        "type": type_,
        "occurred_at": f"2026-11-27T10:{i // 60:02d}:{i % 60:02d}.000Z",
        "source": "erp" if type_.startswith("Order") else "wms",
        "warehouse_id": "WH1",
    }
    return orjson.dumps({**base, **fields})


STREAM = [
    ev(0, "OrderReleased", order_id="A", lines=[{"line_no": 1, "sku": "S1", "qty": 3}, {"line_no": 2, "sku": "S2", "qty": 1}]),
    ev(1, "PickConfirmed", order_id="A", line_no=1, sku="S1", qty=2, location="L1"),
    ev(2, "StockAdjusted", sku="S1", location="L1", delta=-2, reason="damage"),
    ev(3, "PickConfirmed", order_id="B", line_no=1, sku="S9", qty=1, location="L9"),  # held: unknown order
    b"{broken",
    ev(5, "PickConfirmed", order_id="A", line_no=1, sku="S1", qty=1, location="L1"),
    ev(6, "PickConfirmed", order_id="A", line_no=2, sku="S2", qty=1, location="L2"),
    ev(7, "PackConfirmed", order_id="A", package_id="P1", items=[{"line_no": 1, "qty": 3}, {"line_no": 2, "qty": 1}]),
    ev(8, "StockAdjusted", sku="S1", location="L1", delta=5, reason="count"),
    ev(1200, "ItemScanned", barcode="X", location="L1", device_id="D"),  # moves the watermark 20 min on
]


def ids(outputs: list) -> list[str]:
    """Milestone ids, dead letters' record ids and forwarded StockAdjusted event ids."""
    return [
        f"forward:{o.event.event_id}" if isinstance(o, StockForward) else getattr(o, "milestone_id", None) or o.record_id
        for o in outputs
    ]


class FakeTable(dict):
    def apply(self, writes: list) -> None:
        for key, value in writes:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def run(ps: PartitionState, table: FakeTable, records: list[bytes], first_offset: int, batch: int) -> list:
    out = []
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        for raw in chunk:
            out += ps.process(raw)
        table.apply(ps.flush(first_offset + start + len(chunk) - 1, table.get))
    return out


def reference() -> list:
    engine = Engine(CoreSettings(), forward_stock=True)  # as in the worker
    out = []
    for raw in STREAM:
        out += engine.process(raw)
    return out


@pytest.mark.parametrize("cut", range(0, 10))
def test_reload_after_each_batch_gives_the_same_outputs(cut: int) -> None:
    table = FakeTable()
    ps = PartitionState(0, CoreSettings(), None)
    out = run(ps, table, STREAM[:cut], 0, 2)
    reloaded = PartitionState(0, CoreSettings(), None, table.items())
    assert reloaded.offset == (cut - 1 if cut else -1)
    out += run(reloaded, table, STREAM[cut:], cut, 3)
    assert ids(out) == ids(reference())


@pytest.mark.parametrize("kept_writes", range(0, 6))
def test_crash_mid_flush_rolls_back_to_the_last_meta(kept_writes: int) -> None:
    table = FakeTable()
    ps = PartitionState(0, CoreSettings(), None)
    first = run(ps, table, STREAM[:4], 0, 4)
    # The next batch is processed and its outputs flushed, but only some state writes land.
    second = []
    for raw in STREAM[4:8]:
        second += ps.process(raw)
    writes = ps.flush(7, table.get)
    assert writes[-1][0].endswith(b"m\x1f[]")  # meta is last
    table.apply(writes[: min(kept_writes, len(writes) - 1)])
    restarted = PartitionState(0, CoreSettings(), None, table.items())
    assert restarted.offset == 3
    # Redelivery from offset 4: the re-emitted milestones carry the same ids.
    again = run(restarted, table, STREAM[4:], 4, 10)
    assert ids(again)[: len(second)] == ids(second)
    assert set(ids(first) + ids(again)) == set(ids(reference()))
    assert len(ids(first) + ids(again)) == len(ids(reference()))


def test_sizes_report_each_store() -> None:
    ps = PartitionState(0, CoreSettings(), None)
    for raw in STREAM:
        ps.process(raw)
    sizes = ps.sizes()
    # Authorized telemetry is not kept for dedup (a duplicate of it can change nothing).
    assert sizes["orders"] == 2 and sizes["dedup_keys"] == 8


def test_lineage_is_stored_capped_and_yields_sla_samples() -> None:
    from tables import lineage

    table = FakeTable()
    ps = PartitionState(0, CoreSettings(), None)
    for offset, raw in enumerate(STREAM):
        if raw.startswith(b"{\""):
            ps.note(lineage.decoded_entry(orjson.loads(raw)))
        for out in ps.process(raw):
            if hasattr(out, "milestone_id"):
                ps.note(lineage.milestone_entry(out))
        table.apply(ps.flush(offset, table.get))
        if offset == 6:  # OrderPicked: release (10:00:00) -> picked (10:00:06)
            assert ps.sla == [("release_to_picked", 6.0)]
    key = next(k for k in table if b"\x1fl\x1f" in k and b'"A"' in k)
    trail = orjson.loads(table[key])
    kinds = [(e["kind"], e["type"]) for e in trail]
    assert kinds[:2] == [("event", "OrderReleased"), ("milestone", "OrderAccepted")]
    assert kinds[-2:] == [("event", "PackConfirmed"), ("milestone", "OrderPacked")] and len(trail) == 8
    # Lineage is not engine state: a reload ignores it.
    assert PartitionState(0, CoreSettings(), None, table.items()).sizes()["orders"] == 2
    scan = {"event_id": "s1", "type": "ItemScanned", "occurred_at": "2026-11-27T10:00:09.000Z", "source": "wms",
            "warehouse_id": "WH1", "order_id": "A", "barcode": "X", "location": "L1", "device_id": "D"}
    assert lineage.decoded_entry(scan) is None  # telemetry is counted, not kept in the trail
    long = lineage.extend([{"n": i} for i in range(lineage.MAX_ENTRIES)], [{"n": "new"}])
    assert len(long) == lineage.MAX_ENTRIES and long[0] == {"n": 0} and long[-1] == {"n": "new"}


def stock_records() -> list[bytes]:
    """What the inventory stage reads: forwards from two input partitions and their marks."""
    engine = Engine(CoreSettings(), forward_stock=True)
    recs = []
    for offset, raw in enumerate(STREAM):
        for out in engine.process(raw):
            if isinstance(out, StockForward):
                recs.append(encode_forward(0, offset, out.event, out.watermark))
        recs.append(encode_mark(Mark(0, offset, engine.watermark)))
    recs.insert(3, encode_mark(Mark(1, -1, None, idle=True)))
    recs.insert(5, recs[2])  # a forward re-sent by a restarted upstream
    return recs


def run_stage(st: InventoryState, table: FakeTable, records: list[bytes], first: int, batch: int) -> list:
    out = []
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        for raw in chunk:
            out += apply_record(st.stage, raw)
        table.apply(st.flush(first + start + len(chunk) - 1, table.get))
    return out


@pytest.mark.parametrize("cut", range(0, 12, 2))
def test_inventory_state_reloads_to_the_same_stage(cut: int) -> None:
    recs = stock_records()
    whole = run_stage(InventoryState(0, CoreSettings(), 2), FakeTable(), recs, 0, 100)
    assert [m.body["net_delta"] for m in whole] == [3]  # -2 and +5 in one window; the re-send ignored
    table = FakeTable()
    out = run_stage(InventoryState(0, CoreSettings(), 2), table, recs[:cut], 0, 3)
    reloaded = InventoryState(0, CoreSettings(), 2, table.items())
    assert reloaded.offset == cut - 1
    out += run_stage(reloaded, table, recs[cut:], cut, 3)
    assert ids(out) == ids(whole)


@pytest.mark.parametrize("kept_writes", range(0, 3))
def test_inventory_state_crash_mid_flush_rolls_back(kept_writes: int) -> None:
    recs = stock_records()
    table = FakeTable()
    st = InventoryState(0, CoreSettings(), 2)
    first = run_stage(st, table, recs[:3], 0, 3)
    for raw in recs[3:8]:
        apply_record(st.stage, raw)
    writes = st.flush(7, table.get)
    table.apply(writes[: min(kept_writes, len(writes) - 1)])  # the meta (last) never lands
    restarted = InventoryState(0, CoreSettings(), 2, table.items())
    assert restarted.offset == 2
    again = run_stage(restarted, table, recs[3:], 3, 4)
    assert [m.body["net_delta"] for m in first + again] == [3]
