"""The governance state table (RocksDB via rocksdict, backed by a changelog topic).

One table holds every input partition's state under a ``<partition>`` key prefix
(orders with their held events, inventory windows, returns, dedup logs, meta); see
``tables/records.py`` for the record layout and the crash-consistency rule.
"""
from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from faust.streams import _current_event
from faust.types import EventT
from faust.types.tuples import FutureMessage
from faust.tables import Table

from app.core.model import CoreSettings
from app.faust_app import SETTINGS, app
from tables.records import PartitionState, Write, prefix

governance_state = app.Table(
    "governance-state",
    default=None,
    key_type=bytes,  # bytes types select Faust's "raw" codec: we encode with orjson ourselves
    value_type=bytes,
    partitions=SETTINGS.topics.partitions,
    help="Per-partition governance state: orders, windows, returns, dedup logs, meta.",
)


def core_settings() -> CoreSettings:
    g = SETTINGS.governance
    return CoreSettings(
        dedup_retention_ms=int(g.dedup_retention_s * 1000),
        hold_window_ms=int(g.hold_window_s * 1000),
        window_size_ms=int(g.window_size_s * 1000),
        window_grace_ms=int(g.window_grace_s * 1000),
        future_tolerance_ms=int(g.future_tolerance_s * 1000),
    )


class BatchClock:
    """The wall clock (int ms) of the `future` check, read once per batch (the check's
    tolerance is minutes; a clock call per event cost ~3 % of the worker)."""

    def __init__(self) -> None:
        self.now_ms = int(time.time() * 1000)

    def tick(self) -> None:
        self.now_ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now_ms


CLOCK = BatchClock()


def records(table: Table, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """The (recovered) records of one partition's state. Faust's RocksDB store keeps one
    database per partition: only that one is read (keys and values are stored as given,
    the table's codecs being raw), not every partition's."""
    start = prefix(partition)
    store = table.data
    if hasattr(store, "_db_for_partition"):
        items = store._visible_items(store._db_for_partition(partition))
    else:  # memory://
        items = table.items()
    for key, value in items:
        if key.startswith(start) and value is not None:
            yield key, value


def load_partition(partition: int) -> PartitionState:
    """Build a partition's engine from the (recovered) table."""
    return PartitionState(partition, core_settings(), CLOCK, records(governance_state, partition))


@dataclass(frozen=True)
class Origin:
    """Where a record came from; stands in for a Faust event (``.message``) so a batch read
    outside Faust's streams writes to its partition's table store and changelog."""

    topic: str
    partition: int
    offset: int

    @property
    def message(self) -> Origin:
        return self


def bind(event: EventT | Origin) -> None:
    """Make ``event`` current: table reads and writes go to its partition."""
    _current_event.set(weakref.ref(event))


Flush = Callable[[Callable[[bytes], bytes | None]], list[Write]]


async def commit_all(commits: list[tuple[EventT | Origin, Flush]], table: Table) -> None:
    """Store a batch: per partition, ``flush(previous)`` gives its writes in order, the
    last being its commit record (the meta). Every other write goes first; once the
    broker has acknowledged them all (their own send futures: Faust's ``producer.flush``
    may return while records still sit in its buffer), the commit records go, each alone in
    its producer batch, and are waited for; a failed send raises. Tansu reports a partition's end as the base offset of its last batch
    + 1, so a single-record batch last keeps a batching producer's changelog fully
    recoverable; on any broker the state is on Kafka before the input is acked.

    Writes run under their partition's event: Faust reads and writes a table in the
    store and changelog partition of the current event, so ``previous`` sees it too."""
    finals: list[tuple[EventT | Origin, Write]] = []
    sent: list[FutureMessage] = []
    for event, flush in commits:
        bind(event)
        writes = flush(table.get)
        sent += _apply(table, writes[:-1])
        finals.append((event, writes[-1]))
    await asyncio.gather(*sent)
    sent = []
    for event, final in finals:
        bind(event)
        sent += _apply(table, [final])
    await asyncio.gather(*sent)


def _apply(table: Table, writes: list[Write]) -> list[FutureMessage]:
    """What ``table[key] = value`` (or ``del``) does, keeping the changelog send's future."""
    futures = []
    for key, value in writes:
        partition = table.partition_for_key(key)  # the current event's
        if value is None:
            futures.append(table.send_changelog(partition, key, None, value_serializer="raw"))
            table.data.pop(key, None)
        else:
            futures.append(table.send_changelog(partition, key, value))
            table.data[key] = value
    return futures
