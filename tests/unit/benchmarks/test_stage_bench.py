"""The in-process stage bench runs the stage as the worker does (outputs, state records read back)."""
from __future__ import annotations

import json

import pytest

from benchmarks import stage_bench


def test_the_stage_bench_runs_the_stage_and_writes_its_state(capsys: pytest.CaptureFixture[str]) -> None:
    assert stage_bench.main(["--orders", "12", "--batch", "50", "--reps", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["events"] > 500
    first, second = out["reps"]
    assert first["outputs"] == second["outputs"] > 12  # milestones (and marks) of every order, each run alike
    assert first["state_records"] == second["state_records"] > 12
    assert first["cpu_us_per_event"] > 0
