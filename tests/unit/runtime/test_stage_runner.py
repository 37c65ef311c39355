"""The governance stage and the stage runner without a broker: a fake consumer, a fake
state store and a fake emitter, so the batch cycle and the partition lifecycle are
tested as plain objects (app/stages/governance.py, app/runtime/runner.py)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from confluent_kafka import TopicPartition

from app.core.model import CoreSettings, DeadLetter, Milestone
from app.core.stock import Mark
from app.runtime.outputs import Deliveries
from app.runtime.ownership import BatchAborted, Fenced, Lease, Ownership
from app.runtime.runner import StageRunner, read_batch
from app.runtime.statestore import AtLeastOnceWriter, Flush
from app.stages.governance import GovernanceStage
from tables.records import fence_key, fence_write

TOPIC = "events"


@dataclass
class Msg:
    _partition: int
    _offset: int
    _value: bytes

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


@dataclass
class FakeConsumer:
    """Per partition a list of values; ``assign`` seeks, ``consume`` reads on."""

    log: dict[int, list[bytes]]
    positions: dict[int, int] = field(default_factory=dict)
    assigns: list[dict[int, int]] = field(default_factory=list)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {tp.partition: tp.offset for tp in partitions}
        self.assigns.append(dict(self.positions))

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        out: list[Msg] = []
        for p, pos in self.positions.items():
            values = self.log.get(p, [])
            take = values[pos : pos + 2]  # small batches: several turns per test
            out += [Msg(p, pos + i, v) for i, v in enumerate(take)]
            self.positions[p] = pos + len(take)
        return out

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 1, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.log.get(tp.partition, []))

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class FakeStore:
    """The changelog of a state table as a list of writes; a partition's state is the
    last write of each key (a restore), as a new owner would recover it."""

    changelog: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)
    ownership: Ownership | None = None

    def table(self, partition: int) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for p, key, value in self.changelog:
            if p != partition:
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    def records(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.table(partition).items()))

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.table(partition).get(key)

    def check(self) -> None:
        if self.ownership is not None:
            self.ownership.check()

    async def fence(self, partitions: set[int], epoch: int) -> None:
        for p in partitions:
            key, value = fence_write(p, epoch)
            self.changelog.append((p, key, value))

    async def commit(self, commits: list[tuple[int, int, Flush]], sent: Deliveries) -> None:
        if self.ownership is not None:
            self.ownership.check()
        for partition, _, flush in commits:
            for key, value in flush(self.table(partition).get):
                self.changelog.append((partition, key, value))


def release(i: int, order: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"rel-{i}",
            "type": "OrderReleased",
            "occurred_at": f"2026-11-27T10:00:{i:02d}.000Z",
            "source": "erp",
            "warehouse_id": "WH1",
            "order_id": order or f"O-{i}",
            "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": 2}],
        }
    )


class Emitted:
    def __init__(self) -> None:
        self.outputs: list[object] = []
        self.marks: list[Mark] = []

    def __call__(self, outputs: list[tuple[object, object]], marks: list[Mark]) -> Deliveries:
        self.outputs += [o for o, _ in outputs]
        self.marks += marks
        return Deliveries()

    def accepted(self) -> list[str]:
        return [o.body["order_id"] for o in self.outputs if isinstance(o, Milestone) and o.type == "OrderAccepted"]


def stage(store: FakeStore, emitted: Emitted, now: Callable[[], float] = lambda: 0.0) -> GovernanceStage:
    return GovernanceStage(
        topic=TOPIC, writer=AtLeastOnceWriter(store, emitted), settings=CoreSettings(), idle_partition_s=30,
        monotonic=now,
    )


class Group:
    """The ownership a test drives: assignment, generation and a lease it can expire."""

    def __init__(self, owned: set[int] | None) -> None:
        self.owned = owned
        self.generation = 1
        self.now = 0.0
        self.lease = Lease(6.0, 1.0, clock=lambda: self.now)
        self.lease.renew(0.0)
        self.ownership = Ownership(lambda: self.owned, lambda: self.generation, self.lease, exit=lambda code: None)


async def _nosleep(_: float) -> None:
    await asyncio.sleep(0)


def runner(st: GovernanceStage, group: Group, consumer: FakeConsumer) -> StageRunner:
    r = StageRunner(st, group.ownership, lambda: consumer, batch_size=100, batch_within_s=0, sleep=_nosleep)
    r.reader = consumer
    return r


async def turns(r: StageRunner, n: int) -> None:
    for _ in range(n):
        await r.step()


def test_a_batch_emits_first_then_commits_state_with_its_offset_and_skips_what_is_stored() -> None:
    async def run() -> None:
        store, emitted = FakeStore(), Emitted()
        st = stage(store, emitted)
        assert await st.assign({0}, epoch=3) == {0: 0}
        first = [Msg(0, 0, release(1)), Msg(0, 1, b"{not json"), Msg(0, 2, release(2))]
        await st.process({0: first}, {0: 3})
        assert emitted.accepted() == ["O-1", "O-2"]
        assert sum(isinstance(o, DeadLetter) for o in emitted.outputs) == 1
        assert [m.watermark is not None for m in emitted.marks] == [True]  # the watermark moved: one mark
        assert st.committed() == {0: 3}
        # Every record of the commit carries the epoch; the fence came first.
        epochs = [orjson.loads(v).get("e") for _, _, v in store.changelog if v and v[:1] == b"{"]
        assert epochs and set(epochs) == {3}
        # A new owner loads the committed state: the same records again change nothing.
        emitted2 = Emitted()
        again = stage(store, emitted2)
        assert await again.assign({0}, epoch=4) == {0: 3}
        await again.process({0: first}, {0: 3})
        assert emitted2.outputs == []

    asyncio.run(run())


def test_the_runner_hands_a_partition_over_without_losing_or_repeating_an_event() -> None:
    async def run() -> None:
        log = {0: [release(i) for i in range(10)], 1: [release(i, f"P1-{i}") for i in range(10, 16)]}
        store = FakeStore()
        a_out, b_out = Emitted(), Emitted()
        group_a, group_b = Group({0, 1}), Group(set())
        a = runner(stage(store, a_out), group_a, FakeConsumer(log))
        await turns(a, 3)  # worker A owns both, reads part of them
        assert 0 < len(a_out.accepted()) < 16
        # Rebalance: partition 0 moves to worker B (a higher generation).
        await a.on_revoked({0})
        group_a.owned, group_b.owned = {1}, {0}
        group_b.generation = 2
        b = runner(stage(store, b_out), group_b, FakeConsumer(log))
        await turns(b, 6)
        await turns(a, 6)
        got = a_out.accepted() + b_out.accepted()
        assert sorted(got) == sorted([f"O-{i}" for i in range(10)] + [f"P1-{i}" for i in range(10, 16)])
        assert len(got) == len(set(got))  # a clean hand-over re-emits nothing
        assert a.loaded == {1} and b.loaded == {0}

    asyncio.run(run())


def test_a_batch_cut_by_an_expired_lease_is_redone_from_the_stored_offset_nothing_skipped() -> None:
    async def run() -> None:
        log = {0: [release(i) for i in range(8)]}
        group = Group({0})
        store = FakeStore(ownership=group.ownership)
        out = Emitted()
        consumer = FakeConsumer(log)
        r = runner(stage(store, out), group, consumer)
        await turns(r, 1)  # sync, then one batch of 2
        assert out.accepted() == ["O-0", "O-1"]
        group.now = 10.0  # stalled past the lease: the next batch is read but neither emitted nor committed
        await r.step()
        assert out.accepted() == ["O-0", "O-1"]
        assert r.loaded == set() and r.assigned is None
        assert consumer.positions[0] == 4  # it had read on...
        group.lease.renew(10.0)  # ...the group answers again (a new generation)
        group.generation = 2
        await turns(r, 6)
        assert consumer.assigns == [{0: 0}, {0: 2}]  # re-seeked to the stored offset
        # Every order accepted once: the fenced batch emitted nothing, and was redone.
        assert out.accepted() == [f"O-{i}" for i in range(8)]

    asyncio.run(run())


class AbortingStore(FakeStore):
    """A store whose ``abort_at``-th commit builds its writes (the flush ran, the state's kept
    values moved on) and then aborts, as an aborted Kafka transaction does."""

    def __init__(self, abort_at: int) -> None:
        super().__init__()
        self.abort_at, self.commits = abort_at, 0

    async def commit(self, commits: list[tuple[int, int, Flush]], sent: Deliveries) -> None:
        self.commits += 1
        if self.commits == self.abort_at:
            for partition, _, flush in commits:
                flush(self.table(partition).get)
            raise BatchAborted("aborted")
        await super().commit(commits, sent)


def test_an_aborted_batch_leaves_no_kept_trail_behind_its_redo_writes_each_entry_once() -> None:
    """An order's trail is kept as the state last wrote it; a batch whose flush ran but whose
    commit aborted drops the state (and what it kept), so the redo reads the stored trail: it
    ends as a clean run's, every event once, in order."""
    def trail(store: FakeStore) -> list[str]:
        key = next(k for k in store.table(0) if b'"O-A"' in k and b"\x1fl\x1f" in k)
        return [e["id"] for e in orjson.loads(store.table(0)[key]) if e["kind"] == "event"]

    async def run(store: FakeStore) -> tuple[FakeStore, int]:
        """The store after all records, and how many partition states the stage built."""
        log = {0: [release(i, "O-A") for i in range(8)]}
        st = stage(store, Emitted())
        r = runner(st, Group({0}), FakeConsumer(log))
        states = []
        for _ in range(12):
            await r.step()
            if 0 in st.partitions and (not states or states[-1] is not st.partitions[0].state):
                states.append(st.partitions[0].state)
        assert st.committed() == {0: 8}
        return store, len(states)

    clean, built = asyncio.run(run(FakeStore()))
    assert built == 1
    aborted, built = asyncio.run(run(AbortingStore(abort_at=2)))
    assert built == 2  # the state that kept the aborted batch's trail was dropped
    assert trail(clean) == [f"rel-{i}" for i in range(8)]
    assert trail(aborted) == trail(clean)


