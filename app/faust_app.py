"""The worker's composition root: ``create_app(settings)`` builds the Faust app and
registers everything on it, from one settings object, when called (nothing is wired at
import time; importing this module reads no setting).

- the topics (``app/kafka/topics.py``) and the state tables (``tables/``) are declared on the app;
- partition ownership (``app/runtime/ownership.py``) follows Faust's assignment of a
  never-written ownership topic and the group lease;
- the stages and the ERP sink register as agents and tasks (``agents/``), the web pages
  (``app/web.py``, ``app/opspage.py``) as pages.

Faust's own guarantee stays ``at_least_once``: the stages write their outputs and
changelogs themselves, with Kafka transactions on Apache Kafka (``WORKER_EXACTLY_ONCE``,
``app/runtime/transactions.py``) or outputs first then state on the embedded broker, fenced
either way (``app/runtime/ownership.py``); milestones carry deterministic ids, so the ERP
sink makes their effect exactly-once.
"""
from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.tables.manager import TableManager
from faust.types import TopicT

from app import settings as settings_module
from app.kafka import security as kafka_settings
from app.kafka.clients import client_config
from app.kafka.topics import Topics
from app.runtime import faust_adapter, restore
from app.runtime.faust_adapter import FencedTable
from app.runtime.outputs import OutputProducer
from app.runtime.ownership import Lease, Ownership
from app.settings import Settings
from tables.ledger import Ledger


def broker_credentials(s: Settings) -> Any:
    """Faust credentials for SASL/TLS, or None for PLAINTEXT."""
    k = s.kafka
    context = None
    if k.security_protocol in {"SSL", "SASL_SSL"}:
        context = ssl.create_default_context(cafile=k.ssl_cafile or None)
        if k.ssl_certfile:
            context.load_cert_chain(k.ssl_certfile, k.ssl_keyfile or None)
    if k.security_protocol.startswith("SASL") and k.sasl_mechanism == "OAUTHBEARER":
        return kafka_settings.faust_credentials(k, context)
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.value,
            mechanism=k.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def faust_options(s: Settings) -> dict[str, Any]:
    """Faust settings derived from ours; Tansu's quirks are handled here."""
    if not s.kafka.bootstrap_servers:
        raise settings_module.SettingsError(
            "KAFKA_BOOTSTRAP_SERVERS='': no broker to use (`syncgov worker` starts the embedded one when it is empty)"
        )
    return {
        "broker": [f"kafka://{server.strip()}" for server in s.kafka.bootstrap_servers.split(",")],
        "broker_credentials": broker_credentials(s),
        "broker_session_timeout": s.kafka.session_timeout_s,
        "broker_heartbeat_interval": max(0.5, s.kafka.session_timeout_s / 3),
        "producer_max_batch_size": s.kafka.producer_max_batch_size,
        "producer_linger": s.kafka.producer_linger_ms / 1000,
        "store": s.worker.store,
        "datadir": str(s.worker.data_dir),
        "web_host": s.worker.web_host,
        "web_port": s.worker.web_port,
        "canonical_url": s.worker.canonical_url,
        "web_bind": s.worker.web_host,
        "topic_partitions": s.topics.partitions,
        "topic_replication_factor": s.topics.replication_factor,
        "table_standby_replicas": s.worker.standby_replicas,
        "recovery_consistency_check": s.worker.recovery_consistency_check,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "autodiscover": False,  # create_app registers everything itself
    }


def tables_recovered(app: faust.App) -> bool:
    """Whether the tables have recovered (``app.tables`` is Faust's ``TableManager``; its
    declared type, the abstract ``TableManagerT``, has no ``recovery``)."""
    tables = app.tables
    return isinstance(tables, TableManager) and tables.recovery.completed.is_set()


def faust_assignment(app: faust.App, topic: str) -> Callable[[], set[int] | None]:
    """Faust's view of which partitions this worker owns: its active assignment of
    ``topic``, or None while the group rebalances or the tables recover."""

    def owned() -> set[int] | None:
        if app.rebalancing or app.in_recovery or not tables_recovered(app):
            return None
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}

    return owned


def ownership_topic_name(s: Settings) -> str:
    """The (never written) topic whose assignment decides partition ownership."""
    return f"{s.worker.app_id}-__ownership"


@dataclass(frozen=True)
class Tables:
    """The worker's state tables (RocksDB, changelog-backed): see ``tables/``."""

    governance: FencedTable
    inventory: FencedTable
    ledger: Ledger


@dataclass(frozen=True)
class WorkerApp:
    """The worker's Faust app and what its registrations share, built by ``create_app``."""

    settings: Settings
    app: faust.App
    #: Faust's assignment of this (never written) topic's partitions is the ownership of
    #: partition P of every stage (see app/runtime/ownership.py).
    ownership_topic: TopicT
    ownership: Ownership
    topics: Topics
    tables: Tables
    #: The process's producer (connects on first use): the stages' outputs and the state
    #: tables' changelog records (``app.runtime.statestore.commit_all``).
    producer: OutputProducer


def create_app(settings: Settings) -> WorkerApp:
    """The worker's Faust app with its topics, tables, agents, tasks and pages, from
    ``settings`` alone. The group heartbeat probe is process-wide (``faust_adapter``): the
    last app created renews its lease (a process runs one worker app)."""
    from agents import register as register_agents
    from app import opspage, web
    from app.kafka import topics
    from tables import inventory, ledger, state

    s = settings
    app = faust.App(s.worker.app_id, **faust_options(s))
    ownership_topic = app.topic(
        ownership_topic_name(s),
        key_serializer="raw",
        value_serializer="raw",
        partitions=s.topics.partitions,
        internal=True,
    )
    lease = Lease(s.kafka.session_timeout_s, margin_s=min(1.0, s.kafka.session_timeout_s / 4))
    faust_adapter.install_heartbeat_probe(lease.renew)
    faust_adapter.install_bulk_restore(
        restore.bulk_reader(client_config(s.kafka.bootstrap_servers, s.kafka)) if s.worker.bulk_restore else None)
    ownership = Ownership(
        faust_assignment(app, ownership_topic.get_topic_name()),
        generation=lambda: int(app.consumer_generation_id),
        lease=lease,
        wipe_dir=s.worker.data_dir,
    )
    declared = Tables(
        governance=state.declare(app, s),
        inventory=inventory.declare(app, s),
        ledger=ledger.declare(app, s),
    )
    worker = WorkerApp(s, app, ownership_topic, ownership, topics.declare(app, s), declared, OutputProducer(s))
    register_agents(worker)
    web.register(worker)
    opspage.register(worker)
    return worker
