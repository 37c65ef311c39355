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