def test_nothing_is_taken_over_without_a_lease() -> None:
    async def run() -> None:
        group = Group({0})
        group.now = 100.0
        r = runner(stage(FakeStore(), Emitted()), group, FakeConsumer({0: [release(1)]}))
        await r.step()
        assert r.loaded == set() and r.assigned is None
        with pytest.raises(Fenced):
            group.ownership.check()

    asyncio.run(run())


# -- natural batching ----------------------------------------------------------------------------


class QueuedReader:
    """A consumer whose fetched records sit in a queue; ``arrive`` is what a blocking wait
    would see come in, and every call is logged as (num_messages, timeout)."""

    def __init__(self, queued: int, arrive: int = 0) -> None:
        self.queued, self.arrive = queued, arrive
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[int]:
        self.calls.append((num_messages, timeout))
        if not self.queued and timeout > 0:
            self.queued, self.arrive = self.arrive, 0
        take = min(num_messages, self.queued)
        self.queued -= take
        return list(range(take))


def test_a_batch_is_what_the_consumer_has_fetched_taken_without_waiting() -> None:
    reader = QueuedReader(queued=7)
    assert len(read_batch(reader, 100, 0.1)) == 7
    assert reader.calls == [(100, 0)]  # no wait for the batch to fill


def test_at_saturation_a_batch_is_full_and_the_rest_waits_for_the_next() -> None:
    reader = QueuedReader(queued=250)
    assert len(read_batch(reader, 100, 0.1)) == 100
    assert len(read_batch(reader, 100, 0.1)) == 100
    assert reader.queued == 50 and all(timeout == 0 for _, timeout in reader.calls)


