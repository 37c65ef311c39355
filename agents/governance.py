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

from faust.types import TP

from agents._failfast import or_exit
from agents._outputs import emit, produce_outputs
from app.faust_app import OWNERSHIP, SETTINGS, app, ownership_topic
from app.kafka_io import client_config
from app.runtime import faust_adapter
from app.runtime.faust_adapter import AnyTable
from app.runtime.runner import StageRunner, confluent_reader
from app.runtime.statestore import AtLeastOnceWriter, BatchWriter
from app.runtime.transactions import (
    PartitionProducers,
    TransactionalWriter,
    confluent_transactional,
    fence_before_restore,
    last_committed_offsets,
)
from app.settings import exactly_once
from app.stages.governance import GovernanceStage
from app.stages.inventory import InventoryStage
from app.topics import dead_letters, events, exceptions, milestones, stock
from tables.inventory import inventory_state
from tables.state import CLOCK, TableStore, core_settings, governance_state

log = logging.getLogger(__name__)
_OWNERSHIP_TOPIC = ownership_topic.get_topic_name()


def stage_writers(stages: dict[str, tuple[AnyTable, str]]) -> dict[str, BatchWriter]:
    """Each stage's writer (by stage name; its state table and input topic), from the
    settings: with ``WORKER_EXACTLY_ONCE`` a ``TransactionalWriter`` per stage, Faust's
    consumer reading committed records only and every restore fencing the previous owners
    first; else outputs then state (``AtLeastOnceWriter``)."""
    s = SETTINGS
    if not exactly_once(s):
        return {name: AtLeastOnceWriter(TableStore(table, topic, OWNERSHIP), emit) for name, (table, topic) in stages.items()}
    config = client_config(s.kafka.bootstrap_servers, s.kafka)
    make = confluent_transactional(config)
    writers: dict[str, BatchWriter] = {}
    producers: dict[str, PartitionProducers] = {}
    for name, (table, topic) in stages.items():
        mine = PartitionProducers(f"{s.worker.app_id}-{name}", make)
        producers[faust_adapter.changelog_topic_name(table)] = mine
        writers[name] = TransactionalWriter(table=table, topic=topic, ownership=OWNERSHIP, producers=mine,
                                            produce_outputs=produce_outputs, threads=s.topics.partitions)
    faust_adapter.install_read_committed()
    faust_adapter.install_transactional_restore(fence_before_restore(producers),
                                                last_committed_offsets(config, producers))
    log.info("exactly-once: Kafka transactions per stage and input partition (%s)", ", ".join(stages))
    return writers


def build_runners() -> list[StageRunner]:
    """The governance and inventory stages, each with its runner, from the settings."""
    s = SETTINGS
    config = client_config(s.kafka.bootstrap_servers, s.kafka)
    core = core_settings()
    writers = stage_writers({
        GovernanceStage.name: (governance_state, s.topics.events),
        InventoryStage.name: (inventory_state, s.topics.stock),
    })
    governance = GovernanceStage(
        topic=s.topics.events,
        writer=writers[GovernanceStage.name],
        settings=core,
        idle_partition_s=s.worker.idle_partition_s,
        batch_clock=CLOCK,
    )
    inventory = InventoryStage(
        topic=s.topics.stock,
        writer=writers[InventoryStage.name],
        settings=core,
        sources=s.topics.partitions,
    )
    size, within = s.worker.batch_size, s.worker.batch_within_s
    return [
        StageRunner(governance, OWNERSHIP, confluent_reader(config, f"{s.worker.app_id}-events"), size, within),
        StageRunner(inventory, OWNERSHIP, confluent_reader(config, f"{s.worker.app_id}-stock"), size, within),
    ]


RUNNERS = build_runners()


@app.agent(ownership_topic)
async def own_partitions(stream: AsyncIterable[bytes]) -> None:
    """Subscribes the worker to the ownership topic (never written): Faust's assignment
    of its partitions is the partition ownership of every stage."""
    async for _ in stream:
        pass


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's handler type wants *args; this signal sends one
async def _revoked(sender: object, revoked: set[TP], **_: object) -> None:
    """Each stage finishes its batch in flight, then drops the revoked partitions."""
    partitions = {tp.partition for tp in revoked if tp.topic == _OWNERSHIP_TOPIC}
    for runner in RUNNERS:
        await runner.on_revoked(partitions)


async def _run_all() -> None:
    for topic in (events, milestones, exceptions, dead_letters, stock):
        await topic.maybe_declare()  # the input may not exist yet; outputs go through confluent-kafka
    await asyncio.gather(*(runner.run() for runner in RUNNERS))


@app.task  # type: ignore[untyped-decorator]  # faust types app.task as a loose Union
async def run_stages() -> None:
    """Run the governance and inventory stages (fail-fast: see agents/_failfast.py)."""
    await or_exit(_run_all(), log, "governance/inventory stages")
