"""Pins what app/runtime/faust_adapter.py relies on in faust-streaming and aiokafka, and
what the fenced restore does: a stalled old owner's late writes never become state."""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass

import faust
import orjson
import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.stores.rocksdb import Store as RocksStore

from app.runtime import faust_adapter
from tables.records import META, ORDERS, fence_key, fence_write, table_key


@dataclass
class _Msg:
    partition: int
    key: bytes
    value: bytes | None
    offset: int

    @property
    def tp(self) -> tuple[str, int]:
        return ("t-changelog", self.partition)


@dataclass
class _Event:
    message: _Msg

    @property
    def key(self) -> bytes:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value


def _table(name: str = "state") -> faust_adapter.FencedTable:
    app = faust.App(f"adapter-test-{name}", store="memory://")
    return faust_adapter.fenced_table(app, name, fence_key, default=None, key_type=bytes, value_type=bytes, partitions=4)


def _rec(offset: int, value: str, epoch: int) -> bytes:
    return orjson.dumps({"o": offset, "v": value, "p": None, "e": epoch})


def _events(records: list[tuple[bytes, bytes | None]], partition: int = 1) -> list[_Event]:
    return [_Event(_Msg(partition, k, v, i)) for i, (k, v) in enumerate(records)]


def test_the_private_names_the_adapter_uses_exist() -> None:
    import faust.streams

    assert hasattr(faust.streams, "_current_event")
    assert hasattr(RocksStore, "_db_for_partition") and hasattr(RocksStore, "_visible_items")
    assert inspect.iscoroutinefunction(GroupCoordinator._on_join_complete)
    # The heartbeat routine renews the session through _do_heartbeat, and recovery and
    # standbys restore through Table.apply_changelog_batch: the probe and the fence hook there.
    assert "await self._do_heartbeat()" in inspect.getsource(GroupCoordinator._heartbeat_routine)
    import faust.tables.recovery

    assert "table.apply_changelog_batch(" in inspect.getsource(faust.tables.recovery)


def test_restore_skips_a_zombies_writes_after_the_new_owners_fence() -> None:
    order = table_key(1, ORDERS, ["WH1", "O-1"])
    meta = table_key(1, META)
    changelog = [
        (order, _rec(10, "picked", 3)),  # the old owner, epoch 3
        (meta, orjson.dumps({"o": 10, "watermark": 1, "seq": 0, "e": 3})),
        fence_write(1, 5),  # the new owner took over at epoch 5
        (order, _rec(11, "packed", 5)),
        (meta, orjson.dumps({"o": 11, "watermark": 2, "seq": 0, "e": 5})),
        (order, _rec(10, "picked-again", 3)),  # the stalled old owner resumes: fenced
        (meta, orjson.dumps({"o": 10, "watermark": 1, "seq": 0, "e": 3})),
    ]
    table = _table()
    table.apply_changelog_batch(_events(changelog[:4]))  # two restore batches: the fence carries over
    table.apply_changelog_batch(_events(changelog[4:]))
    assert orjson.loads(table.data[order])["v"] == "packed"
    assert orjson.loads(table.data[meta])["o"] == 11
    assert table.fenced_records == 2
    assert table.fence_of(1) == 5


def test_writes_of_the_same_or_a_later_epoch_and_other_partitions_are_kept() -> None:
    key = table_key(2, ORDERS, ["WH1", "O-2"])
    table = _table("keep")
    table.apply_changelog_batch(_events([fence_write(2, 4), (key, _rec(1, "a", 4)), (key, _rec(2, "b", 6))], partition=2))
    assert orjson.loads(table.data[key])["v"] == "b"
    other = table_key(3, ORDERS, ["WH1", "O-3"])
    table.apply_changelog_batch(_events([(other, _rec(1, "c", 1))], partition=3))  # no fence on 3
    assert orjson.loads(table.data[other])["v"] == "c"
    trail = table_key(2, "l", ["WH1", "O-2"])
    table.apply_changelog_batch(_events([(trail, b"[]")], partition=2))  # no epoch: an audit trail
    assert table.data[trail] == b"[]"
    assert table.fenced_records == 0


