"""Registers the stages that turn events into milestones: governance (events ->
milestones, dead letters, stock forwards) and inventory (stock -> InventoryAdjusted).

Thin by design: the stages are ``app/stages``, their skeleton and partition lifecycle
``app/runtime/runner.py``, ownership and fencing ``app/runtime/ownership.py``. Faust does
what it does well: group membership and partition assignment (of the ownership topic,
never written), the state tables (RocksDB + changelog, standbys, recovery) and the web.
Each stage reads its topic with a batching confluent-kafka consumer (Faust's stream costs
~200 µs of its own per message; see docs/benchmarks.md), exactly the partitions this
worker owns, from the offset stored with their state.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING

from faust.types import TP

from app.kafka.clients import client_config
from app.runtime import faust_adapter
from app.runtime.failfast import or_exit
from app.runtime.faust_adapter import AnyTable
from app.runtime.outputs import OutputEncoder, OutputProducer
from app.runtime.ownership import Ownership
from app.runtime.runner import StageRunner, confluent_reader
from app.runtime.statestore import AtLeastOnceWriter, BatchClock, BatchWriter, TableStore
from app.runtime.transactions import (
    PartitionProducers,
    TransactionalWriter,
    confluent_transactional,
    fence_before_restore,
    last_committed_offsets,
)
from app.settings import Settings, exactly_once
from app.stages.governance import GovernanceStage
from app.stages.inventory import InventoryStage

if TYPE_CHECKING:
    from app.faust_app import WorkerApp

log = logging.getLogger(__name__)


def stage_writers(s: Settings, ownership: Ownership, stages: dict[str, tuple[AnyTable, str]],
                  producer: OutputProducer) -> dict[str, BatchWriter]:
    """Each stage's writer (by stage name; its state table and input topic), from the
    settings: with ``WORKER_EXACTLY_ONCE`` a ``TransactionalWriter`` per stage, Faust's
    consumer reading committed records only and every restore fencing the previous owners
    first; else outputs then state (``AtLeastOnceWriter``)."""
    if not exactly_once(s):
        return {name: AtLeastOnceWriter(TableStore(table, topic, ownership, producer), producer.queue)
                for name, (table, topic) in stages.items()}
    config = client_config(s.kafka.bootstrap_servers, s.kafka)
    make = confluent_transactional(config)
    encoder = OutputEncoder(s.topics)
    writers: dict[str, BatchWriter] = {}
    producers: dict[str, PartitionProducers] = {}
    for name, (table, topic) in stages.items():
        mine = PartitionProducers(f"{s.worker.app_id}-{name}", make)
        producers[faust_adapter.changelog_topic_name(table)] = mine
        writers[name] = TransactionalWriter(table=table, topic=topic, ownership=ownership, producers=mine,
                                            produce_outputs=encoder.produce, threads=s.topics.partitions)
    faust_adapter.install_read_committed()
    faust_adapter.install_transactional_restore(fence_before_restore(producers),
                                                last_committed_offsets(config, producers))
    log.info("exactly-once: Kafka transactions per stage and input partition (%s)", ", ".join(stages))
    return writers


def build_runners(worker: WorkerApp) -> list[StageRunner]:
    """The governance and inventory stages, each with its runner, from the settings."""
    s, ownership = worker.settings, worker.ownership
    config = client_config(s.kafka.bootstrap_servers, s.kafka)
    core = s.governance.core()
    writers = stage_writers(s, ownership, {
        GovernanceStage.name: (worker.tables.governance, s.topics.events),
        InventoryStage.name: (worker.tables.inventory, s.topics.stock),
    }, worker.producer)
    governance = GovernanceStage(
        topic=s.topics.events,
        writer=writers[GovernanceStage.name],
        settings=core,
        idle_partition_s=s.worker.idle_partition_s,
        batch_clock=BatchClock(),
    )
    inventory = InventoryStage(
        topic=s.topics.stock,
        writer=writers[InventoryStage.name],
        settings=core,
        sources=s.topics.partitions,
    )
    size, within = s.worker.batch_size, s.worker.batch_within_s
    events = StageRunner(governance, ownership, confluent_reader(config, f"{s.worker.app_id}-events"), size, within)
    governance.end_offsets = events.end_offsets  # asked before an empty partition is reported idle
    return [
        events,
        StageRunner(inventory, ownership, confluent_reader(config, f"{s.worker.app_id}-stock"), size, within),
    ]


def register(worker: WorkerApp) -> list[StageRunner]:
    """Register the stages on the worker's app: the ownership agent, the revocation
    handler and the task that runs them. Returns their runners."""
    app, topics = worker.app, worker.topics
    runners = build_runners(worker)
    ownership_topic = worker.ownership_topic.get_topic_name()

    @app.agent(worker.ownership_topic)
    async def own_partitions(stream: AsyncIterable[bytes]) -> None:
        """Subscribes the worker to the ownership topic (never written): Faust's assignment
        of its partitions is the partition ownership of every stage."""
        async for _ in stream:
            pass

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's handler type wants *args; this signal sends one
    async def revoked(sender: object, revoked: set[TP], **_: object) -> None:
        """Each stage finishes its batch in flight, then drops the revoked partitions."""
        partitions = {tp.partition for tp in revoked if tp.topic == ownership_topic}
        for runner in runners:
            await runner.on_revoked(partitions)

    async def run_all() -> None:
        for topic in (topics.events, topics.milestones, topics.exceptions, topics.dead_letters, topics.stock):
            await topic.maybe_declare()  # the input may not exist yet; outputs go through confluent-kafka
        await asyncio.gather(*(runner.run() for runner in runners))

    @app.task  # type: ignore[untyped-decorator]  # faust types app.task as a loose Union
    async def run_stages() -> None:
        """Run the governance and inventory stages (fail-fast: see app/runtime/failfast.py)."""
        await or_exit(run_all(), log, "governance/inventory stages")

    return runners
