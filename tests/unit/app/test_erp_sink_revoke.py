"""The ERP sink stops calling the ERP once a rebalance begins, and leaves the batch
uncommitted for the partitions' next owner (no two workers post one milestone at once)."""
from __future__ import annotations

import asyncio
import importlib
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from app.erp.port import PostResult, TransientErpError


@pytest.fixture
def erp_sink(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The sink module (its Faust app is only built, never started: any broker address does)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    return importlib.import_module("agents.erp_sink")


class Port:
    """An ERP that fails transiently ``failures`` times, then posts."""

    def __init__(self, failures: int, on_call: Any = None) -> None:
        self.failures, self.calls, self.on_call = failures, 0, on_call

    async def post(self, milestone: dict[str, Any]) -> PostResult:
        self.calls += 1
        if self.on_call:
            self.on_call()
        if self.calls <= self.failures:
            raise TransientErpError(503, 0.0, "ERP 503")
        return PostResult("posted", "SHIP-1")


@pytest.fixture
def rebalancing(monkeypatch: pytest.MonkeyPatch, erp_sink: ModuleType) -> SimpleNamespace:
    """Set ``.on = True`` to begin a rebalance (the app's flag, restored after the test)."""
    monkeypatch.setattr(erp_sink.app, "rebalancing", False)

    class Flag(SimpleNamespace):
        def __setattr__(self, name: str, value: Any) -> None:
            erp_sink.app.rebalancing = value

    return Flag()


MILESTONE = {"milestone_id": "m1", "type": "ShipmentConfirmed", "occurred_at": None}


def test_no_call_once_a_rebalance_has_begun(erp_sink: ModuleType, rebalancing: SimpleNamespace) -> None:
    rebalancing.on = True
    port = Port(0)
    with pytest.raises(erp_sink.Revoked):
        asyncio.run(erp_sink.post_one(port, None, MILESTONE))  # type: ignore[arg-type]
    assert port.calls == 0


def test_retries_stop_when_a_rebalance_begins_between_them(erp_sink: ModuleType, rebalancing: SimpleNamespace) -> None:
    def begin() -> None:
        rebalancing.on = True  # the rebalance starts while the first call is in flight

    port = Port(failures=5, on_call=begin)
    with pytest.raises(erp_sink.Revoked):
        asyncio.run(erp_sink.post_one(port, None, MILESTONE))  # type: ignore[arg-type]
    assert port.calls == 1  # the retry after the backoff is not made


def test_a_revoked_batch_is_marked_so_its_offsets_are_not_committed(erp_sink: ModuleType) -> None:
    batch = [SimpleNamespace(message=SimpleNamespace(acked=False)) for _ in range(3)]
    assert erp_sink.abandon_if_revoked(batch, [[], erp_sink.Revoked()]) is True  # type: ignore[arg-type]
    assert all(ev.message.acked for ev in batch)
    done = [SimpleNamespace(message=SimpleNamespace(acked=False))]
    assert erp_sink.abandon_if_revoked(done, [[]]) is False  # type: ignore[arg-type]
    assert not done[0].message.acked
    with pytest.raises(ValueError):
        erp_sink.abandon_if_revoked(done, [erp_sink.Revoked(), ValueError("bug")])  # type: ignore[arg-type]