def test_an_idle_consumer_waits_for_the_first_record_then_takes_what_came_with_it() -> None:
    reader = QueuedReader(queued=0, arrive=5)
    assert len(read_batch(reader, 100, 0.1)) == 5
    assert reader.calls == [(100, 0), (1, 0.1), (99, 0)]
    assert read_batch(QueuedReader(queued=0), 100, 0.1) == []


def test_the_first_records_after_each_assignment_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """The stage logs when it has its first records in hand after an assignment (the
    benchmark times the worker from that line): once per assignment, not per batch."""
    async def run() -> None:
        log = {0: [release(i) for i in range(6)], 1: [release(i, f"P1-{i}") for i in range(6, 8)]}
        group = Group({0})
        r = runner(stage(FakeStore(), Emitted()), group, FakeConsumer(log))
        await turns(r, 3)  # 3 batches of partition 0
        group.owned = {0, 1}  # a new assignment
        await turns(r, 2)

    with caplog.at_level("INFO", logger="app.runtime.runner"):
        asyncio.run(run())
    first = [rec.getMessage() for rec in caplog.records if "first records" in rec.getMessage()]
    assert first == ["governance: first records from events since the assignment: 2",
                     "governance: first records from events since the assignment: 2"]  # partition 1's


def test_a_batchs_bookkeeping_counts_that_batch_even_when_it_runs_after_the_next_one_was_processed() -> None:
    """With Kafka transactions a batch's bookkeeping runs when it has committed, which can be
    after the core has processed the next batch: each batch counts its own events."""
    from app import metrics

    class Deferred(AtLeastOnceWriter):
        """Commits at once, runs the bookkeeping when the test says (as after a late commit)."""

        def __init__(self, store: FakeStore, emitted: Emitted) -> None:
            super().__init__(store, emitted)
            self.later: list[Callable[[], None]] = []

        async def write(self, outputs: object, marks: object, commits: object,
                        on_committed: Callable[[], None] | None = None) -> None:
            await super().write(outputs, marks, commits)  # type: ignore[arg-type]
            if on_committed is not None:
                self.later.append(on_committed)

    def admitted() -> float:
        return metrics.REGISTRY.get_sample_value("syncgov_events_total", {"type": "OrderReleased", "source": "erp"}) or 0.0

    async def run() -> None:
        store, emitted = FakeStore(), Emitted()
        writer = Deferred(store, emitted)
        st = GovernanceStage(topic=TOPIC, writer=writer, settings=CoreSettings(), idle_partition_s=30,
                             monotonic=lambda: 0.0)
        await st.assign({0}, epoch=1)
        before = admitted()
        await st.process({0: [Msg(0, 0, release(1)), Msg(0, 1, release(2))]}, {0: 5})
        await st.process({0: [Msg(0, 2, release(3)), Msg(0, 3, release(4)), Msg(0, 4, release(5))]}, {0: 5})
        first, second = writer.later
        first()
        assert admitted() - before == 2, "the first batch's two events, not the second's too"
        second()
        assert admitted() - before == 5

    asyncio.run(run())


