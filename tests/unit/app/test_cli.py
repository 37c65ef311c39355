"""The `syncgov` entry point: subcommands, configuration errors, replay and simulate wiring."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from app.cli import main


def test_bad_setting_stops_with_a_message_naming_it(capsys, monkeypatch) -> None:
    monkeypatch.setenv("TOPIC_PARTITIONS", "many")
    assert main(["check-config"]) == 2
    assert "TOPIC_PARTITIONS='many'" in capsys.readouterr().err


def test_check_config_ok(capsys, monkeypatch) -> None:
    monkeypatch.delenv("TOPIC_PARTITIONS", raising=False)
    assert main(["check-config"]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_simulate_then_replay_through_the_console_script(tmp_path: Path) -> None:
    events, out, dead = tmp_path / "events.ndjson", tmp_path / "m.ndjson", tmp_path / "dl.ndjson"
    run = [sys.executable, "-m", "app.cli"]
    subprocess.run([*run, "simulate", "--orders", "20", "--malformed-rate", "0.01", "--output", str(events), "--quiet"], check=True)
    subprocess.run([*run, "replay", str(events), "--output", str(out), "--dead-letter", str(dead)], check=True)
    milestones = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sum(m["type"] == "OrderAccepted" for m in milestones) >= 20
    # Every rule-8 rejection is a dead letter; a late StockAdjusted is INVALID_EVENT but not one.
    invalid = [m for m in milestones if m.get("code") == "INVALID_EVENT" and m["detail"] != "late"]
    assert len(dead.read_bytes().splitlines()) >= len(invalid) > 0
