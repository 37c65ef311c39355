"""State records: a flushed partition reloads to the same engine, and a batch cut short
by a crash rolls back to the previous commit point (nothing half-applied)."""
from __future__ import annotations

import orjson
import pytest

from app.core import Engine
from app.core.model import CoreSettings, Milestone, StockForward
from app.core.stock import Mark, apply_record, encode_forward, encode_mark
from app.kafka import codec
from tables import lineage
from tables.records import InventoryState, PartitionState, Written, fence_write, record_epoch, take_over_epoch


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


def _ms(mtype: str, at: object) -> lineage.Entry:
    return {"at": at, "kind": "milestone", "id": f"m-{mtype}-{at}", "type": mtype}


@pytest.mark.parametrize(
    ("trail", "new", "expected"),
    [
        # The start in the stored trail, the end in the batch; the start is the first of its type.
        ([_ms("OrderAccepted", 1_000), _ms("OrderAccepted", 2_000)], [_ms("OrderPicked", 7_500)],
         [("release_to_picked", 6.5)]),
        # Both in the same batch; packed -> shipped.
        ([], [_ms("OrderPacked", 10_000), _ms("ShipmentConfirmed", 12_000)], [("packed_to_shipped", 2.0)]),
        # An end without its start, an end without an int time, events and other milestones: no sample.
        ([{"at": 0, "kind": "event", "id": "e", "type": "OrderAccepted"}],
         [_ms("OrderPicked", 5_000), _ms("ShipmentConfirmed", None), _ms("OrderPacked", 1)], []),
        # A start without an int time; an end before its start counts 0.
        ([_ms("OrderAccepted", "x"), _ms("OrderPacked", 9_000)],
         [_ms("OrderPicked", 1_000), _ms("ShipmentConfirmed", 8_000)], [("packed_to_shipped", 0.0)]),
    ],
)
def test_sla_samples_pair_each_end_with_the_first_start(
    trail: list[lineage.Entry], new: list[lineage.Entry], expected: list[tuple[str, float]]
) -> None:
    assert list(lineage.sla_samples(trail, new)) == expected


def test_lineage_is_stored_capped_and_yields_sla_samples() -> None:
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


# -- lazy orders: the worker's load (tables.records.LazyStore) -----------------------------


class Source:
    """A partition's stored records as the worker's stage reads them (``PartitionSource``):
    in key order as RocksDB iterates them, or in reverse (the meta after the orders)."""

    def __init__(self, table: FakeTable, reverse: bool = False) -> None:
        self.table = table
        self.reverse = reverse
        self.lookups = 0

    def records(self) -> list[tuple[bytes, bytes]]:
        return sorted(self.table.items(), reverse=self.reverse)

    def get(self, key: bytes) -> bytes | None:
        self.lookups += 1
        return self.table.get(key)


def lazy(table: FakeTable, reverse: bool = False) -> PartitionState:
    return PartitionState(0, CoreSettings(), None, source=Source(table, reverse))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cut", range(0, 10))
def test_a_lazy_reload_after_each_batch_gives_the_same_outputs(cut: int, reverse: bool) -> None:
    table = FakeTable()
    ps = PartitionState(0, CoreSettings(), None)
    out = run(ps, table, STREAM[:cut], 0, 2)
    reloaded = lazy(table, reverse)
    assert reloaded.offset == (cut - 1 if cut else -1)
    eager = PartitionState(0, CoreSettings(), None, table.items())
    assert reloaded.sizes() == eager.sizes()
    assert dict(reloaded.engine.orders.items()).keys() == dict(eager.engine.orders.items()).keys()
    out += run(reloaded, table, STREAM[cut:], cut, 3)
    assert ids(out) == ids(reference())  # held order B still expires when the watermark moves on


@pytest.mark.parametrize("kept_writes", range(0, 6))
def test_a_lazy_reload_rolls_a_crashed_batch_back_like_the_eager_one(kept_writes: int) -> None:
    table = FakeTable()
    ps = PartitionState(0, CoreSettings(), None)
    first = run(ps, table, STREAM[:4], 0, 4)
    second = []
    for raw in STREAM[4:8]:
        second += ps.process(raw)
    writes = ps.flush(7, table.get)
    table.apply(writes[: min(kept_writes, len(writes) - 1)])
    restarted = lazy(table)
    assert restarted.offset == 3
    # A batch smaller than the crashed one first: keys it wrote (at offset 7) are read as
    # of the load (their replaced value), even after the state has committed past 3.
    again = run(restarted, table, STREAM[4:], 4, 1)
    assert ids(again)[: len(second)] == ids(second)
    assert set(ids(first) + ids(again)) == set(ids(reference()))
    assert len(ids(first) + ids(again)) == len(ids(reference()))


