"""Faust's `take_events` acks a batch in a `finally`: also when processing raises, and
also when the agent is cancelled mid-batch (a graceful stop). A batch that cannot be
finished must not be acked, or its offsets are committed and it is never processed:

- on an unexpected error the process stops before the next offset commit;
- on cancellation the batch's messages are marked acked locally first, which makes
  `take_events`' ack a no-op: their offsets stay uncommitted and the batch is
  redelivered (the state tables' meta offset skips what was already stored).
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Sequence
from typing import Any

from faust.types import EventT

EXIT_CODE = 70


async def or_exit(work: Awaitable[None], log: logging.Logger, what: str, batch: Sequence[EventT[Any]] = ()) -> None:
    try:
        await work
    except asyncio.CancelledError:
        for event in batch:
            event.message.acked = True  # see the module docstring: not acked, so not committed
        raise
    except Exception:
        log.critical("%s failed; exiting so the batch is redelivered", what, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_CODE)
