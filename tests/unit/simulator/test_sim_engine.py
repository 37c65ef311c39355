"""The governance engine, replaying a simulated stream, yields exactly the simulator's truth."""
from __future__ import annotations

from typing import Any

from sim_support import Run, generate

from app.core import engine, model


def _replay(run: Run) -> tuple[list[dict[str, Any]], int]:
    eng = engine.Engine()
    milestones: list[dict[str, Any]] = []
    dead = 0
    for _, raw in run.records:
        for out in eng.process(raw):
            if isinstance(out, model.Milestone):
                milestones.append(out.to_dict())
            else:
                dead += 1
    milestones.extend(m.to_dict() for m in eng.finish())
    return milestones, dead


def _check(run: Run) -> None:
    from app.simulator.truth import compare

    actual, dead = _replay(run)
    report = compare(run.truth, actual, check_event_ids=True)
    assert report.ok, report.summary()
    assert dead == run.sim.counts["malformed"]  # one dead letter per rule-8 record


def test_engine_agrees_with_truth_on_the_default_mix(default_run: Run) -> None:
    _check(default_run)


def test_engine_agrees_with_truth_under_heavy_faults() -> None:
    _check(
        generate(
            "default",
            orders=150,
            seed=5,
            warehouses=2,
            duplicate=0.2,
            out_of_order=0.3,
            late=0.5,
            malformed=0.05,
            wrong_source=0.05,
            conflict=0.1,
            orphan=0.1,
            over_pick=0.1,
            stray_return=0.1,
        )
    )