def test_a_lazy_load_decodes_only_pending_orders_and_reads_the_rest_on_use() -> None:
    table = FakeTable()
    ps = PartitionState(0, CoreSettings(), None)
    run(ps, table, STREAM[:4], 0, 4)  # A released and picking, B held (unknown order)
    source = Source(table)
    reloaded = PartitionState(0, CoreSettings(), None, source=source)
    orders = reloaded.engine.orders
    assert source.lookups == 0 and len(orders) == 2
    assert ("WH1", "B") in reloaded.stores["o"]._cache  # held: decoded at load (its hold deadline)
    assert ("WH1", "A") not in reloaded.stores["o"]._cache
    assert orders[("WH1", "A")].status == PartitionState(0, CoreSettings(), None, table.items()).engine.orders[("WH1", "A")].status
    assert source.lookups == 1
    assert orders.get(("WH1", "Z")) is None and ("WH1", "Z") not in orders and source.lookups == 2
    state = orders.pop(("WH1", "A"))
    assert len(orders) == 1 and orders.dirty == {("WH1", "A")}
    orders[("WH1", "A")] = state
    orders[("WH1", "C")] = state
    assert len(orders) == 3 and sorted(orders) == [("WH1", "A"), ("WH1", "B"), ("WH1", "C")]
    del orders[("WH1", "C")]
    with pytest.raises(KeyError):
        del orders[("WH1", "C")]
    assert len(orders) == 2 and orders.pop(("WH1", "C"), "gone") == "gone"
    assert ("WH1", "C") in orders.dirty


def test_pending_and_presence_are_read_from_the_records_bytes_as_the_decoder_would() -> None:
    from app.core.orders import next_deadline
    from tables.records import committed_present, maybe_pending

    table = FakeTable()
    ps = PartitionState(0, CoreSettings(), None)
    run(ps, table, STREAM, 0, 1)
    orders = {k: v for k, v in table.items() if b"\x1fo\x1f" in k}
    assert orders
    for raw in orders.values():
        rec = orjson.loads(raw)
        for offset in (-1, rec["o"] - 1, rec["o"], rec["o"] + 1):
            assert committed_present(raw, offset) == ((rec["v"] if rec["o"] <= offset else rec["p"]) is not None)
    held = ev(3, "PickConfirmed", order_id="B", line_no=1, sku="S9", qty=1, location="L9")
    only = PartitionState(0, CoreSettings(), None)
    only.process(held)
    (raw,) = [v for k, v in only.flush(0, lambda k: None) if b"\x1fo\x1f" in k]
    assert maybe_pending(raw) and next_deadline(only.engine.orders[("WH1", "B")]) is not None
    done = orjson.dumps({"o": 1, "v": {"held": [], "waiting": []}, "p": {"held": [], "waiting": []}, "e": 0})
    assert not maybe_pending(done)
    assert maybe_pending(b'{"o":1,"v":{"held" : [[1,{}]],"waiting":[]},"p":null}')  # any other spelling: decoded
    assert not committed_present(b'{"o":1,"v":null,"p":{"x":1}}', 1)
    assert committed_present(b'{"o":2,"v":null,"p":{"x":1}}', 1)
    assert committed_present(b'{"p":null,"v":{"x":1},"o":1}', 1)  # not as keyed_writes writes it: decoded


def test_a_lazy_key_is_read_as_of_the_load_offset_whatever_was_committed_since() -> None:
    from tables.records import RETURNS, LazyStore, table_key

    stored = {table_key(0, RETURNS, ["WH1", "R1", "S1"]): orjson.dumps({"o": 7, "v": 70, "p": 30, "e": 0})}
    store = LazyStore(0, RETURNS, 3, stored.get, lambda: stored.items(), count=1)
    # loaded at offset 3; the record is of an unfinished batch (7): its replaced value counts,
    # also after this state has flushed past 7 without touching the key
    assert store[("WH1", "R1", "S1")] == 30
    assert list(store) == [("WH1", "R1", "S1")] and len(store) == 1


