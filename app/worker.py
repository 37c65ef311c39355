"""`syncgov worker`: the stateful Faust worker.

With ``KAFKA_BOOTSTRAP_SERVERS`` empty it starts the embedded broker first
(the demo default); otherwise it joins the configured cluster.
"""
from __future__ import annotations

import os
import sys

from app import settings as settings_module


def faust_argv(settings: settings_module.Settings, argv: list[str] | None = None) -> list[str]:
    """The command line for Faust's worker; LOG_LEVEL in Faust's spelling (``warn``)."""
    level = {"warning": "warn"}.get(settings.worker.log_level, settings.worker.log_level)
    return ["syncgov", "worker", "--loglevel", level, *(argv or [])]


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