def test_an_empty_partition_repeats_its_idle_mark_a_partition_with_events_reports_once() -> None:
    """The inventory stage keeps an idle report of an empty partition only once some
    partition has had an event (app/core/stock.py): one made while the whole topic was
    still empty would be lost, so an empty partition repeats it every idle time until it
    has made one after the load started."""
    async def run() -> None:
        clock = [0.0]
        store, emitted = FakeStore(), Emitted()
        st = stage(store, emitted, now=lambda: clock[0])  # idle after 30 s
        await st.assign({0, 1}, epoch=1)

        async def at(t: float, batch: dict[int, list[Msg]] | None = None) -> list[tuple[int, bool]]:
            """The idle marks of a turn at ``t``: (partition, with a watermark)."""
            clock[0] = t
            before = len(emitted.marks)
            await st.process(batch or {}, {0: len(batch[0]) if batch else 0, 1: 0})
            return [(m.source, m.watermark is not None) for m in emitted.marks[before:] if m.idle]

        assert await at(29) == []
        assert await at(30) == [(0, False), (1, False)]  # the whole topic is quiet
        assert await at(45) == []
        assert await at(50, {0: [Msg(0, 0, release(1))]}) == []  # partition 0 starts
        assert await at(60) == [(1, False)]  # the empty one again, 30 s after its last report
        assert await at(80) == [(0, True)]  # partition 0 idle, with its watermark: once
        # partition 1's last report came after partition 0's watermark was committed (an
        # earlier batch): the inventory stage keeps it, so it is not repeated
        assert await at(90) == []
        assert await at(200) == []

    asyncio.run(run())


