"""A failed worker task ends the process at once (exit 70, nothing more committed); a
cancellation (a graceful stop) is passed on, not turned into an exit."""
from __future__ import annotations

import asyncio
import logging

import pytest

from app.runtime import failfast


class Exited(BaseException):
    """Stands in for os._exit (which would end the test process)."""


def test_an_unexpected_error_exits_the_process_with_code_70(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(failfast.os, "_exit", exit_)

    async def work() -> None:
        raise KeyError("boom")

    with caplog.at_level(logging.CRITICAL), pytest.raises(Exited):
        asyncio.run(failfast.or_exit(work(), logging.getLogger("t"), "the stages"))
    assert codes == [failfast.EXIT_CODE] == [70]
    assert "the stages failed" in caplog.text and "KeyError" in caplog.text


def test_a_cancelled_task_is_cancelled_not_exited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failfast.os, "_exit", lambda code: pytest.fail(f"exited with {code}"))

    async def scenario() -> None:
        started = asyncio.Event()

        async def work() -> None:
            started.set()
            await asyncio.sleep(60)

        task = asyncio.ensure_future(failfast.or_exit(work(), logging.getLogger("t"), "the sink"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_finished_work_returns() -> None:
    done: list[bool] = []

    async def work() -> None:
        done.append(True)

    asyncio.run(failfast.or_exit(work(), logging.getLogger("t"), "x"))
    assert done == [True]
