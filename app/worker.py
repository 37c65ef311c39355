"""`syncgov worker`: the stateful Faust worker.

With ``KAFKA_BOOTSTRAP_SERVERS`` empty it starts the embedded broker first
(the demo default); otherwise it joins the configured cluster. Before Faust starts it
creates every topic it uses that is missing and checks that the ones it reads or
co-partitions have ``TOPIC_PARTITIONS`` partitions (``app.kafka_io.worker_topics``):
Faust subscribes only to topics that exist when it starts, and a producer writing to a
missing topic would have it auto-created with the broker's default partition count.
"""
from __future__ import annotations

import os
import sys

from app import settings as settings_module


def faust_argv(settings: settings_module.Settings, argv: list[str] | None = None) -> list[str]:
    """The command line for Faust's worker; LOG_LEVEL in Faust's spelling (``warn``)."""
    level = {"warning": "warn"}.get(settings.worker.log_level, settings.worker.log_level)
    return ["syncgov", "worker", "--loglevel", level, *(argv or [])]


def prepare_topics(settings: settings_module.Settings, wait_s: float | None = None) -> int:
    """Create the worker's missing topics and check the layout; 0, or the exit code after a
    clear line on stderr (2: topics laid out wrong, 3: Kafka unreachable within the bound or
    refusing to create a topic)."""
    from confluent_kafka import KafkaException

    from app.kafka_io import STARTUP_WAIT_S, KafkaUnavailable, TopicLayoutError, ensure_topics, worker_topics

    s = settings
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or s.kafka.bootstrap_servers
    try:
        created = ensure_topics(bootstrap, worker_topics(s), s.topics.partitions, s.topics.replication_factor,
                                s.kafka, wait_s=STARTUP_WAIT_S if wait_s is None else wait_s)
    except TopicLayoutError as exc:
        print(f"syncgov: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    except KafkaUnavailable as exc:
        print(f"syncgov: cannot start: {exc}", file=sys.stderr, flush=True)
        return 3
    except KafkaException as exc:  # e.g. no Create permission on a missing topic
        print(f"syncgov: cannot start: creating the worker's topics on {bootstrap} failed: {exc}",
              file=sys.stderr, flush=True)
        return 3
    if created:
        print(f"syncgov: created topics {', '.join(created)} ({s.topics.partitions} partitions, "
              f"replication factor {s.topics.replication_factor})", file=sys.stderr, flush=True)
    return 0


def run_worker(argv: list[str] | None = None) -> int:
    """Validate settings, start the embedded broker if needed, then run Faust's worker."""
    settings = settings_module.load()
    broker = None
    if not settings.kafka.bootstrap_servers:
        from app.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        print(f"syncgov: embedded broker at {broker.bootstrap}", file=sys.stderr, flush=True)
    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    code = prepare_topics(settings)
    if code:
        if broker is not None:
            broker.stop()
        return code
    from app.faust_app import app

    sys.argv = faust_argv(settings, argv)
    try:
        app.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if broker is not None:
            broker.stop()
    return 0