def test_an_empty_partition_is_reported_idle_only_if_the_broker_has_nothing_for_it_either() -> None:
    """A worker stalled (or starved of CPU) when the load starts wakes up with the cached
    end offsets of before: asked afresh, partition 1 has records, so it is not reported
    idle and keeps holding the inventory windows until its events are in."""
    async def run() -> None:
        clock = [0.0]
        store, emitted = FakeStore(), Emitted()
        ends = {0: (0, 0), 1: (0, 3)}
        asked: list[list[int]] = []

        async def end_offsets(partitions: list[int]) -> dict[int, tuple[int, int]]:
            asked.append(partitions)
            return {p: ends[p] for p in partitions}

        st = GovernanceStage(topic=TOPIC, writer=AtLeastOnceWriter(store, emitted), settings=CoreSettings(),
                             idle_partition_s=30, monotonic=lambda: clock[0], end_offsets=end_offsets)
        await st.assign({0, 1}, epoch=1)
        clock[0] = 40
        await st.process({}, {0: 0, 1: 0})  # the cached ends: both empty
        assert asked == [[0, 1]]
        assert [(m.source, m.idle) for m in emitted.marks] == [(0, True)]

    asyncio.run(run())


def test_the_runner_asks_the_broker_for_end_offsets_not_its_cache() -> None:
    class Ends(FakeConsumer):
        def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 1,
                                  cached: bool = False) -> tuple[int, int]:
            return 0, 0 if cached else 5

    async def run() -> None:
        r = runner(stage(FakeStore(), Emitted()), Group({0}), Ends({}))
        assert await r.end_offsets([0, 1]) == {0: (0, 5), 1: (0, 5)}

    asyncio.run(run())


def test_an_empty_partition_asks_the_broker_once_an_idle_time_and_after_the_previous_commit() -> None:
    """A broker that does not answer is asked again only after the idle time (not every
    batch, each ask blocking the stage); the previous batch's commit is awaited before the
    ask; a partition whose records all aged out (low = high) has nothing to read."""
    async def run() -> None:
        clock = [0.0]
        store, emitted = FakeStore(), Emitted()
        answers: list[dict[int, tuple[int, int]] | Exception] = [OSError("no leader"), {0: (7, 7), 1: (0, 2)}]
        calls: list[tuple[str, float]] = []

        async def end_offsets(partitions: list[int]) -> dict[int, tuple[int, int]]:
            calls.append(("ask", clock[0]))
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return {p: answer[p] for p in partitions}

        class Settling(AtLeastOnceWriter):
            async def settle(self) -> None:
                calls.append(("settle", clock[0]))

        st = GovernanceStage(topic=TOPIC, writer=Settling(store, emitted), settings=CoreSettings(),
                             idle_partition_s=30, monotonic=lambda: clock[0], end_offsets=end_offsets)
        await st.assign({0, 1}, epoch=1)
        for t in (40, 41, 50, 69):
            clock[0] = t
            await st.process({}, {0: 0, 1: 0})
        assert calls == [("settle", 40), ("ask", 40)]
        assert emitted.marks == []
        clock[0] = 70
        await st.process({}, {0: 7, 1: 2})
        assert calls[2:] == [("settle", 70), ("ask", 70)]
        assert [(m.source, m.idle) for m in emitted.marks] == [(0, True)]  # 1 has records to read

    asyncio.run(run())


