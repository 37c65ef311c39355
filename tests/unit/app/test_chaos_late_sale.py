"""The chaos run's "the ERP commits a create, then its answer is lost" step needs a create in
flight; when the load brings none, an ERP user enters one late order. A CI run on Apache Kafka
once held the step for its whole 90 s without a create: the late order was not entered because
the warehouse had already worked every order of the load (``feed_done``), the usual case at the
end of a short run. The feeder works releases until the drain is over, so the late order is
entered until then, and only then refused."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.harness.chaos import run
from app.harness.chaos.run import Chaos, ChaosConfig, Say


class _Rest:
    closed = False

    async def close(self) -> None:
        self.closed = True


def _chaos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Chaos, list[dict[str, Any]]]:
    chaos = Chaos(ChaosConfig(workdir=tmp_path, warehouses=("WH1",)), Say(quiet=True))
    chaos.sites = {"WH1": 5}
    entered: list[dict[str, Any]] = []

    async def new_sale(rest: Any, lines: list[tuple[str, int]], *, customer: str, warehouse: int) -> dict[str, Any]:
        entered.append({"lines": lines, "customer": customer, "warehouse": warehouse})
        return {"number": f"S{len(entered)}"}

    monkeypatch.setattr(run, "new_sale", new_sale)
    monkeypatch.setattr(chaos.erp, "direct_rest", lambda *_: _Rest())
    return chaos, entered


def test_a_late_order_is_entered_after_the_load_was_worked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chaos, entered = _chaos(tmp_path, monkeypatch)
    chaos.creation_done = chaos.feed_done = True
    asyncio.run(chaos.late_sale())
    assert entered == [{"lines": [("SKU-0001", 1)], "customer": run.CUSTOMERS[0], "warehouse": 5}]
    assert chaos.created == ["S1"]  # the verifier expects it released and worked like the others


def test_no_late_order_once_the_feeder_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chaos, entered = _chaos(tmp_path, monkeypatch)
    chaos.feed_done = chaos.stop_feeding = True  # the drain is over: nobody would work it
    asyncio.run(chaos.late_sale())
    assert entered == [] and chaos.created == []
