"""How a stage's state lives in a Faust table: read a partition's records, fence the
partitions a worker takes over, commit a batch (outputs first, the meta record last).

See ``tables/records.py`` for the record layout and the crash-consistency rule, and
``app/runtime/ownership.py`` for the lease and the fence.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
