"""Fail fast: a long-running task of the worker (the stages, the ERP sink) that fails with
an unexpected error ends the process at once (exit 70), before any further commit, so
that everything not yet stored is redone from the stored offsets after the restart
(Kubernetes restarts the pod). A cancellation (a graceful stop) is passed on."""
from __future__ import annotations

import logging
import os
from collections.abc import Awaitable

EXIT_CODE = 70


async def or_exit(work: Awaitable[None], log: logging.Logger, what: str) -> None:
    try:
        await work
    except Exception:
        log.critical("%s failed; exiting so the work is redone from the stored offsets", what, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_CODE)