def test_the_heartbeat_probe_reports_answered_heartbeats_and_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [True, False]

    async def heartbeat(self: object) -> bool:
        return answers.pop(0)

    async def join(self: object, *args: object) -> str:
        return "joined"

    monkeypatch.setattr(GroupCoordinator, "_do_heartbeat", heartbeat)
    monkeypatch.setattr(GroupCoordinator, "_on_join_complete", join)
    seen: list[float] = []
    faust_adapter.install_heartbeat_probe(seen.append)
    faust_adapter.install_heartbeat_probe(seen.append)  # idempotent: wraps the original once

    async def run() -> None:
        assert await GroupCoordinator._do_heartbeat(object()) is True
        assert await GroupCoordinator._do_heartbeat(object()) is False
        assert await GroupCoordinator._on_join_complete(object(), 1, "m", "p", b"") == "joined"

    asyncio.run(run())
    assert len(seen) == 2  # the answered heartbeat and the join, not the refused heartbeat


def test_a_bound_temporary_origin_survives_the_garbage_collector() -> None:
    """A fence is written for an origin nobody else holds (``bind(Origin(topic, p, -1))``):
    Faust keeps the current event by weak reference only, so the binding must hold it, or
    the cyclic GC can collect it before the store write (``assert event is not None``)."""
    import gc

    from faust.streams import current_event

    @dataclass(frozen=True)
    class Origin:
        topic: str
        partition: int
        offset: int

    faust_adapter.bind(Origin("events", 2, -1))
    gc.collect()
    event = current_event()
    assert event is not None and event.message.partition == 2

    async def other_task() -> int | None:
        faust_adapter.bind(Origin("events", 5, -1))  # its own context: ours stays bound
        gc.collect()
        ev = current_event()
        return None if ev is None else ev.message.partition

    async def both() -> tuple[int | None, int | None]:
        theirs = await asyncio.create_task(other_task())
        ev = current_event()
        return theirs, None if ev is None else ev.message.partition

    faust_adapter.bind(Origin("events", 1, -1))
    assert asyncio.run(both()) == (5, 1)


def test_bind_routes_table_reads_to_the_records_partition() -> None:
    from faust.streams import current_event

    @dataclass(frozen=True)
    class Origin:
        topic: str
        partition: int
        offset: int

    origin = Origin("events", 3, 7)
    faust_adapter.bind(origin)
    event = current_event()
    assert event is not None and event.message.partition == 3


# -- exactly-once: the changelog records of a transaction, and the restore ------------------


def test_a_state_tables_changelog_records_are_its_raw_keys_and_values() -> None:
    table = _table("raw")
    faust_adapter.raw_changelog(table)  # what send_changelog would send: the bytes as given
    key, _ = table.changelog_topic.prepare_key(b"\x001\x1fo", table.key_serializer)
    value, _ = table.changelog_topic.prepare_value(b'{"o":1}', table.value_serializer)
    assert (key, value) == (b"\x001\x1fo", b'{"o":1}')
    assert faust_adapter.changelog_topic_name(table) == "adapter-test-raw-raw-changelog"
    app = faust.App("adapter-test-json", store="memory://")
    with pytest.raises(TypeError, match="not raw bytes"):
        faust_adapter.raw_changelog(app.Table("j", default=None, key_type=str, value_type=dict, partitions=4))


def test_committed_writes_are_applied_to_their_partition_without_being_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True)
    class Origin:
        topic: str
        partition: int
        offset: int

    table = _table("apply")

    def no_send(*args: object, **kwargs: object) -> None:
        raise AssertionError("a committed write must not be sent again")

    monkeypatch.setattr(table, "send_changelog", no_send)
    persisted: list[tuple[object, int]] = []
    monkeypatch.setattr(table.data, "set_persisted_offset", lambda tp, offset: persisted.append((tp, offset)))
    key, gone = table_key(2, ORDERS, ["WH1", "O-1"]), table_key(2, ORDERS, ["WH1", "O-0"])
    table.data[gone] = b"old"
    faust_adapter.apply_committed(table, Origin("events", 2, 7), [(key, b"new"), (gone, None)], last_offset=41)
    assert table.data[key] == b"new" and gone not in table.data
    assert persisted == [(faust.types.TP("adapter-test-apply-apply-changelog", 2), 41)]


