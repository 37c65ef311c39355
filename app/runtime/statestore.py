"""How a stage's state lives in a Faust table: read a partition's records, fence the
partitions a worker takes over, commit a batch (outputs first, the meta record last).

A stage writes through one ``BatchWriter``: its outputs and its state changes of a batch
in one call. Two implementations, one chosen per worker from ``WORKER_EXACTLY_ONCE``:
``AtLeastOnceWriter`` (here: outputs sent and waited for, then the state with its input
offset, meta last; fenced by lease + epoch) and
``app.runtime.transactions.TransactionalWriter`` (one Kafka transaction per input
partition: outputs, changelog records and offset commit atomically; fenced by the broker).

See ``tables/records.py`` for the record layout and the crash-consistency rule, and
``app/runtime/ownership.py`` for the lease and the fence.
"""
from __future__ import annotations

import asyncio
import functools
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from app import metrics
from app.core.engine import Output
from app.core.stock import Mark
from app.runtime import faust_adapter
from app.runtime.faust_adapter import AnyTable
from app.runtime.outputs import Deliveries
from app.runtime.ownership import Ownership
from tables.records import Write, fence_write, prefix


class BatchClock:
    """The wall clock (int ms) of the `future` check, read once per batch (the check's
    tolerance is minutes; a clock call per event cost ~3 % of the worker).

    The core calls ``read`` for every event: a C-level callable (a ``partial`` of
    ``getitem`` over a one-slot list), ~40 ns a call against ~95 ns for this object's
    own ``__call__``, a Python method."""

    def __init__(self) -> None:
        self._now = [int(time.time() * 1000)]
        self.read = cast("Callable[[], int]", functools.partial(operator.getitem, self._now, 0))

    @property
    def now_ms(self) -> int:
        return self._now[0]

    def tick(self) -> None:
        self._now[0] = int(time.time() * 1000)

    def __call__(self) -> int:
        return self._now[0]


def records(table: AnyTable, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """The (recovered) records of one partition's state (keys and values are stored as
    given, the table's codecs being raw)."""
    start = prefix(partition)
    for key, value in faust_adapter.partition_items(table, partition):
        if key.startswith(start):
            yield key, value


@dataclass(frozen=True)
class Origin:
    """Where a record came from (topic, partition, offset)."""

    topic: str
    partition: int
    offset: int


bind = faust_adapter.bind

Flush = Callable[[Callable[[bytes], bytes | None]], list[Write]]
#: A batch's outputs, each with the input record it came from.
Outputs = list[tuple[Output, Origin]]
#: Queue outputs and marks for sending, in order, without waiting; the broker's answers go
#: to the returned ``Deliveries`` (``app.runtime.outputs.OutputProducer.queue``).
Queue = Callable[[Outputs, list[Mark]], Deliveries]
#: Per partition of a batch: (partition, last input offset, the flush of its state).
Commits = list[tuple[int, int, Flush]]


class StateStore(Protocol):
    """A stage's table without transactions (``TableStore`` or a test fake)."""

    def records(self, partition: int) -> Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]: ...
    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def check(self) -> None: ...
    async def fence(self, partitions: set[int], epoch: int) -> None: ...
    async def commit(self, commits: Commits, sent: Deliveries) -> None: ...


class BatchWriter(Protocol):
    """Where a stage reads its partitions' state and writes each batch's outputs and state."""

    def records(self, partition: int) -> Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]:
        """The stored records of one partition's state."""

    def get(self, partition: int, key: bytes) -> bytes | None:
        """One stored record of one partition's state (a lazy load reads them one by one)."""

    async def fence(self, partitions: set[int], epoch: int) -> None:
        """Take partitions over: fence their previous owner, write the fence records."""

    def forget(self, partitions: set[int]) -> None:
        """The partitions are no longer this stage's (revoked, or dropped after a failure;
        after ``settle``)."""

    async def write(self, outputs: Outputs, marks: list[Mark], commits: Commits,
                    on_committed: Callable[[], None] | None = None) -> None:
        """One batch: its outputs and marks, and per partition its state up to its last
        offset; ``on_committed`` runs once it is committed. Raises ``Fenced`` (not written)
        or ``BatchAborted`` (nothing of an aborted partition written): the runner drops the
        stage's state and re-reads from the stored offsets. A writer may return before the
        batch has committed (``TransactionalWriter``: the commit overlaps the next batch's
        work); its failure is then raised by the next ``write`` or ``settle``."""

    async def settle(self) -> None:
        """Wait until every batch written so far has committed; raise the failure of one
        that did not. Before a lifecycle step (fence, drop, re-seek, stop)."""


async def write_fences(table: AnyTable, topic: str, partitions: set[int], epoch: int, ownership: Ownership) -> None:
    """Fence partitions this worker takes over: their records of older epochs that come
    later in the changelog are skipped by every restore (``FencedTable``)."""
    if not partitions:
        return
    ownership.check()
    sent = []
    for partition in sorted(partitions):
        bind(Origin(topic, partition, -1))
        sent += faust_adapter.send_writes(table, [fence_write(partition, epoch)])
        if isinstance(table, faust_adapter.FencedTable):
            table.note_fence(partition, epoch)
    await asyncio.gather(*sent)
    ownership.after_commit(f"{table.name} fence")


