"""A batch cut short by cancellation is not acked (so its offsets are not committed)."""
from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from agents._failfast import or_exit


def _batch(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(message=SimpleNamespace(acked=False)) for _ in range(n)]


def test_a_cancelled_batch_is_marked_so_take_events_does_not_ack_it() -> None:
    batch = _batch(3)

    async def scenario() -> None:
        started = asyncio.Event()

        async def work() -> None:
            started.set()
            await asyncio.sleep(60)

        task = asyncio.ensure_future(or_exit(work(), logging.getLogger("t"), "batch", batch))  # type: ignore[arg-type]
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    # faust's Message.ack() does nothing for a message already marked acked: no final ack,
    # so the consumer never marks these offsets committable.
    assert all(ev.message.acked for ev in batch)


def test_a_finished_batch_is_left_to_take_events() -> None:
    batch = _batch(2)

    async def work() -> None:
        return None

    asyncio.run(or_exit(work(), logging.getLogger("t"), "batch", batch))  # type: ignore[arg-type]
    assert not any(ev.message.acked for ev in batch)


def test_faust_message_ack_is_a_no_op_once_marked() -> None:
    from faust.types.tuples import ConsumerMessage

    acks: list[object] = []
    consumer = SimpleNamespace(ack=lambda m: acks.append(m) or True)
    fresh, marked = (ConsumerMessage("t", 0, n, 0.0, 0, None, b"k", b"v", None) for n in (5, 6))
    assert fresh.ack(consumer) is True and acks == [fresh]  # type: ignore[arg-type]
    marked.acked = True
    assert marked.ack(consumer) is False and acks == [fresh]  # type: ignore[arg-type]