def test_committed_writes_on_rocksdb_leave_the_store_as_faust_s_own_writes_do(tmp_path: object) -> None:
    """On RocksDB the committed writes go in one write batch with the persisted offset: the
    partition then reads as after Faust's key-by-key writes and ``set_persisted_offset``,
    the other partitions are untouched and nothing is sent."""
    from pathlib import Path

    @dataclass(frozen=True)
    class Origin:
        topic: str
        partition: int
        offset: int

    kept, gone, new = (table_key(2, ORDERS, ["WH1", o]) for o in ("O-1", "O-0", "O-2"))
    writes = [(kept, b"new"), (gone, None), (new, b"first")]
    tables = [_rocks_table(Path(str(tmp_path)) / way, "state") for way in ("faust", "batch")]
    for table in tables:
        faust_adapter.bind(Origin("events", 2, 6))
        table.data[kept] = b"old"
        table.data[gone] = b"old"
        faust_adapter.bind(Origin("events", 1, 6))
        table.data[table_key(1, ORDERS, ["WH1", "O-9"])] = b"other partition"
    faust_way, batched = tables
    tp = faust.types.TP(faust_adapter.changelog_topic_name(batched), 2)
    faust_adapter.bind(Origin("events", 2, 7))
    for key, value in writes:
        if value is None:
            faust_way.data.pop(key, None)
        else:
            faust_way.data[key] = value
    faust_way.data.set_persisted_offset(tp, 41)

    def no_send(*args: object, **kwargs: object) -> None:
        raise AssertionError("a committed write must not be sent again")

    batched.send_changelog = no_send  # type: ignore[method-assign]
    assert faust_adapter.bulk_restorable(batched)
    faust_adapter.apply_committed(batched, Origin("events", 2, 7), writes, last_offset=41)
    for p in (1, 2):
        assert dict(faust_adapter.partition_items(batched, p)) == dict(faust_adapter.partition_items(faust_way, p))
    assert dict(faust_adapter.partition_items(batched, 2)) == {kept: b"new", new: b"first"}
    assert batched.data.persisted_offset(tp) == faust_way.data.persisted_offset(tp) == 41
    assert batched.data[kept] == b"new" and gone not in batched.data  # Faust's own reads agree
    faust_adapter.apply_committed(batched, Origin("events", 2, 8), [(kept, b"newer")], last_offset=None)
    assert batched.data.persisted_offset(tp) == 41  # no offset given: the stored one stays


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_a_partitions_reader_reads_what_faust_reads_for_an_event_of_that_partition(tmp_path: object, store: str) -> None:
    """The flush's ``previous`` (``partition_reader``) reads a partition's store directly:
    the bytes Faust's own ``table.get`` answers with that partition's event bound, and, on
    RocksDB, nothing of another partition's database."""
    from pathlib import Path

    @dataclass(frozen=True)
    class Origin:
        topic: str
        partition: int
        offset: int

    table = _rocks_table(Path(str(tmp_path)), "reader") if store == "rocksdb" else _table("reader")
    here, there, absent = table_key(2, ORDERS, ["WH1", "O-1"]), table_key(1, ORDERS, ["WH1", "O-9"]), b"2\x1fnone"
    faust_adapter.bind(Origin("events", 2, 6))
    table.data[here] = b'{"o":6,"v":1}'
    faust_adapter.bind(Origin("events", 1, 6))
    table.data[there] = b"other partition"
    read = faust_adapter.partition_reader(table, 2)
    faust_adapter.bind(Origin("events", 2, 7))
    assert read(here) == table.get(here) == b'{"o":6,"v":1}' and read(absent) is None is table.get(absent)
    assert isinstance(read(here), bytes)
    if store == "rocksdb":
        assert read(there) is None  # another partition's database
    table.data[here] = b'{"o":7,"v":2}'  # a later write is read (no copy taken)
    assert read(here) == b'{"o":7,"v":2}'


def test_read_committed_is_set_on_the_consumer_faust_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka import AIOKafkaConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    # Faust passes an isolation level it picks itself (read_committed only with its own
    # exactly_once), and aiokafka reads _isolation_level when it starts its fetcher.
    assert "isolation_level=isolation_level" in inspect.getsource(AIOKafkaConsumerThread._create_worker_consumer)
    assert "isolation_level=self._isolation_level" in inspect.getsource(AIOKafkaConsumer.start)

    class Made:
        _isolation_level = "read_uncommitted"

    monkeypatch.setattr(AIOKafkaConsumerThread, "_create_worker_consumer", lambda self, transport: Made())
    faust_adapter.install_read_committed()
    faust_adapter.install_read_committed()  # idempotent
    made = AIOKafkaConsumerThread._create_worker_consumer(object(), object())  # type: ignore[arg-type]
    assert made._isolation_level == "read_committed"


