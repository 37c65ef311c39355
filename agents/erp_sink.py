"""The ERP sink stage: governed milestones out of Kafka into the ERP, per document in order,
exactly once in effect.

The stage itself is ``app.erp.sink.OrderedErpSink`` (no Faust in it; its docstring has the
design: per-partition lifecycle, per-document order, contiguous-prefix commits, holds,
parking, unknown outcomes, fencing). This module wires it to the worker:

- ``KafkaSource``: its own confluent-kafka consumer of the milestones topic, manual
  assignment, used from one thread; offsets also go to ``<WORKER_APP_ID>-erp-sink`` for lag
  monitoring (never read back: the ledger meta is the truth);
- ``FaustLedger``: the ``erp-ledger`` table (RocksDB + changelog), written through
  ``app.runtime.statestore.commit_all`` with the process's producer (entries first, the
  partition's meta alone and last);
- ``KafkaDeadLetters``: the ERP dead-letter topic;
- ownership: ``owned()`` and ``still_owner(partition)`` come from the worker's one
  ownership model (``app/runtime/ownership.py``): milestones partition P is this worker's
  while it owns partition P of every stage and its group lease holds; a ledger commit
  checks the lease before and after (a fenced commit wipes local state and exits).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import Consumer, TopicPartition
from faust import Table
from faust.types import TopicT

from app.erp import http_client, make_port, quota
from app.erp.sink import Flush, OrderedErpSink, Record, SinkConfig, fence
from app.kafka.clients import client_config, watermarks
from app.runtime import faust_adapter
from app.runtime.failfast import or_exit
from app.runtime.ownership import Ownership
from app.runtime.runner import confluent_reader
from app.runtime.statestore import ChangelogSender, Origin, commit_all
from app.settings import ErpSettings, Settings

if TYPE_CHECKING:
    from app.faust_app import WorkerApp

log = logging.getLogger(__name__)
_T = TypeVar("_T")
#: How often the backlog gauges are recomputed from the partitions' current end offsets.
GAUGES_EVERY_S = 5.0


class KafkaSource:
    """The milestones consumer: manual assignment, every call on one thread."""

    def __init__(self, s: Settings) -> None:
        self.topic = s.topics.milestones
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="erp-sink-reader")
        self.consumer: Consumer = confluent_reader(
            client_config(s.kafka.bootstrap_servers, s.kafka), f"{s.worker.app_id}-erp-sink"
        )()
        self.partitions: set[int] = set()

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def assign(self, starts: Mapping[int, int]) -> None:
        await self._call(self.consumer.assign, [TopicPartition(self.topic, p, max(0, o)) for p, o in starts.items()])
        self.partitions = set(starts)

    async def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        msgs = await self._call(self.consumer.consume, max_records, timeout_s)
        out = []
        for msg in msgs:
            if msg.error() is not None:
                log.warning("milestones consumer: %s", msg.error())
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None:  # never so for a message without an error
                continue
            _, ts = msg.timestamp()
            out.append(Record(partition, offset, msg.key(), msg.value() or b"", ts if ts > 0 else None))
        return out

    async def pause(self, partitions: Collection[int]) -> None:
        await self._call(self.consumer.pause, [TopicPartition(self.topic, p) for p in partitions])

    async def resume(self, partitions: Collection[int]) -> None:
        await self._call(self.consumer.resume, [TopicPartition(self.topic, p) for p in partitions])

    async def ends(self, partitions: Collection[int]) -> dict[int, int]:
        def query() -> dict[int, int]:
            out = {}
            for p in partitions:
                out[p] = watermarks(self.consumer, self.topic, p)[1]
            return out

        return await self._call(query)

    def cached_end(self, partition: int) -> int | None:
        if partition not in self.partitions:
            return None
        _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
        return high if high >= 0 else None

    async def commit(self, offsets: Mapping[int, int]) -> None:
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        await self._call(lambda: self.consumer.commit(offsets=tps, asynchronous=True))

    async def close(self) -> None:
        await self._call(self.consumer.close)
        self.executor.shutdown(wait=False)


class FaustLedger:
    """The ``erp-ledger`` table, read and written in one milestones partition's store."""

    def __init__(self, table: Table[bytes, bytes], topic: str, ownership: Ownership, changelog: ChangelogSender) -> None:
        faust_adapter.raw_changelog(table)  # else the records sent would not be what Faust restores
        self.table, self.topic, self.ownership, self.changelog = table, topic, ownership, changelog

    def get(self, partition: int, key: bytes) -> bytes | None:
        return faust_adapter.partition_get(self.table, partition, key)

    async def commit(self, partition: int, offset: int, flush: Flush) -> None:
        await commit_all([(Origin(self.topic, partition, offset), flush)], self.table, self.changelog, self.ownership)


class KafkaDeadLetters:
    def __init__(self, topic: TopicT) -> None:
        self.topic = topic

    async def send(self, key: bytes | None, value: bytes) -> None:
        await (await self.topic.send(key=key, value=value))


def config(erp: ErpSettings) -> SinkConfig:
    return SinkConfig(
        max_retries=erp.max_retries,
        park_after_s=erp.park_after_s,
        backoff_base_s=erp.backoff_base_s,
        backoff_cap_s=erp.backoff_cap_s,
        settle_s=erp.timeout_s,  # the stated bound: an ERP write ends within ERP_TIMEOUT_S (docs/erp.md)
    )


async def run_sink(worker: WorkerApp) -> None:
    s, ownership, topics = worker.settings, worker.ownership, worker.topics
    await topics.milestones.maybe_declare()
    await topics.erp_dead_letters.maybe_declare()
    port = make_port(quota.sink_settings(s), before_send=fence(ownership.still_owner))  # no request for a partition no longer ours
    owned = quota.follow(http_client(port), s, ownership.owned)  # ERP_QUOTA_PER_S: the share follows ownership
    sink = OrderedErpSink(port, KafkaSource(s), FaustLedger(worker.tables.ledger.table, s.topics.milestones, ownership,
                                                                 worker.producer),
                          KafkaDeadLetters(topics.erp_dead_letters),
                          owned=owned, still_owner=ownership.still_owner, config=config(s.erp))
    gauges = asyncio.create_task(sink.refresh_gauges_every(GAUGES_EVERY_S))
    try:
        await sink.run()
    finally:
        gauges.cancel()
        await port.close()


def register(worker: WorkerApp) -> None:
    @worker.app.task  # type: ignore[untyped-decorator]  # faust types app.task as a loose Union
    async def post_to_erp() -> None:
        """Milestones topic -> ERP (fail-fast: an unexpected error exits the worker; every
        outcome not in the ledger is redone from the stored offset after the restart)."""
        await or_exit(run_sink(worker), log, "ERP sink")