def test_a_take_over_after_the_group_generation_restarted_fences_above_the_stored_fence() -> None:
    """Apache Kafka 4 deletes an empty group, and its next members start again at
    generation 1: a new owner must still fence above the last fence stored, or a restore
    would take its writes for a zombie's (lower epoch after a higher fence) and skip them."""
    async def run() -> None:
        store, emitted = FakeStore(), Emitted()
        old = stage(store, emitted)
        await old.assign({0, 1}, epoch=5)
        await old.process({0: [Msg(0, 0, release(1))]}, {0: 1})
        new = stage(store, Emitted())
        await new.assign({0, 1}, epoch=1)  # the group's generation after the reset
        fences = [(p, orjson.loads(v)["e"]) for p, k, v in store.changelog if v is not None and k == fence_key(p)]
        assert sorted(fences) == [(0, 5), (0, 6), (1, 5), (1, 6)] and [e for _, e in fences] == [5, 5, 6, 6]
        mark = len(store.changelog)
        await new.process({0: [Msg(0, 1, release(2))]}, {0: 2})
        written = [orjson.loads(v) for _, _, v in store.changelog[mark:] if v is not None]
        epochs = {r["e"] for r in written if isinstance(r, dict) and "e" in r}  # (lineage trails carry none)
        assert len(written) > 2 and epochs == {6}
        # A generation above every stored fence is the epoch, as before.
        later = stage(store, Emitted())
        await later.assign({0}, epoch=9)
        assert orjson.loads(store.table(0)[fence_key(0)])["e"] == 9

    asyncio.run(run())


def test_a_failed_fence_leaves_no_partition_behind() -> None:
    async def run() -> None:
        class Refused(FakeStore):
            async def fence(self, partitions: set[int], epoch: int) -> None:
                raise Fenced("a newer owner")

        st = stage(Refused(), Emitted())
        with pytest.raises(Fenced):
            await st.assign({0, 1}, epoch=1)
        assert st.partitions == {}

    asyncio.run(run())


def test_a_batch_is_split_by_partition_in_order_skipping_error_events(caplog: pytest.LogCaptureFixture) -> None:
    """Runs of one partition, interleaved, come out per partition in their order; an error
    event is logged and is no record."""
    from app.runtime.runner import by_partition

    class ErrorEvent(Msg):
        def error(self) -> str:  # type: ignore[override]
            return "partition EOF"

    msgs = [Msg(0, 5, b""), Msg(0, 6, b""), Msg(2, 1, b""), ErrorEvent(1, 0, b""), Msg(0, 7, b""),
            Msg(2, 2, b""), Msg(2, 3, b"")]
    with caplog.at_level("WARNING"):
        batch = by_partition(msgs, "governance")  # type: ignore[arg-type]
    assert {p: [m.offset() for m in ms] for p, ms in batch.items()} == {0: [5, 6, 7], 2: [1, 2, 3]}
    assert "governance consumer: partition EOF" in caplog.text
    assert by_partition([], "governance") == {}


@pytest.mark.parametrize(("name", "value"), [
    ("type", ["ItemScanned"]), ("type", {"a": 1}), ("type", 7), ("type", None), ("type", "Bogus"),
    ("event_id", ["x"]), ("event_id", {"a": 1}), ("event_id", 7), ("source", ["erp"]), ("occurred_at", ["x"]),
    ("order_id", ["O-2"]), ("warehouse_id", {"w": 1}),
])
def test_a_record_with_a_field_of_any_json_shape_is_dead_lettered_not_a_crash(name: str, value: object) -> None:
    """Bad input (rule 8) of any JSON shape goes to the dead letters with its reason, and
    the records around it are processed and committed: a ``type`` that is a list or an
    object (no member of a set of names) once raised in the stage's lineage step before
    the core saw the record, and an ``event_id`` that is one raised in the batch's flush
    (an entry's (kind, id) is a set member there)."""
    async def run() -> None:
        store, emitted = FakeStore(), Emitted()
        st = stage(store, emitted)
        await st.assign({0}, epoch=1)
        bad = orjson.loads(release(2))
        bad[name] = value
        await st.process({0: [Msg(0, 0, release(1)), Msg(0, 1, orjson.dumps(bad)), Msg(0, 2, release(3))]}, {0: 3})
        assert emitted.accepted() == ["O-1", "O-3"]
        dead = [o for o in emitted.outputs if isinstance(o, DeadLetter)]
        assert len(dead) == 1 and f"'{name}'" in dead[0].reason
        assert st.committed() == {0: 3}
        if name in ("type", "event_id") and not isinstance(value, str):
            # the order's trail has the core's exception for the record, not an entry of its own
            o2 = next(v for k, v in store.table(0).items() if b'"O-2"' in k and b"\x1fl\x1f" in k)
            assert [e["kind"] for e in orjson.loads(o2)] == ["exception"]

    asyncio.run(run())