def test_the_restore_fences_first_and_ends_at_the_last_committed_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    from faust.tables.recovery import Recovery
    from faust.types import TP

    # Faust builds the actives' highwaters into active_highwaters, and waits until it has
    # applied the record at each highwater (end offset - 1).
    params = list(inspect.signature(Recovery._build_highwaters).parameters)
    assert params == ["self", "consumer", "tps", "destination", "title"]
    source = inspect.getsource(Recovery)
    assert "consumer, assigned_active_tps, active_highwaters" in source
    assert "tp: highwater - offsets[tp]" in inspect.getsource(Recovery.active_remaining)

    calls: list[str] = []

    async def original(self: object, consumer: object, tps: set[TP], destination: Counter[TP], title: str) -> None:
        calls.append("highwaters")
        for tp in tps:
            destination[tp] = 10  # Faust: end offset 11 - 1

    monkeypatch.setattr(Recovery, "_build_highwaters", original)
    fenced: list[set[TP]] = []

    def fence(tps: set[TP]) -> None:
        calls.append("fence")
        fenced.append(tps)

    def last_committed(ends: dict[TP, int]) -> dict[TP, int]:
        assert ends == {TP("s-changelog", 1): 11, TP("s-changelog", 2): 11}
        return {TP("s-changelog", 1): 9}  # its end is a commit marker; partition 2 is no transactional one

    faust_adapter.install_transactional_restore(fence, last_committed)

    class Stub:
        def __init__(self) -> None:
            self.active_highwaters: Counter[TP] = Counter()
            self.standby_highwaters: Counter[TP] = Counter()

    stub = Stub()
    tps = {TP("s-changelog", 1), TP("s-changelog", 2)}
    asyncio.run(Recovery._build_highwaters(stub, None, tps, stub.active_highwaters, "active"))  # type: ignore[arg-type]
    assert calls == ["fence", "highwaters"] and fenced == [tps]
    assert dict(stub.active_highwaters) == {TP("s-changelog", 1): 9, TP("s-changelog", 2): 10}
    calls.clear()
    asyncio.run(Recovery._build_highwaters(stub, None, tps, stub.standby_highwaters, "standby"))  # type: ignore[arg-type]
    assert calls == ["highwaters"], "standbys fence nobody"
    assert stub.standby_highwaters[TP("s-changelog", 1)] == 9


# -- the bulk restore ------------------------------------------------------------------------


def test_what_the_bulk_restore_relies_on_in_faust_and_its_rocksdb_store() -> None:
    import re

    from faust.tables.recovery import Recovery

    # Faust builds the actives' highwaters, then (same turn) their start offsets, then
    # seeks and reads from those; a partition whose start offset is its highwater needs
    # no recovery (active_remaining: highwater - offset).
    assert list(inspect.signature(Recovery._build_offsets).parameters) == ["self", "consumer", "tps", "destination",
                                                                          "title"]
    source = re.sub(r"\s+", " ", inspect.getsource(Recovery.__dict__["_restart_recovery"].fun))  # a Service task
    highwaters = source.index("T(self._build_highwaters)( consumer, assigned_active_tps, active_highwaters")
    offsets = source.index("T(self._build_offsets)( consumer, assigned_active_tps, active_offsets")
    seek = source.index("T(self._seek_offsets)( consumer, assigned_active_tps, active_offsets")
    assert highwaters < offsets < seek < source.index("if self.need_recovery():")
    assert "self.tp_to_table[tp] = table" in inspect.getsource(Recovery._add)
    # The store's persisted offset is one key of the partition's database, the offset as
    # text; Faust's own restore writes a partition's records as one raw-mode write batch.
    assert RocksStore.offset_key == b"__faust\0offset__"
    assert "put(self.offset_key, str(offset).encode())" in inspect.getsource(RocksStore.set_persisted_offset)
    assert "rocksdict.WriteBatch(raw_mode=True)" in inspect.getsource(RocksStore.apply_changelog_batch)


