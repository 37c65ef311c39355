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
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.core.engine import Output
from app.core.stock import Mark
from app.runtime import faust_adapter
from app.runtime.faust_adapter import AnyTable
from app.runtime.ownership import Ownership
from tables.records import Write, fence_write, prefix


class BatchClock:
    """The wall clock (int ms) of the `future` check, read once per batch (the check's
    tolerance is minutes; a clock call per event cost ~3 % of the worker)."""

    def __init__(self) -> None:
        self.now_ms = int(time.time() * 1000)

    def tick(self) -> None:
        self.now_ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now_ms



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
#: Send outputs and marks and wait until the broker has them (``agents._outputs.emit``).
Emit = Callable[[Outputs, list[Mark]], Awaitable[None]]
#: Per partition of a batch: (partition, last input offset, the flush of its state).
Commits = list[tuple[int, int, Flush]]


class StateStore(Protocol):
    """A stage's table without transactions (``TableStore`` or a test fake)."""

    def records(self, partition: int) -> Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]: ...
    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def check(self) -> None: ...
    async def fence(self, partitions: set[int], epoch: int) -> None: ...
    async def commit(self, commits: Commits) -> None: ...


class BatchWriter(Protocol):
    """Where a stage reads its partitions' state and writes each batch's outputs and state."""

    def records(self, partition: int) -> Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]:
        """The stored records of one partition's state."""

    def get(self, partition: int, key: bytes) -> bytes | None:
        """One stored record of one partition's state (a lazy load reads them one by one)."""

    async def fence(self, partitions: set[int], epoch: int) -> None:
        """Take partitions over: fence their previous owner, write the fence records."""

    def forget(self, partitions: set[int]) -> None:
        """The partitions are no longer this stage's (revoked, or dropped after a failure)."""

    async def write(self, outputs: Outputs, marks: list[Mark], commits: Commits) -> None:
        """One batch: its outputs and marks, and per partition its state up to its last
        offset. Raises ``Fenced`` (not written) or ``BatchAborted`` (nothing of an aborted
        partition written): the runner drops the stage's state and re-reads from the
        stored offsets."""


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


async def commit_all(commits: list[tuple[Origin, Flush]], table: AnyTable, ownership: Ownership | None = None) -> None:
    """Store a batch: per partition, ``flush(previous)`` gives its writes in order, the
    last being its commit record (the meta). Every other write goes first; once the
    broker has acknowledged them all (their own send futures), the commit records go,
    each alone in its producer batch, and are waited for; a failed send raises. Tansu
    reports a partition's end as the base offset of its last batch + 1, so a
    single-record batch last keeps a batching producer's changelog fully recoverable; on
    any broker the state is on Kafka before the input is acked.

    With ``ownership``, the lease is checked before anything is written (``Fenced``), and
    after the commit (a commit that may have raced a new owner wipes and exits).
    Writes run under their partition (``bind``), so ``previous`` reads that partition."""
    if not commits:
        return
    if ownership is not None:
        ownership.check()
    finals: list[tuple[Origin, Write]] = []
    sent = []
    for origin, flush in commits:
        bind(origin)
        writes = flush(table.get)
        sent += faust_adapter.send_writes(table, writes[:-1])
        finals.append((origin, writes[-1]))
    await asyncio.gather(*sent)
    sent = []
    for origin, final in finals:
        bind(origin)
        sent += faust_adapter.send_writes(table, [final])
    await asyncio.gather(*sent)
    if ownership is not None:
        ownership.after_commit(f"{table.name} batch")


class TableStore:
    """A stage's state table as the stage sees it: load a partition, fence partitions,
    commit a batch (tests give a stage an in-memory fake of the same three methods)."""

    def __init__(self, table: AnyTable, topic: str, ownership: Ownership) -> None:
        self.table = table
        self.topic = topic
        self.ownership = ownership

    def records(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return records(self.table, partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        return faust_adapter.partition_get(self.table, partition, key)

    def check(self) -> None:
        """Raise ``Fenced`` unless this worker may still write (call before emitting)."""
        self.ownership.check()

    async def fence(self, partitions: set[int], epoch: int) -> None:
        await write_fences(self.table, self.topic, partitions, epoch, self.ownership)

    async def commit(self, commits: list[tuple[int, int, Flush]]) -> None:
        """``(partition, last offset, flush)`` per partition of the batch."""
        await commit_all(
            [(Origin(self.topic, partition, offset), flush) for partition, offset, flush in commits],
            self.table,
            self.ownership,
        )


class AtLeastOnceWriter:
    """Outputs first, sent and waited for, then the state (``StateStore.commit``: meta
    last): a crash in between re-emits outputs with the same ids, never loses one. Fenced
    by the lease (checked before each step) and the epoch (``FencedTable``)."""

    def __init__(self, store: StateStore, emit: Emit) -> None:
        self.store = store
        self.emit = emit

    def records(self, partition: int) -> Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]:
        return self.store.records(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.store.get(partition, key)

    async def fence(self, partitions: set[int], epoch: int) -> None:
        await self.store.fence(partitions, epoch)

    def forget(self, partitions: set[int]) -> None:
        pass

    async def write(self, outputs: Outputs, marks: list[Mark], commits: Commits) -> None:
        if outputs or marks:
            self.store.check()  # a fenced worker emits nothing (its batch is redone by the owner)
            await self.emit(outputs, marks)
        await self.store.commit(commits)