# -- prior values from the flushes' own writes (``Written``) -------------------------------


def simulated(orders: int = 40) -> list[bytes]:
    """A default-mix stream of one warehouse (orders touched over many batches)."""
    from app.simulator.generate import Simulation
    from app.simulator.model import DEFAULT_FAULTS, SimConfig

    config = SimConfig(seed=3, orders=orders, warehouses=1, start="2026-11-27T08:00:00.000Z", faults=DEFAULT_FAULTS)
    return [raw for batch in Simulation(config, on_truth=lambda m: None).batches() for _, raw in batch]


def flushed(ps: PartitionState | InventoryState, table: FakeTable, records: list[bytes], batch: int,
            apply: object) -> list[list]:
    """Every flush's writes, batch by batch (the table updated after each)."""
    flushes = []
    for start in range(0, len(records), batch):
        for raw in records[start : start + batch]:
            apply(ps, raw)  # type: ignore[operator]
        writes = ps.flush(start + min(batch, len(records) - start) - 1, table.get)
        table.apply(writes)
        flushes.append([writes, getattr(ps, "sla", None)])
    return flushes


@pytest.mark.parametrize("limit", [3, 20_000])
@pytest.mark.parametrize("batch", [1, 2, 7, 50])
def test_prior_values_from_the_flushes_own_writes_are_the_stored_ones(batch: int, limit: int) -> None:
    """A flush takes a key's prior value, and an order's trail, from what this state last
    wrote for it instead of reading the stored record: the records (lineage trails among
    them) and the SLA samples are byte for byte those of a state that reads every prior
    value and trail from the table (limit 0), also when keys are forgotten past the limit."""
    records = STREAM + simulated()

    def process(ps: PartitionState, raw: bytes) -> None:
        """As the governance stage: the event's and its milestones' lineage entries noted."""
        decoded = codec.decode_input(raw)
        if isinstance(decoded, dict):
            ps.note(lineage.decoded_entry(decoded))
        for out in ps.process(raw):
            if isinstance(out, Milestone):
                ps.note(lineage.milestone_entry(out))

    reading = PartitionState(0, CoreSettings(), None)
    reading.written.limit = reading.trails.limit = 0
    cached = PartitionState(0, CoreSettings(), None)
    cached.written.limit = cached.trails.limit = limit
    read_table, cached_table = FakeTable(), FakeTable()
    expected = flushed(reading, read_table, records, batch, process)
    writes = [value or b"" for flush, _ in expected for _, value in flush]
    assert sum(1 for value in writes if b'"p":{' in value) > 10  # prior values
    assert sum(1 for value in writes if value.startswith(b'[{"at":')) > 10  # lineage trails
    assert sum(len(sla) for _, sla in expected) > 10
    assert flushed(cached, cached_table, records, batch, process) == expected
    assert len(reading.written) == 0 and 0 < len(cached.written) <= limit
    assert len(reading.trails) == 0 and 0 < len(cached.trails) <= limit
    assert cached_table == read_table


@pytest.mark.parametrize("batch", [1, 3, 100])
def test_inventory_prior_values_from_its_own_writes_are_the_stored_ones(batch: int) -> None:
    recs = stock_records()

    def apply(st: InventoryState, raw: bytes) -> None:
        apply_record(st.stage, raw)

    reading = InventoryState(0, CoreSettings(), 2)
    reading.written.limit = 0
    expected = flushed(reading, FakeTable(), recs, batch, apply)
    assert flushed(InventoryState(0, CoreSettings(), 2), FakeTable(), recs, batch, apply) == expected


def test_written_forgets_the_keys_written_longest_ago() -> None:
    written = Written(limit=2)
    for key in (b"a", b"b", b"c"):
        written.put(key, key.upper())
    assert (written.get(b"a"), written.get(b"b"), written.get(b"c")) == (None, b"B", b"C")
    written.put(b"b", b"B2")  # written again: now the latest
    written.put(b"d", b"D")
    assert (written.get(b"b"), written.get(b"c"), written.get(b"d"), len(written)) == (b"B2", None, b"D", 2)



