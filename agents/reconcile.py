"""Periodic reconciliation on the leader worker (see app/reconcile.py): drift gauges
for Prometheus and SyncDrift records for old drift. Off when the ERP sink is off."""
from __future__ import annotations

import logging

from app import metrics, reconcile
from app.faust_app import SETTINGS, app
from tables import ledger

log = logging.getLogger(__name__)

if SETTINGS.erp.sink_enabled:
    for _outcome in ("success", "failure"):  # exported (at 0) only where reconciliation runs: the alerts' guard
        metrics.RECONCILE_RUNS.labels(_outcome)

    @app.timer(SETTINGS.reconcile.interval_s, on_leader=True)  # type: ignore[untyped-decorator]  # faust: returns a bare Callable
    async def reconcile_with_erp() -> None:
        """One reconciliation; a failure leaves the gauges as they were and the next tick retries."""
        try:
            report = await reconcile.run(SETTINGS, SETTINGS.reconcile, ledger=ledger.entry)
        except Exception:
            metrics.RECONCILE_RUNS.labels("failure").inc()
            log.warning("reconciliation failed", exc_info=True)
            return
        metrics.RECONCILE_RUNS.labels("success").inc()
        log.info("reconciliation: drift %s, %d SyncDrift published", report.counts(), len(report.published))
