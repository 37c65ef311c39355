"""A batch's state written through the process's confluent-kafka producer
(``commit_all``): the records Faust would write, in order (every other
write acknowledged before any partition's commit record), applied to the local store only
once the broker has them all, with the last record's offset as the store's persisted
offset; a failed send leaves the store as it was."""
from __future__ import annotations

import asyncio

import faust
import pytest

from app.runtime import faust_adapter
from app.runtime.outputs import Deliveries, OutputError
from app.runtime.statestore import Flush, Origin, TableStore, commit_all
from tables.records import META, ORDERS, fence_key, table_key

TOPIC = "events"


class Changelog:
    """A producer whose sends are delivered at ``flush`` with consecutive offsets per
    partition; ``fail_at`` makes that flush's records fail."""

    def __init__(self, table: faust_adapter.FencedTable, fail_at: int | None = None) -> None:
        self.table, self.fail_at = table, fail_at
        self.queued: list[tuple[str, bytes, bytes | None, int, Deliveries]] = []
        self.log: list[tuple[str, object]] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.store_at_flush: list[dict[bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes | None, partition: int, deliveries: Deliveries) -> None:
        self.queued.append((topic, key, value, partition, deliveries))
        self.log.append(("send", (partition, key, value)))

    async def flush(self, deliveries: Deliveries) -> None:
        await asyncio.sleep(0)
        self.store_at_flush.append(dict(self.table.data.items()))
        flushes = sum(1 for kind, _ in self.log if kind == "flush")
        self.log.append(("flush", None))
        for topic, _key, _value, partition, d in self.queued:
            if flushes == self.fail_at:
                d.errors.append("broker said no")  # type: ignore[arg-type]
                continue
            offset = self.ends.get((topic, partition), -1) + 1  # each topic partition its own offsets
            self.ends[(topic, partition)] = offset
            d.offsets[(topic, partition)] = max(d.offsets.get((topic, partition), -1), offset)
        self.queued = []
        if deliveries.errors:
            raise OutputError(f"errors: {deliveries.errors}")


class Lease:
    def __init__(self) -> None:
        self.commits: list[str] = []

    def check(self) -> None:
        pass

    def after_commit(self, what: str) -> None:
        self.commits.append(what)


def _table() -> faust_adapter.FencedTable:
    app = faust.App("statestore-test", store="memory://")
    return faust_adapter.fenced_table(app, "state", fence_key, default=None, key_type=bytes, value_type=bytes,
                                      partitions=4)


def _flush(partition: int, n: int) -> Flush:
    def flush(previous: object) -> list[tuple[bytes, bytes | None]]:
        writes: list[tuple[bytes, bytes | None]] = [(table_key(partition, ORDERS, ["WH1", f"O-{i}"]), b"order")
                                                    for i in range(n)]
        return [*writes, (table_key(partition, META), b"meta")]
    return flush


def test_records_go_in_commit_all_order_and_the_store_changes_only_after_the_broker_has_them() -> None:
    table = _table()
    changelog, lease = Changelog(table), Lease()
    commits = [(Origin(TOPIC, 1, 10), _flush(1, 2)), (Origin(TOPIC, 3, 20), _flush(3, 1))]
    asyncio.run(commit_all(commits, table, changelog, lease))  # type: ignore[arg-type]
    # every order write of both partitions, acknowledged; then each partition's meta, acknowledged
    assert [kind for kind, _ in changelog.log] == ["send", "send", "send", "flush", "send", "send", "flush"]
    assert [item[1] for kind, item in changelog.log if kind == "send"][3:] == [table_key(1, META), table_key(3, META)]  # type: ignore[index]
    assert changelog.store_at_flush == [{}, {}]  # nothing applied before the last acknowledgement
    assert table.data[table_key(1, ORDERS, ["WH1", "O-1"])] == b"order"
    assert table.data[table_key(3, META)] == b"meta"
    assert lease.commits == ["state batch"]


def test_the_persisted_offset_is_each_partitions_last_record(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table()
    persisted: list[tuple[int, int]] = []
    monkeypatch.setattr(table.data, "set_persisted_offset", lambda tp, offset: persisted.append((tp.partition, offset)))
    asyncio.run(commit_all([(Origin(TOPIC, 1, 10), _flush(1, 2)), (Origin(TOPIC, 3, 20), _flush(3, 1))],
                                table, Changelog(table), Lease()))  # type: ignore[arg-type]
    assert sorted(persisted) == [(1, 2), (3, 1)]  # partition 1: offsets 0, 1 (orders), 2 (meta)


@pytest.mark.parametrize("fail_at", [0, 1])
def test_a_failed_send_leaves_the_store_as_it_was_and_commits_nothing(fail_at: int) -> None:
    table = _table()
    table.data[table_key(1, META)] = b"before"
    changelog, lease = Changelog(table, fail_at=fail_at), Lease()
    with pytest.raises(OutputError):
        asyncio.run(commit_all([(Origin(TOPIC, 1, 10), _flush(1, 2))], table, changelog, lease))  # type: ignore[arg-type]
    assert dict(table.data.items()) == {table_key(1, META): b"before"} and lease.commits == []


def test_a_table_whose_changelog_is_not_raw_bytes_is_refused() -> None:
    app = faust.App("statestore-json", store="memory://")
    table = app.Table("json", default=None, partitions=4)
    with pytest.raises(TypeError, match="not raw bytes"):
        TableStore(table, TOPIC, Lease(), Changelog(table))  # type: ignore[arg-type]


def test_deliveries_keep_the_highest_offset_per_partition_and_every_error() -> None:
    class Msg:
        def __init__(self, partition: int, offset: int, topic: str = "t") -> None:
            self._t, self._p, self._o = topic, partition, offset

        def topic(self) -> str:
            return self._t

        def partition(self) -> int:
            return self._p

        def offset(self) -> int:
            return self._o

    d = Deliveries()
    for p, o in [(1, 5), (1, 3), (2, 0), (1, 7)]:
        d(None, Msg(p, o))  # type: ignore[arg-type]
    d(None, Msg(1, 90, topic="milestones"))  # type: ignore[arg-type]
    d("timed out", None)  # type: ignore[arg-type]
    assert d.offsets == {("t", 1): 7, ("t", 2): 0, ("milestones", 1): 90} and d.errors == ["timed out"]


def test_outputs_queued_before_are_acknowledged_in_the_first_round_and_keep_their_own_offsets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table()
    changelog = Changelog(table)
    persisted: list[tuple[int, int]] = []
    monkeypatch.setattr(table.data, "set_persisted_offset", lambda tp, offset: persisted.append((tp.partition, offset)))
    sent = Deliveries()
    for _ in range(50):  # the batch's milestones, partition 1 of another topic, already queued
        changelog.queued.append(("milestones", b"k", b"v", 1, sent))
    asyncio.run(commit_all([(Origin(TOPIC, 1, 10), _flush(1, 2))], table, changelog, Lease(), sent))  # type: ignore[arg-type]
    flushes = [i for i, (kind, _) in enumerate(changelog.log) if kind == "flush"]
    assert len(flushes) == 2  # outputs + writes, then the meta: two round trips
    assert sent.offsets[("milestones", 1)] == 49
    assert persisted == [(1, 2)]  # the changelog's own last offset (orders 0, 1; meta 2), not the milestones'



def test_queued_outputs_without_state_to_commit_are_still_waited_for() -> None:
    table = _table()
    changelog = Changelog(table, fail_at=0)
    sent = Deliveries()
    changelog.queued.append(("milestones", b"k", b"v", 0, sent))
    with pytest.raises(OutputError):
        asyncio.run(commit_all([], table, changelog, Lease(), sent))  # type: ignore[arg-type]


def test_batch_clock_read_follows_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core's per-event clock (``read``, a C-level callable) returns the time of the
    last ``tick``, as the clock object itself does, in int milliseconds."""
    from app.runtime import statestore

    now = [1_700_000_000.0004]
    monkeypatch.setattr(statestore.time, "time", lambda: now[0])
    clock = statestore.BatchClock()
    assert clock.read() == clock() == clock.now_ms == 1_700_000_000_000
    now[0] = 1_700_000_123.4567
    assert clock.read() == 1_700_000_000_000  # read once per batch, not per event
    clock.tick()
    assert clock.read() == clock() == clock.now_ms == 1_700_000_123_456
