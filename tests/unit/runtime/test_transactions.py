"""The exactly-once writer without a broker (app/runtime/transactions.py): a batch's outputs,
marks and state go to one transaction per input partition, state records last with the
meta last, the local store changes only after the commit, the partitions commit
concurrently, and a fenced or failed transaction surfaces as Fenced / BatchAborted with
nothing of it applied. Fake producers stand in for confluent-kafka's."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from app.core.model import CoreSettings, DeadLetter, Milestone
from app.core.stock import Mark
from app.runtime import faust_adapter
from app.runtime.ownership import BatchAborted, Fenced, Lease, Ownership
from app.runtime.runner import StageRunner
from app.runtime.statestore import Origin
from app.runtime.transactions import PartitionBatch, PartitionProducers, TransactionalWriter, route
from app.stages.governance import GovernanceStage
from tables.records import META, fence_key, table_key
from tests.unit.runtime.test_stage_runner import FakeConsumer, _nosleep, release

TOPIC = "events"
_apps = iter(range(10**6))


@dataclass
class _Delivered:
    _topic: str
    _partition: int
    _offset: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@dataclass
class Broker:
    """What the fake producers' transactions made visible (committed), and every call."""

    visible: list[tuple[str, int, bytes | None, bytes | None]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (transactional id, call)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # transactional id -> current producer epoch
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Called at each commit, before it takes effect: may raise (a failed commit).
    on_commit: Callable[[FakeProducer], None] = lambda producer: None


class FakeProducer:
    """A transactional producer: records stay pending until commit; a newer producer with
    the same transactional id fences this one (its calls raise _FENCED)."""

    def __init__(self, broker: Broker, transactional_id: str) -> None:
        self.broker = broker
        self.id = transactional_id
        self.epoch = -1
        self.pending: list[tuple[str, int, bytes | None, bytes | None, Any]] = []

    def _call(self, name: str) -> None:
        with self.broker.lock:
            self.broker.calls.append((self.id, name))
            if name != "init" and self.broker.epochs.get(self.id) != self.epoch:
                raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))

    def init_transactions(self, timeout: float) -> None:
        with self.broker.lock:
            self.epoch = self.broker.epochs[self.id] = self.broker.epochs.get(self.id, -1) + 1
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")
        self.pending = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                on_delivery: Any = None, **_: Any) -> None:
        self.broker.calls.append((self.id, f"produce {topic}"))
        self.pending.append((topic, max(partition, 0), key, value, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")
        self.broker.on_commit(self)
        with self.broker.lock:
            for topic, partition, key, value, on_delivery in self.pending:
                offset = self.broker.offsets.get((topic, partition), 0)
                self.broker.offsets[(topic, partition)] = offset + 1
                if on_delivery is not None:  # as confluent-kafka: a report only where one was asked
                    on_delivery(None, _Delivered(topic, partition, offset))
                self.broker.visible.append((topic, partition, key, value))
        self.pending = []

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")
        self.pending = []


def encode(send: Any, outputs: list[tuple[Any, Origin]], marks: list[Mark]) -> None:
    """Outputs as the stage's encoder sends them: milestones by key, marks to each stock partition."""
    for out, _ in outputs:
        if isinstance(out, Milestone):
            send("milestones", out.milestone_id.encode(), orjson.dumps(out.to_dict()), -1)
        elif isinstance(out, DeadLetter):
            send("dead-letters", out.record_id.encode(), out.raw, -1)
    for mark in marks:
        for partition in range(2):
            send("stock", b"", orjson.dumps([mark.source, mark.offset]), partition)


async def written(w: TransactionalWriter, *args: Any) -> None:
    """A batch written and committed (``write`` returns while the commit is under way)."""
    await w.write(*args)
    await w.settle()


def ownership() -> Ownership:
    lease = Lease(6.0, 1.0, clock=lambda: 0.0)
    lease.renew(0.0)
    return Ownership(lambda: {0, 1, 2}, lambda: 1, lease, exit=lambda code: None)


def writer(broker: Broker, own: Ownership | None = None) -> TransactionalWriter:
    app = faust.App(f"tx-test-{next(_apps)}", store="memory://")
    table = faust_adapter.fenced_table(app, "state", fence_key, default=None, key_type=bytes, value_type=bytes,
                                       partitions=4)
    producers = PartitionProducers("app-governance", lambda txid: FakeProducer(broker, txid))
    return TransactionalWriter(table=table, topic=TOPIC, ownership=own or ownership(), producers=producers,
                               produce_outputs=encode, threads=4)


def taken(w: TransactionalWriter, broker: Broker, partitions: set[int]) -> None:
    """The writer takes the partitions over (producers initialised, fence records), then the
    broker's call log starts afresh."""
    asyncio.run(w.fence(partitions, epoch=1))
    broker.calls.clear()


def milestone(n: int) -> Milestone:
    return Milestone(milestone_id=f"m-{n}", type="OrderAccepted", warehouse_id="WH1", occurred_at=0, event_ids=(),
                     body={"order_id": f"O-{n}", "version": 1})


def test_route_splits_a_batch_by_the_input_partition_each_output_mark_and_commit_came_from() -> None:
    m0, m2, dl = milestone(0), milestone(2), DeadLetter(raw=b"x", reason="undecodable", record_id="r")
    def flush0(previous: Callable[[bytes], bytes | None]) -> list[tuple[bytes, bytes | None]]:
        return []

    def flush1(previous: Callable[[bytes], bytes | None]) -> list[tuple[bytes, bytes | None]]:
        return []

    plan = route(
        [(m0, Origin(TOPIC, 0, 5)), (dl, Origin(TOPIC, 2, 9)), (m2, Origin(TOPIC, 2, 10))],
        [Mark(1, 7, 123)],
        [(0, 5, flush0), (1, 7, flush1)],
    )
    assert sorted(plan) == [0, 1, 2]
    assert plan[0] == PartitionBatch([(m0, Origin(TOPIC, 0, 5))], [], (5, flush0))
    assert plan[1] == PartitionBatch([], [Mark(1, 7, 123)], (7, flush1))
    assert [o for o, _ in plan[2].outputs] == [dl, m2] and plan[2].commit is None  # in their order


def _writes(partition: int, offset: int) -> Callable[[Callable[[bytes], bytes | None]], list[tuple[bytes, bytes | None]]]:
    def flush(previous: Callable[[bytes], bytes | None]) -> list[tuple[bytes, bytes | None]]:
        return [(table_key(partition, "o", ["WH1", f"O-{offset}"]), b'{"o":%d}' % offset),
                (table_key(partition, "x", [1]), None),
                (table_key(partition, META), b'{"o":%d}' % offset)]

    return flush


def test_each_partition_is_one_transaction_outputs_then_state_meta_last_applied_after_commit() -> None:
    broker = Broker()
    w = writer(broker)
    taken(w, broker, {0, 1})
    seen_at_commit: list[bytes | None] = []
    broker.on_commit = lambda producer: seen_at_commit.append(w.table.data.get(table_key(0, META)))

    async def run() -> None:
        await written(w, [(milestone(1), Origin(TOPIC, 0, 3))], [Mark(0, 3, 99)], [(0, 3, _writes(0, 3)), (1, 8, _writes(1, 8))])

    asyncio.run(run())
    calls = {txid: [c for t, c in broker.calls if t == txid] for txid in ("app-governance-0", "app-governance-1")}
    assert calls["app-governance-0"] == [
        "begin", "produce milestones", "produce stock", "produce stock", *["produce " + w.changelog] * 3,
        "commit",
    ]
    assert calls["app-governance-1"] == ["begin", *["produce " + w.changelog] * 3, "commit"]
    p0 = [(k, v) for topic, p, k, v in broker.visible if topic == w.changelog and p == 0]
    assert p0[-1][0] == table_key(0, META), "the meta record is the last of the partition's transaction"
    assert (table_key(0, "x", [1]), None) in p0, "a delete is a tombstone"
    assert seen_at_commit == [None, None], "nothing is applied locally before the commit"
    faust_adapter.bind(Origin(TOPIC, 0, 3))
    assert w.table.data[table_key(0, META)] == b'{"o":3}'  # applied after the commit
    assert table_key(0, "x", [1]) not in w.table.data


def test_only_the_meta_record_asks_for_a_delivery_report_and_its_offset_is_the_one_persisted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery report is a Python call per record under the GIL; the transaction needs one
    only for its last changelog record (the meta record: the highest changelog offset, which
    the local store records as persisted). A failed record fails the commit anyway."""
    broker = Broker()
    w = writer(broker)
    taken(w, broker, {0})
    applied: list[tuple[int, int, int | None]] = []
    monkeypatch.setattr(faust_adapter, "apply_committed",
                        lambda table, origin, writes, last: applied.append((origin.partition, len(writes), last)))
    asked: list[tuple[str, bytes | None]] = []
    produce = FakeProducer.produce

    def spy(self: FakeProducer, topic: str, value: bytes | None = None, key: bytes | None = None,
            partition: int = -1, on_delivery: Any = None, **kw: Any) -> None:
        if on_delivery is not None:
            asked.append((topic, key))
        produce(self, topic, value, key, partition, on_delivery, **kw)

    monkeypatch.setattr(FakeProducer, "produce", spy)
    asyncio.run(written(w, [(milestone(1), Origin(TOPIC, 0, 3))], [Mark(0, 3, 99)], [(0, 3, _writes(0, 3))]))
    assert asked == [(w.changelog, table_key(0, META))]
    assert applied == [(0, 3, broker.offsets[(w.changelog, 0)] - 1)]  # the meta record's offset


def test_the_partitions_of_a_batch_commit_concurrently() -> None:
    broker = Broker()
    w = writer(broker)
    taken(w, broker, {0, 1, 2})
    barrier = threading.Barrier(3, timeout=10)  # three commits must be under way together
    broker.on_commit = lambda producer: barrier.wait()

    async def run() -> None:
        await written(w, [], [], [(p, 1, _writes(p, 1)) for p in range(3)])

    asyncio.run(run())
    assert sum(1 for _, c in broker.calls if c == "commit") == 3


def test_a_zombie_is_fenced_by_a_new_owners_init_and_nothing_of_its_batch_is_visible_or_applied() -> None:
    broker = Broker()
    zombie, owner = writer(broker), writer(broker)
    taken(zombie, broker, {0})

    async def run() -> None:
        await written(zombie, [], [], [(0, 1, _writes(0, 1))])
        owner.producers.renew({0})  # the new owner fences before its restore
        before = list(broker.visible)
        with pytest.raises(Fenced):
            await written(zombie, [(milestone(5), Origin(TOPIC, 0, 2))], [], [(0, 2, _writes(0, 2))])
        assert broker.visible == before, "the fenced batch is not visible"
        faust_adapter.bind(Origin(TOPIC, 0, 2))
        assert zombie.table.data[table_key(0, META)] == b'{"o":1}', "nor applied to the zombie's store"
        assert 0 not in zombie.producers.held(), "the fenced producer is discarded"
        with pytest.raises(BatchAborted, match="no producer"):  # and not re-initialised behind its back
            await written(zombie, [(milestone(6), Origin(TOPIC, 0, 3))], [], [])
        await written(owner, [(milestone(5), Origin(TOPIC, 0, 2))], [], [(0, 2, _writes(0, 2))])

    asyncio.run(run())
    assert [k for t, _, k, _ in broker.visible if t == "milestones"] == [b"m-5"]


def test_a_failed_commit_aborts_that_partition_only_and_raises_batch_aborted() -> None:
    broker = Broker()
    w = writer(broker)
    taken(w, broker, {0, 1})

    def fail_partition_1(producer: FakeProducer) -> None:
        if producer.id.endswith("-1"):
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"))

    broker.on_commit = fail_partition_1

    async def run() -> None:
        with pytest.raises(BatchAborted):
            await written(w, [(milestone(1), Origin(TOPIC, 1, 4))], [], [(0, 3, _writes(0, 3)), (1, 4, _writes(1, 4))])

    asyncio.run(run())
    assert ("app-governance-1", "abort") in broker.calls
    state = [(p, k) for t, p, k, _ in broker.visible if t == w.changelog and k != fence_key(p)]
    assert state and all(p == 0 for p, _ in state), "nothing of partition 1's batch is visible"
    assert not any(t == "milestones" for t, _, _, _ in broker.visible)
    faust_adapter.bind(Origin(TOPIC, 0, 3))
    assert w.table.data[table_key(0, META)] == b'{"o":3}', "the partition that committed is applied"
    faust_adapter.bind(Origin(TOPIC, 1, 4))
    assert w.table.data.get(table_key(1, META)) is None


def held_commits() -> tuple[Broker, TransactionalWriter, threading.Event]:
    """A writer that owns partition 0 and whose commits wait until the event is set."""
    broker = Broker()
    w = writer(broker)
    taken(w, broker, {0})
    release = threading.Event()
    broker.on_commit = lambda producer: release.wait(10)
    return broker, w, release


def test_a_batchs_commit_overlaps_the_next_batch_and_its_failure_surfaces_before_the_next_is_produced() -> None:
    """``write`` returns with the transactions under way (the runner reads and processes the
    next batch meanwhile); the next ``write`` waits for them first and raises their failure
    before it flushes or produces anything; ``on_committed`` runs only once committed."""
    broker, w, release = held_commits()
    done: list[str] = []
    flushed: list[int] = []

    def flush_of(offset: int) -> Any:
        inner = _writes(0, offset)

        def flush(previous: Callable[[bytes], bytes | None]) -> list[tuple[bytes, bytes | None]]:
            flushed.append(offset)
            return inner(previous)
        return flush

    async def run() -> None:
        await w.write([(milestone(1), Origin(TOPIC, 0, 1))], [], [(0, 1, flush_of(1))],
                      on_committed=lambda: done.append("1"))
        await asyncio.sleep(0.05)
        assert done == [] and not any(t == "milestones" for t, _, _, _ in broker.visible), "still committing"
        second = asyncio.ensure_future(w.write([(milestone(2), Origin(TOPIC, 0, 2))], [], [(0, 2, flush_of(2))],
                                               on_committed=lambda: done.append("2")))
        await asyncio.sleep(0.05)
        assert flushed == [1], "the next batch's state is not flushed before the previous one committed"
        release.set()
        await second
        await w.settle()
        assert done == ["1", "2"]

    asyncio.run(run())
    assert [k for t, _, k, _ in broker.visible if t == "milestones"] == [b"m-1", b"m-2"]

    # a failed commit is raised by the next write, which then produces nothing
    failing = Broker()
    w2 = writer(failing)
    taken(w2, failing, {0})

    commits = iter([True])  # the first commit fails, later ones succeed

    def fail(producer: FakeProducer) -> None:
        if next(commits, False):
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"))

    failing.on_commit = fail
    flushed.clear()

    async def run_failing() -> None:
        await w2.write([(milestone(3), Origin(TOPIC, 0, 3))], [], [(0, 3, flush_of(3))])
        with pytest.raises(BatchAborted):
            await w2.write([(milestone(4), Origin(TOPIC, 0, 4))], [], [(0, 4, flush_of(4))])
        await w2.settle()  # nothing left under way

    asyncio.run(run_failing())
    assert flushed == [3] and not any(t == "milestones" for t, _, _, _ in failing.visible)


def test_a_cancelled_wait_for_a_commit_does_not_cancel_the_commit() -> None:
    """A stop or a rebalance may cancel the task waiting in ``settle``: the commit goes on,
    stays pending, and the next ``settle`` (the runner's at stop) waits for it, applies its
    writes to the store and runs its bookkeeping."""
    broker, w, release = held_commits()
    done: list[str] = []

    async def run() -> None:
        await w.write([(milestone(1), Origin(TOPIC, 0, 1))], [], [(0, 1, _writes(0, 1))],
                      on_committed=lambda: done.append("1"))
        waiter = asyncio.ensure_future(w.settle())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(RuntimeError, match="dropped during a commit"):
            w.forget({0})  # still under way: the producers stay
        release.set()
        await w.settle()
        assert done == ["1"]

    asyncio.run(run())
    faust_adapter.bind(Origin(TOPIC, 0, 1))
    assert w.table.data[table_key(0, META)] == b'{"o":1}', "applied to the store once committed"
    assert [k for t, _, k, _ in broker.visible if t == "milestones"] == [b"m-1"]


def test_the_lease_is_checked_before_any_transaction() -> None:
    broker = Broker()
    lease = Lease(6.0, 1.0, clock=lambda: 100.0)
    lease.renew(0.0)  # long expired
    w = writer(broker, Ownership(lambda: {0}, lambda: 1, lease, exit=lambda code: None))

    async def run() -> None:
        with pytest.raises(Fenced):
            await written(w, [(milestone(1), Origin(TOPIC, 0, 1))], [], [])

    asyncio.run(run())
    assert broker.calls == []


def test_with_an_aborted_batch_the_runner_redoes_it_and_every_milestone_is_visible_exactly_once() -> None:
    """The stage and runner as in production, on transactions: a commit fails once mid-stream;
    the batch is redone from the stored offset, and a read-committed reader sees each order
    accepted once (at-least-once would have been allowed to show a repeat)."""
    broker = Broker()
    failures = iter([False, False, True])  # the third commit fails

    def flaky(producer: FakeProducer) -> None:
        if next(failures, False):
            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT, "commit timed out"))

    broker.on_commit = flaky
    lease = Lease(6.0, 1.0, clock=lambda: 0.0)
    lease.renew(0.0)
    own = Ownership(lambda: {0}, lambda: 1, lease, exit=lambda code: None)
    w = writer(broker, own)
    st = GovernanceStage(topic=TOPIC, writer=w, settings=CoreSettings(), idle_partition_s=3600)
    consumer = FakeConsumer({0: [release(i) for i in range(8)]})
    runner = StageRunner(st, own, lambda: consumer, batch_size=100, batch_within_s=0, sleep=_nosleep)
    runner.reader = consumer

    async def run() -> None:
        for _ in range(12):
            await runner.step()

    asyncio.run(run())
    accepted = [orjson.loads(v)["order_id"] for t, _, _, v in broker.visible if t == "milestones" and v]
    assert sorted(accepted) == [f"O-{i}" for i in range(8)], "each order accepted exactly once"
    assert ("app-governance-0", "abort") in broker.calls, "a batch was aborted on the way"
    assert len(consumer.assigns) >= 2, "and re-read from the stored offset"
    assert st.committed() == {0: 8}
