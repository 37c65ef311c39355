"""The lease and the fenced-commit guard (app/runtime/ownership.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.runtime.ownership import FENCED_EXIT_CODE, WIPE_MARKER, Fenced, Lease, Ownership, wipe_if_marked


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_lease_lasts_a_session_timeout_less_the_margin_from_the_answered_heartbeats_sending() -> None:
    clock = Clock()
    lease = Lease(6.0, margin_s=1.0, clock=clock)
    assert not lease.valid()  # never heard from the coordinator
    lease.renew(100.0)
    clock.now = 104.9
    assert lease.valid()
    clock.now = 105.0
    assert not lease.valid()
    lease.renew(99.0)  # an older answer never shortens or extends it
    assert lease.expires_at == 105.0
    with pytest.raises(ValueError):
        Lease(1.0, margin_s=1.0)


def _ownership(clock: Clock, owned: set[int] | None, tmp_path: Path, exits: list[int]) -> Ownership:
    lease = Lease(6.0, 1.0, clock)
    lease.renew(clock.now)
    return Ownership(lambda: owned, lambda: 7, lease, wipe_dir=tmp_path, exit=exits.append)


def test_check_and_still_owner_follow_the_lease_and_the_assignment(tmp_path: Path) -> None:
    clock = Clock()
    ownership = _ownership(clock, {0, 2}, tmp_path, [])
    ownership.check()
    assert ownership.still_owner(2) and not ownership.still_owner(1)
    assert ownership.epoch() == 7
    clock.now += 5.5  # stalled past the lease
    with pytest.raises(Fenced):
        ownership.check()
    assert not ownership.still_owner(2)


def test_a_commit_that_outlived_the_lease_marks_the_local_stores_and_exits(tmp_path: Path) -> None:
    clock = Clock()
    exits: list[int] = []
    ownership = _ownership(clock, {0}, tmp_path, exits)
    ownership.after_commit("governance-state batch")
    assert exits == [] and not (tmp_path / WIPE_MARKER).exists()
    clock.now += 10
    ownership.after_commit("governance-state batch")
    assert exits == [FENCED_EXIT_CODE]
    tables = tmp_path / "tables"
    (tables / "governance-state-1.db").mkdir(parents=True)
    assert wipe_if_marked(tmp_path, tables)
    assert not tables.exists() and not (tmp_path / WIPE_MARKER).exists()
    assert not wipe_if_marked(tmp_path, tables)  # once
