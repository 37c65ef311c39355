"""`syncgov replay` (app.commands.replay): file formats, dead letters, exit codes, determinism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from core_support import pick, release, run, scan, shipped_order, stock

from app.commands.replay import frame_avro, is_avro_framed, run_replay
from app.core.model import Milestone
from app.kafka import codec

ROOT = Path(__file__).resolve().parents[3]


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _expected(records: list[bytes]) -> bytes:
    return b"".join(
        orjson.dumps(m.to_dict(), option=orjson.OPT_SORT_KEYS) + b"\n"
        for m in run(records)
        if isinstance(m, Milestone)
    )


def test_replay_ndjson_writes_milestones_and_dead_letters(tmp_path: Path) -> None:
    records = [orjson.dumps(d) for d in [*shipped_order(), stock("s1", 0, 2)]]
    bad = [b'{"event_id": "x", "type": "PickConfirmed"}', b"\xff\xfe not utf-8"]
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join(records[:2] + bad + records[2:]) + b"\n\n   \n")
    out, dead = tmp_path / "out.ndjson", tmp_path / "dead.ndjson"

    assert run_replay(str(src), str(out), str(dead)) == 0

    assert out.read_bytes() == _expected(records[:2] + bad + records[2:])
    types = [m["type"] for m in _lines(out)]
    assert types.count("SyncException") == 2 and "InventoryAdjusted" in types
    letters = _lines(dead)
    assert letters[0] == {"raw": bad[0].decode(), "reason": "missing field 'occurred_at'"}
    assert letters[1]["raw_encoding"] == "base64" and letters[1]["reason"].startswith("undecodable")
    assert set(letters[1]) == {"raw", "raw_encoding", "reason"}


def test_replay_output_keys_are_sorted_and_timestamps_iso(tmp_path: Path) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(orjson.dumps(stock("s1", 0, 2)) + b"\n")
    out = tmp_path / "out.ndjson"
    assert run_replay(str(src), str(out), None) == 0
    line = out.read_bytes()
    assert line == orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS) + b"\n"
    assert orjson.loads(line)["window_end"] == "2026-11-27T10:05:00.000Z"


def test_replay_avro_framed_input(tmp_path: Path) -> None:
    events = [*shipped_order(), scan("s1", 4), pick("p9", 5, order="O9")]
    body = b"".join(frame_avro(codec.encode_event(d)) for d in events)
    body += frame_avro(b"\xc3\x01" + b"\x00" * 8 + b"junk") + b"\x00\x00\x00\x09abc"
    src = tmp_path / "in.avro"
    src.write_bytes(body)
    assert is_avro_framed(body[:6])
    out, dead = tmp_path / "out.ndjson", tmp_path / "dead.ndjson"

    assert run_replay(str(src), str(out), str(dead)) == 0

    got = _lines(out)
    assert [m["type"] for m in got] == [
        "OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed",
        "SyncException", "SyncException", "SyncException",
    ]
    assert [m["code"] for m in got[4:]] == ["INVALID_EVENT", "INVALID_EVENT", "UNKNOWN_ORDER"]
    reasons = [d["reason"] for d in _lines(dead)]
    assert reasons[0].startswith("undecodable: unknown schema fingerprint")
    assert reasons[1] == "undecodable: truncated record, expected 9 bytes, got 3"
    assert got[:4] == [orjson.loads(x) for x in _expected([orjson.dumps(d) for d in events]).splitlines()[:4]]


def test_replay_to_stdout_and_as_a_module(tmp_path: Path) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(orjson.dumps(release("r1")) + b"\n")
    dead = tmp_path / "dead.ndjson"
    proc = subprocess.run(
        [sys.executable, "-m", "app.commands.replay", str(src), "--dead-letter", str(dead)],
        cwd=ROOT, capture_output=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _expected([orjson.dumps(release("r1"))])
    assert proc.stderr == b"" and dead.read_bytes() == b""


def test_replay_missing_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_replay(str(tmp_path / "nope.ndjson"), str(tmp_path / "out"), None) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_replay_unwritable_output_is_exit_1(tmp_path: Path) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"")
    assert run_replay(str(src), str(tmp_path / "missing-dir" / "out"), None) == 1


def test_replay_empty_input_is_fine(tmp_path: Path) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"")
    out = tmp_path / "out"
    assert run_replay(str(src), str(out), None) == 0
    assert out.read_bytes() == b""