@pytest.mark.parametrize(("generation", "stored", "epoch"), [
    (3, [], 3),                      # nothing stored: the generation
    (3, [None, None], 3),            # partitions never fenced
    (7, [fence_write(0, 5)[1]], 7),  # the generation is above the stored fence: it, as always
    (1, [fence_write(0, 5)[1]], 6),  # the group started again at 1: above the stored fence
    (5, [fence_write(0, 5)[1]], 6),  # equal is not above
    (2, [fence_write(0, 4)[1], None, fence_write(1, 9)[1]], 10),  # above every partition's
])
def test_a_take_over_epoch_is_above_every_stored_fence(generation: int, stored: list[bytes | None], epoch: int) -> None:
    assert take_over_epoch(generation, stored) == epoch


def _epoch_by_decoding(value: bytes | None) -> int | None:
    """``record_epoch`` as it was: decode the record, read its top-level ``e``."""
    if not value or value[:1] != b"{":
        return None
    try:
        epoch = orjson.loads(value).get("e")
    except orjson.JSONDecodeError:
        return None
    return epoch if isinstance(epoch, int) else None


def test_the_epoch_read_from_a_records_tail_is_the_decoded_one() -> None:
    import random

    fixed = [
        b"", b"[]", b"{}", b'{"e":3}', b'{"e":-2}', b'{"e":0}', b'{"e":007}', b'{"e":true}', b'{"e":1.0}', b'{"e":1e3}',
        b'{"o":1,"v":{"e":3},"p":null}', b'{"o":1,"v":null,"p":null,"e":12}', b'{"k,\\"e":5}',
        b'{"k":",\\"e\\":5}"}', b'{"a":"x,","e":5}', b'{"\\u0065":4}', b'{"e":4,"x":1}', b'{"e" : 4}',
        b'{"e":99999999999999999999999}', b'{"e":5} ', b"{broken", b'{"e":5', fence_write(1, 7)[1],
    ]
    rng = random.Random(17)
    atoms: list[object] = [None, True, 0, -1, 42, 1.5, "", "e", '"e":1}', ',"e":2}', "x\\", "\u00e9"]

    def value(depth: int) -> object:
        roll = rng.random()
        if depth > 2 or roll < 0.4:
            return rng.choice(atoms)
        if roll < 0.6:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        keys = ["e", "o", "v", "p", "k,", '"e', "e\\"]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 4))}

    generated = [orjson.dumps(value(0)) for _ in range(3000)]
    for raw in fixed + generated:
        assert record_epoch(raw) == _epoch_by_decoding(raw), raw


@pytest.mark.parametrize(("offset", "epoch"), [(0, 0), (41, 3), (2**40, 2**31 - 1), (-1, 0)])
def test_a_keyed_record_is_the_bytes_orjson_writes_for_its_dict(offset: int, epoch: int) -> None:
    """``keyed_writes`` joins each record from bytes: the same bytes as ``orjson.dumps`` of
    ``{"o", "v", "p", "e"}`` with the value and the prior value as fragments, for a new key
    (prior null), a key read back from its stored record, one from ``written``, a deletion."""
    from tables.records import Tracked, keyed_writes, table_key

    store: Tracked[tuple[str, ...]] = Tracked()
    store[("WH-1", "R-1")] = 5
    store[("WH-1", "R-2")] = [1, "x"]
    store[("WH-1", "R-3")] = {"a": None}
    store[("WH-1", "R-4")] = 1
    del store[("WH-1", "R-4")]
    stored = {table_key(2, "returns", ["WH-1", "R-2"]): orjson.dumps({"o": 1, "v": [0], "p": None, "e": 0})}
    written: Written[bytes] = Written()
    written.put(table_key(2, "returns", ["WH-1", "R-3"]), b'{"b":2}')
    got = dict(keyed_writes(2, "returns", store, offset, 5, stored.get, epoch, written))
    priors = {"R-1": None, "R-2": [0], "R-3": {"b": 2}, "R-4": None}
    values = {"R-1": 5, "R-2": [1, "x"], "R-3": {"a": None}, "R-4": None}
    assert got == {
        table_key(2, "returns", ["WH-1", r]): orjson.dumps({"o": offset, "v": orjson.Fragment(orjson.dumps(values[r])),
                                                            "p": orjson.Fragment(orjson.dumps(priors[r])), "e": epoch})
        for r in ("R-1", "R-2", "R-3", "R-4")
    }
