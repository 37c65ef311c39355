"""Faust acks a `take_events` batch even when its processing raises. An agent that
cannot finish a batch therefore stops the process before the next offset commit:
the batch is redelivered to the restarted worker instead of being lost."""
from __future__ import annotations

import logging
import os
from collections.abc import Awaitable

EXIT_CODE = 70


async def or_exit(work: Awaitable[None], log: logging.Logger, what: str) -> None:
    try:
        await work
    except Exception:  # noqa: BLE001 - see the module docstring
        log.critical("%s failed; exiting so the batch is redelivered", what, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_CODE)