def _rocks_table(tmp_path: object, name: str, fenced: bool = True) -> faust_adapter.AnyTable:
    app = faust.App(f"bulk-{name}", store="rocksdb://", datadir=str(tmp_path))
    if fenced:
        return faust_adapter.fenced_table(app, name, fence_key, default=None, key_type=bytes, value_type=bytes,
                                          partitions=4)
    return app.Table(name, default=None, key_type=bytes, value_type=bytes, partitions=4)  # type: ignore[return-value]


def _changelog_events(tp: faust.types.TP, records: list[tuple[int, bytes, bytes | None]]) -> list[object]:
    @dataclass
    class Message:
        tp: faust.types.TP
        partition: int
        offset: int
        key: bytes
        value: bytes | None

    return [_Event(Message(tp, tp.partition, o, k, v)) for o, k, v in records]  # type: ignore[arg-type]


@pytest.mark.parametrize("fenced", [True, False])
def test_a_bulk_restore_leaves_the_store_as_faust_s_restore_does(tmp_path: object, fenced: bool) -> None:
    from pathlib import Path

    order, other = table_key(1, ORDERS, ["WH1", "O-1"]), table_key(1, ORDERS, ["WH1", "O-2"])
    meta = table_key(1, META)
    changelog = [
        (order, _rec(10, "picked", 3)),
        (other, _rec(10, "released", 3)),
        (meta, orjson.dumps({"o": 10, "watermark": 1, "seq": 0, "e": 3})),
        fence_write(1, 5),  # the new owner
        (order, _rec(11, "packed", 5)),
        (other, None),  # a tombstone
        (meta, orjson.dumps({"o": 11, "watermark": 2, "seq": 0, "e": 5})),
        (order, _rec(10, "picked-again", 3)),  # the stalled old owner: fenced
        (table_key(1, "l", ["WH1", "O-1"]), b"[]"),  # no epoch
    ]
    records = [(100 + i, k, v) for i, (k, v) in enumerate(changelog)]
    faust_way = _rocks_table(Path(str(tmp_path)) / "faust", "state", fenced)
    bulk = _rocks_table(Path(str(tmp_path)) / "bulk", "state", fenced)
    tp = faust.types.TP(faust_adapter.changelog_topic_name(bulk), 1)
    assert faust_adapter.bulk_restorable(bulk) and not faust_adapter.bulk_restorable(_table("mem"))
    faust_way.apply_changelog_batch(_changelog_events(tp, records[:5]))
    faust_way.apply_changelog_batch(_changelog_events(tp, records[5:]))
    faust_adapter.restore_batch(bulk, tp, records[:5])  # batches: the fence carries over
    faust_adapter.restore_batch(bulk, tp, records[5:])
    assert dict(faust_adapter.partition_items(bulk, 1)) == dict(faust_adapter.partition_items(faust_way, 1))
    assert bulk.data.persisted_offset(tp) == faust_way.data.persisted_offset(tp) == 108
    assert (orjson.loads(faust_adapter.partition_get(bulk, 1, order) or b"{}")["v"]
            == ("packed" if fenced else "picked-again"))
    if fenced:
        assert isinstance(bulk, faust_adapter.FencedTable) and isinstance(faust_way, faust_adapter.FencedTable)
        assert bulk.fenced_records == faust_way.fenced_records == 1 and bulk.fence_of(1) == 5
    assert list(faust_adapter.partition_items(bulk, 2)) == []


class _Conf:
    broker_request_timeout = 90.0


class _App:
    conf = _Conf()


def _recovery_stub(tables: dict[object, object], highwaters: dict[object, int], offsets: dict[object, int | None]) -> object:
    from collections import Counter

    class Stub:
        app = _App()

        def __init__(self) -> None:
            self.tp_to_table = tables
            self.active_highwaters: Counter[object] = Counter(highwaters)
            self.active_offsets: Counter[object] = Counter(offsets)  # type: ignore[arg-type]
            self.standby_offsets: Counter[object] = Counter()

    return Stub()


