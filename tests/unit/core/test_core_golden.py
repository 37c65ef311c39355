"""Golden trace: the seeded generator's trace replays to the checked-in milestones, exactly.

After an intended rule change, verify it with the rule tables first, then regenerate:
    python tests/unit/core/core_tracegen.py --write
"""

from __future__ import annotations

from pathlib import Path

from core_tracegen import DEAD_LETTERS, MILESTONES, TRACE, generate

from app.commands.replay import run_replay


def test_generator_still_produces_the_checked_in_trace() -> None:
    assert b"".join(line + b"\n" for line in generate()) == TRACE.read_bytes()


def test_golden_trace_replays_to_the_expected_milestones(tmp_path: Path) -> None:
    out, dead = tmp_path / "milestones.ndjson", tmp_path / "dead.ndjson"
    assert run_replay(str(TRACE), str(out), str(dead)) == 0
    assert out.read_bytes() == MILESTONES.read_bytes()
    assert dead.read_bytes() == DEAD_LETTERS.read_bytes()


def test_golden_files_stay_small() -> None:
    assert sum(p.stat().st_size for p in (TRACE, MILESTONES, DEAD_LETTERS)) < 2_000_000
