"""Periodic reconciliation on the leader worker (see app/erp/reconcile.py): drift gauges
for Prometheus and SyncDrift records for old drift (registered only with the ERP sink on)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app import metrics
from app.erp import reconcile

if TYPE_CHECKING:
    from app.faust_app import WorkerApp

log = logging.getLogger(__name__)


def register(worker: WorkerApp) -> None:
    s, ledger = worker.settings, worker.tables.ledger
    for outcome in ("success", "failure"):  # exported (at 0) only where reconciliation runs: the alerts' guard
        metrics.RECONCILE_RUNS.labels(outcome)

    @worker.app.timer(s.reconcile.interval_s, on_leader=True)  # type: ignore[untyped-decorator]  # faust: returns a bare Callable
    async def reconcile_with_erp() -> None:
        """One reconciliation; a failure leaves the gauges as they were and the next tick retries."""
        try:
            report = await reconcile.run(s, s.reconcile, ledger=ledger.entry)
        except Exception:
            metrics.RECONCILE_RUNS.labels("failure").inc()
            log.warning("reconciliation failed", exc_info=True)
            return
        metrics.RECONCILE_RUNS.labels("success").inc()
        log.info("reconciliation: drift %s, %d SyncDrift published", report.counts(), len(report.published))