class ChangelogSender(Protocol):
    """A producer for a table's changelog records (``app.runtime.outputs.OutputProducer``):
    ``send`` queues one record, the broker's answer going to ``deliveries``; ``flush``
    waits until the broker has every queued record, and raises if one of ``deliveries``
    failed."""

    def send(self, topic: str, key: bytes, value: bytes | None, partition: int, deliveries: Deliveries) -> None: ...
    async def flush(self, deliveries: Deliveries) -> None: ...


async def commit_all(commits: list[tuple[Origin, Flush]], table: AnyTable, changelog: ChangelogSender,
                     ownership: Ownership | None = None, sent: Deliveries | None = None) -> None:
    """Store a batch: per partition, ``flush(previous)`` gives its writes in order, the
    last being its commit record (the meta). They go to the table's changelog through
    ``changelog`` (the process's confluent-kafka producer; exactly the bytes Faust would
    write: ``faust_adapter.raw_changelog``): every other write first, acknowledged; then
    each partition's commit record, alone in its producer batch, acknowledged. Tansu
    reports a partition's end as the base offset of its last batch + 1, so a single
    record batch last keeps the changelog fully recoverable; on any broker the state is on
    Kafka before the input is acked. Only then are the writes applied to the local store,
    with the offset of each partition's last record as its persisted offset
    (``faust_adapter.apply_committed``, as after Faust's own sends): a failed send leaves
    the store as it was, and the batch is redone from the stored offset.

    With ``ownership``, the lease is checked before anything is written (``Fenced``), and
    after the commit (a commit that may have raced a new owner wipes and exits).
    ``previous`` reads each partition's own store (``faust_adapter.partition_reader``). ``sent``: records queued
    before (the batch's outputs, through the same producer): they are acknowledged in the
    first round, with the other writes, so before any commit record (two round trips a
    batch, not three)."""
    deliveries = sent if sent is not None else Deliveries()
    if not commits:
        if sent is not None:
            await changelog.flush(deliveries)
        return
    if ownership is not None:
        ownership.check()
    topic = faust_adapter.changelog_topic_name(table)
    batches: list[tuple[Origin, list[Write]]] = []
    for origin, flush in commits:
        writes = flush(faust_adapter.partition_reader(table, origin.partition))
        batches.append((origin, writes))
        for key, value in writes[:-1]:
            changelog.send(topic, key, value, origin.partition, deliveries)
    await changelog.flush(deliveries)
    for origin, writes in batches:
        key, value = writes[-1]
        changelog.send(topic, key, value, origin.partition, deliveries)
    await changelog.flush(deliveries)
    for origin, writes in batches:
        faust_adapter.apply_committed(table, origin, writes, deliveries.offsets.get((topic, origin.partition)))
    if ownership is not None:
        ownership.after_commit(f"{table.name} batch")


class TableStore:
    """A stage's state table as the stage sees it: load a partition, fence partitions,
    commit a batch through ``changelog`` (``commit_all``; tests give a stage an in-memory
    fake of the same three methods)."""

    def __init__(self, table: AnyTable, topic: str, ownership: Ownership, changelog: ChangelogSender) -> None:
        faust_adapter.raw_changelog(table)  # else the records sent would not be what Faust restores
        self.table = table
        self.topic = topic
        self.ownership = ownership
        self.changelog = changelog

    def records(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return records(self.table, partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        return faust_adapter.partition_get(self.table, partition, key)

    def check(self) -> None:
        """Raise ``Fenced`` unless this worker may still write (call before emitting)."""
        self.ownership.check()

    async def fence(self, partitions: set[int], epoch: int) -> None:
        await write_fences(self.table, self.topic, partitions, epoch, self.ownership)

    async def commit(self, commits: list[tuple[int, int, Flush]], sent: Deliveries) -> None:
        """``(partition, last offset, flush)`` per partition of the batch; ``sent``: the
        batch's outputs, queued, acknowledged before any commit record."""
        origins = [(Origin(self.topic, partition, offset), flush) for partition, offset, flush in commits]
        await commit_all(origins, self.table, self.changelog, self.ownership, sent)


class AtLeastOnceWriter:
    """Outputs first, then the state (``StateStore.commit``): the outputs are queued, and
    acknowledged with the state's other writes before any commit record (meta) is sent; a
    crash before the meta re-emits outputs with the same ids, never loses one. Fenced by
    the lease (checked before each step) and the epoch (``FencedTable``)."""

    def __init__(self, store: StateStore, queue: Queue) -> None:
        self.store = store
        self.queue = queue

    def records(self, partition: int) -> Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]:
        return self.store.records(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.store.get(partition, key)

    async def fence(self, partitions: set[int], epoch: int) -> None:
        await self.store.fence(partitions, epoch)

    def forget(self, partitions: set[int]) -> None:
        pass

    async def settle(self) -> None:
        pass  # every write has committed when it returns

    async def write(self, outputs: Outputs, marks: list[Mark], commits: Commits,
                    on_committed: Callable[[], None] | None = None) -> None:
        sent = Deliveries()
        if outputs or marks:
            self.store.check()  # a fenced worker emits nothing (its batch is redone by the owner)
            sent = self.queue(outputs, marks)
        await self.store.commit(commits, sent)
        if outputs or marks or commits:
            metrics.LAST_COMMIT.set(time.time())
        if on_committed is not None:
            on_committed()
