"""LOG_FORMAT: JSON lines (ts, level, logger, msg, context fields) from every process, the
text format, `auto`, and the configuration handed to Faust."""
from __future__ import annotations

import io
import logging
import logging.config
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app import logs

ROOT = Path(__file__).parents[3]


def _record(msg: str = "posted %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("syncgov.erp", logging.INFO, __file__, 1, msg, args or ("x",), None)
    record.__dict__.update(extra)
    return record


def test_json_line_has_the_fields_and_known_context() -> None:
    line = orjson.loads(logs.JsonFormatter().format(_record(order_id="O1", partition=3, other="ignored")))
    assert set(line) == {"ts", "level", "logger", "msg", "order_id", "partition"}
    assert line["level"] == "info" and line["logger"] == "syncgov.erp" and line["msg"] == "posted x"
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-11-27T08:00:00.000Z")
    assert line["order_id"] == "O1" and line["partition"] == 3


def test_context_applies_to_every_line_inside_and_extra_wins() -> None:
    fmt = logs.JsonFormatter()
    with logs.context(warehouse_id="WH1", order_id="O1"), logs.context(partition=2):
        inside = orjson.loads(fmt.format(_record(**logs.fields(order_id="O2", milestone_id="m-1"))))
    after = orjson.loads(fmt.format(_record()))
    assert inside["warehouse_id"] == "WH1" and inside["order_id"] == "O2" and inside["partition"] == 2
    assert inside["milestone_id"] == "m-1" and "warehouse_id" not in after
    assert list(inside)[4:] == ["warehouse_id", "order_id", "milestone_id", "partition"]  # a fixed order


def test_fields_refuses_unknown_names_and_drops_none() -> None:
    assert logs.fields(order_id=None, partition=0) == {"partition": 0}
    with pytest.raises(TypeError, match="sku"):
        logs.fields(sku="S1")


def test_exceptions_are_one_json_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text and "RuntimeError: boom" in orjson.loads(text)["exc"]


def test_text_format_appends_context() -> None:
    with logs.context(warehouse_id="WH1"):
        text = logs.TextFormatter().format(_record(order_id="O1"))
    assert text.endswith(" INFO syncgov.erp posted x warehouse_id=WH1 order_id=O1")


def test_auto_is_text_on_a_terminal_json_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", Tty()) == "text"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("text", io.StringIO()) == "text"
    assert logs.resolve_format("json", Tty()) == "json"


def test_faust_dict_config_formats_faust_loggers_as_json(capsys) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(logs.dict_config("json", "info"))
        logging.getLogger("faust.worker").info("Starting %s", "worker")
        logging.getLogger("aiokafka.consumer").debug("hidden at info")
    finally:
        root.handlers[:], root.level = saved
    lines = capsys.readouterr().err.strip().splitlines()
    assert [orjson.loads(line)["msg"] for line in lines] == ["Starting worker"]
    assert orjson.loads(lines[0])["logger"] == "faust.worker"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ERP_", "LOG_", "TOPIC_"))}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env={**full, **env},
                          capture_output=True, timeout=120, check=False)


def _json_lines(stderr: bytes) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in stderr.splitlines()]  # every line parses
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
    return lines


def test_a_cli_command_with_log_format_json_emits_parseable_json_lines() -> None:
    done = _cli("check-config", LOG_FORMAT="json", KAFKA_BOOTSTRAP_SERVERS="", ERP_RATE_PER_SEC="4",
                TOPIC_PARTITIONS="0")
    assert done.returncode == 2
    lines = _json_lines(done.stderr)
    assert [line["level"] for line in lines] == ["warning", "error", "error", "error"]
    assert "did you mean ERP_RATE_PER_S?" in str(lines[0]["msg"]) and "TOPIC_PARTITIONS='0'" in str(lines[3]["msg"])


def test_auto_is_json_when_stderr_is_not_a_terminal() -> None:
    done = _cli("check-config", KAFKA_BOOTSTRAP_SERVERS="nope")
    assert done.returncode == 2 and _json_lines(done.stderr)[0]["level"] == "error"
    done = _cli("check-config", KAFKA_BOOTSTRAP_SERVERS="nope", LOG_FORMAT="text")
    assert done.stderr.decode().startswith("syncgov: configuration error: KAFKA_BOOTSTRAP_SERVERS='nope'")


def test_replay_summary_is_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "app.cli", "replay", "-"], cwd=ROOT, input=b"{broken\n",
                          env={**os.environ, "LOG_FORMAT": "json"}, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0
    (line,) = _json_lines(done.stderr)
    assert line["logger"] == "syncgov.replay" and line["records"] == 1 and line["dead_letters"] == 1