def test_the_bulk_restore_runs_between_faust_s_offsets_and_its_read(tmp_path: object,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.tables.recovery import Recovery
    from faust.types import TP

    async def original(self: object, consumer: object, tps: set[TP], destination: dict[TP, int | None],
                       title: str) -> None:
        for tp in tps:  # Faust: the persisted offset, else the earliest - 1
            destination[tp] = -1 if destination.get(tp) is None else destination[tp]

    monkeypatch.setattr(Recovery, "_build_offsets", original)
    rocks, memory = _rocks_table(tmp_path, "state"), _table("memory")
    a, b, c, d = TP("s-changelog", 0), TP("s-changelog", 1), TP("m-changelog", 0), TP("s-changelog", 2)
    stub = _recovery_stub({a: rocks, b: rocks, c: memory, d: rocks}, {a: 10, b: 3, c: 8, d: 4}, {a: 4, b: None, c: None, d: 4})
    seen: list[tuple[dict[TP, tuple[int, int]], float]] = []

    def read(jobs: dict[TP, tuple[int, int]], apply: object, should_stop: object, budget: float) -> dict[TP, int]:
        seen.append((dict(jobs), budget))
        apply(a, [(5, b"k", b"v"), (10, b"k2", b"v2")])  # type: ignore[operator]
        return {a: 10, b: 2}  # b: stopped early (the budget)

    faust_adapter.install_bulk_restore(read)
    faust_adapter.install_bulk_restore(read)  # idempotent: wraps the original once
    asyncio.run(Recovery._build_offsets(stub, None, {a, b, c, d}, stub.active_offsets, "active"))  # type: ignore[arg-type]
    # the memory table restores the Faust way; d has nothing left (persisted offset = highwater)
    assert seen == [({a: (5, 10), b: (0, 3)}, 45.0)]
    assert dict(stub.active_offsets) == {a: 10, b: 2, c: -1, d: 4}
    assert rocks.data.persisted_offset(a) == 10 and faust_adapter.partition_get(rocks, 0, b"k2") == b"v2"
    asyncio.run(Recovery._build_offsets(stub, None, {a}, stub.standby_offsets, "standby"))  # type: ignore[arg-type]
    assert len(seen) == 1, "standbys restore the Faust way"
    faust_adapter.install_bulk_restore(None)
    assert Recovery._build_offsets is original


def test_a_rebalance_during_a_bulk_restore_stops_its_thread_before_recovery_goes_on(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from faust.tables.recovery import Recovery
    from faust.types import TP

    async def original(self: object, consumer: object, tps: set[TP], destination: dict[TP, int | None],
                       title: str) -> None:
        for tp in tps:
            destination[tp] = -1

    monkeypatch.setattr(Recovery, "_build_offsets", original)
    a = TP("s-changelog", 0)
    stub = _recovery_stub({a: _rocks_table(tmp_path, "state")}, {a: 1000}, {a: None})
    done = threading.Event()

    def read(jobs: object, apply: object, should_stop: object, budget: float) -> dict[TP, int]:
        while not should_stop():  # type: ignore[operator]
            time.sleep(0.01)
        time.sleep(0.05)  # the batch in hand
        done.set()
        return {a: 10}

    faust_adapter.install_bulk_restore(read)

    async def rebalance() -> None:
        task = asyncio.create_task(Recovery._build_offsets(stub, None, {a}, stub.active_offsets, "active"))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert done.is_set(), "the thread has stopped when the cancelled call returns"

    asyncio.run(rebalance())
    assert stub.active_offsets[a] == -1, "a cancelled restore does not move Faust's start offsets"
    faust_adapter.install_bulk_restore(None)


def test_a_failed_bulk_restore_leaves_faust_s_recovery_where_its_write_batches_got(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from faust.tables.recovery import Recovery
    from faust.types import TP

    async def original(self: object, consumer: object, tps: set[TP], destination: dict[TP, int | None],
                       title: str) -> None:
        for tp in tps:
            destination[tp] = -1

    monkeypatch.setattr(Recovery, "_build_offsets", original)
    rocks = _rocks_table(tmp_path, "state")
    a, b = TP(faust_adapter.changelog_topic_name(rocks), 0), TP(faust_adapter.changelog_topic_name(rocks), 1)
    stub = _recovery_stub({a: rocks, b: rocks}, {a: 100, b: 100}, {a: None, b: None})

    def read(jobs: object, apply: object, should_stop: object, budget: float) -> dict[TP, int]:
        apply(a, [(0, b"k0", b"v0"), (1, b"k1", b"v1")])  # type: ignore[operator]
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    faust_adapter.install_bulk_restore(read)
    asyncio.run(Recovery._build_offsets(stub, None, {a, b}, stub.active_offsets, "active"))  # type: ignore[arg-type]
    assert dict(stub.active_offsets) == {a: 1, b: -1}, "Faust reads on from the last batch written"
    faust_adapter.install_bulk_restore(None)
