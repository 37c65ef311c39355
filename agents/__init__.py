"""The worker's registrations on its Faust app: thin by design (``register`` is called by
``app.faust_app.create_app``). The stages are ``app/stages``, the ERP sink
``app/erp/sink.py``, their runtime ``app/runtime``."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.faust_app import WorkerApp


def register(worker: WorkerApp) -> None:
    """The stages always; the ERP sink and the reconciliation timer when the sink is on."""
    from agents import erp_sink, governance, reconcile

    governance.register(worker)
    if worker.settings.erp.sink_enabled:
        erp_sink.register(worker)
        reconcile.register(worker)
