"""The `syncgov` entry point: version, descriptions, exit codes (0 fine, 1 findings or
failure, 2 usage or configuration), errors on stderr, --json, replay from stdin (Confluent
framing), progress and summaries, simulate's argument errors."""
from __future__ import annotations

import argparse
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app import cli
from app.cli import main

ROOT = Path(__file__).parents[3]
RUN = [sys.executable, "-m", "app.cli"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "TOPIC_", "ERP_", "WORKER_", "LOG_", "RECONCILE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "embedded")
    monkeypatch.setenv("LOG_FORMAT", "text")


def run(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "embedded", **(env or {})}
    return subprocess.run([*RUN, *args], cwd=ROOT, env=full, input=stdin, capture_output=True, timeout=120,
                          check=False)


# -- version, help, usage ----------------------------------------------------------------------


def test_version(capsys) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"syncgov {version('syncgov')}"


def test_every_subcommand_has_a_description_and_the_exit_codes() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS)
    for name, p in sub.choices.items():
        assert p.description and len(p.description) > 40, name
        assert "2 usage or configuration" in (p.epilog or ""), name
    assert {c.dest for c in sub._choices_actions if c.help} == set(cli.COMMANDS)


def test_usage_errors_exit_2_on_stderr(capsys) -> None:
    assert main(["no-such-command"]) == 2
    assert main(["trace", "WH1"]) == 2
    assert main([]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "usage: syncgov" in out.err


def test_help_exits_0(capsys) -> None:
    assert main(["reconcile", "--help"]) == 0
    assert "Exit 0 in sync, 1 drift" in " ".join(capsys.readouterr().out.split())


# -- configuration -----------------------------------------------------------------------------


def test_bad_setting_stops_with_a_message_naming_it(capsys, monkeypatch) -> None:
    monkeypatch.setenv("TOPIC_PARTITIONS", "many")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "syncgov: configuration error: TOPIC_PARTITIONS='many'" in err


def test_every_configuration_error_is_listed(capsys, monkeypatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    monkeypatch.setenv("ERP_RATE_PER_S", "inf")
    monkeypatch.setenv("ERP_BASE_URL", "erp:8000")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "syncgov: 3 configuration errors:"
    assert [line.split("=")[0] for line in err[1:]] == [
        "syncgov: configuration error: KAFKA_BOOTSTRAP_SERVERS", "syncgov: configuration error: ERP_BASE_URL",
        "syncgov: configuration error: ERP_RATE_PER_S"]


def test_check_config_ok(capsys) -> None:
    assert main(["check-config"]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_worker_without_bootstrap_servers_is_a_configuration_error(capsys, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "")
    assert main(["worker"]) == 2
    assert "KAFKA_BOOTSTRAP_SERVERS='': required" in capsys.readouterr().err


def test_source_with_the_generic_adapter_needs_its_release_feed(capsys, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("ERP_ADAPTER", "http")
    monkeypatch.setenv("ERP_HTTP_ROUTES", "{}")
    assert main(["source", "--once"]) == 2
    assert "configuration error: ERP_HTTP_FEED='': required by `syncgov source`" in capsys.readouterr().err


def test_worker_embedded_without_the_extra_is_a_configuration_error(capsys, monkeypatch) -> None:
    from app.commands import worker

    monkeypatch.setattr(worker.importlib.util, "find_spec", lambda name: None)
    assert main(["worker"]) == 2
    assert main(["broker"]) == 2
    err = capsys.readouterr().err
    assert err.count("the embedded broker is not installed") == 2 and "syncgov[embedded]" in err


@pytest.mark.parametrize("command", [["dlq", "list"], ["source", "--once"], ["reconcile"]])
def test_tools_need_a_real_broker_address(command: list[str], capsys) -> None:
    assert main(command) == 2
    assert f"`syncgov {command[0]}` needs the address of a running broker" in capsys.readouterr().err


def test_unknown_variable_is_warned_once_with_a_did_you_mean() -> None:
    done = run("check-config", env={"ERP_RATE_PER_SEC": "3", "LOG_FORMAT": "text"})
    assert done.returncode == 0
    warnings = [line for line in done.stderr.decode().splitlines() if "ERP_RATE_PER_SEC" in line]
    assert len(warnings) == 1 and "did you mean ERP_RATE_PER_S?" in warnings[0] and "WARNING" in warnings[0]


def test_an_unexpected_failure_is_a_message_and_exit_1(capsys, monkeypatch) -> None:
    from app.erp import reconcile

    def boom(*, as_json: bool = False) -> int:
        raise LookupError("no such thing")

    monkeypatch.setattr(reconcile, "main", boom)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    assert main(["reconcile"]) == 1
    err = capsys.readouterr().err
    assert "syncgov reconcile: LookupError: no such thing" in err and "Traceback" not in err


# -- --json ------------------------------------------------------------------------------------


def _entry(mid: str) -> Any:
    from app.commands.dlq import Entry

    record = {"milestone_id": mid, "type": "OrderPicked", "status": 422, "detail": "unknown product",
              "milestone": {"order_id": "O1"}}
    return Entry(b"WH1|O1", record, ({"held": f"{mid}-next", "blocker": mid, "type": "OrderPacked"},))


@pytest.fixture
def fake_dlq(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    from app.commands import dlq

    redriven: list[Any] = []
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setattr(dlq, "open_entries", lambda s: [_entry("m-1"), _entry("m-2")])
    monkeypatch.setattr(dlq, "open_input_entries", lambda s: [_input_entry("r-1")])
    monkeypatch.setattr(dlq, "redrive", lambda s, entries: redriven.extend(entries) or len(entries))
    monkeypatch.setattr(dlq, "redrive_input",
                        lambda s, entries, fixed=None: redriven.extend((e, fixed) for e in entries) or len(entries))
    return redriven


def _input_entry(rid: str) -> Any:
    from app.commands.dlq import InputEntry

    return InputEntry({"raw": b"{not json", "reason": "undecodable: invalid JSON", "record_id": rid,
                       "topic": "syncgov.events", "partition": 2, "offset": 41, "failed_at": 1_800_000_000_000}, 7)


def test_dlq_list_json_and_text(fake_dlq, capsys) -> None:
    assert main(["dlq", "list", "--json"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [e.get("milestone_id", e.get("record_id")) for e in listed] == ["m-1", "m-2", "r-1"]
    assert listed[0]["detail"] == "unknown product"
    assert listed[0]["kind"] == "dead_lettered" and listed[0]["held"][0]["held"] == "m-1-next"
    assert listed[2]["kind"] == "input" and listed[2]["raw"] == "{not json" and listed[2]["offset"] == 41
    assert listed[2]["reason"] == "undecodable: invalid JSON"
    assert main(["dlq", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "2 open ERP dead letter(s), 2 milestone(s) held behind them" in out and "held behind it" in out[1]
    assert out[-1] == "1 open input dead letter(s)"
    assert out[-2].startswith("r-1  input  syncgov.events[2]@41  undecodable: invalid JSON")
    assert main(["dlq", "list", "--kind", "erp"]) == 0
    assert "input" not in capsys.readouterr().out


def test_dlq_replay_of_an_id_not_open_is_exit_1_on_stderr(fake_dlq, capsys) -> None:
    assert main(["dlq", "replay", "--id", "m-9"]) == 1
    out = capsys.readouterr()
    assert "not open: m-9" in out.err and out.out == "" and fake_dlq == []
    assert main(["dlq", "replay", "--id", "m-2"]) == 0
    assert [e.milestone_id for e in fake_dlq] == ["m-2"]


def test_dlq_replay_of_an_input_dead_letter_with_a_fixed_record(fake_dlq, capsys, tmp_path) -> None:
    fixed = tmp_path / "fixed.json"
    fixed.write_bytes(b'{"event_id": "e1"}\n')
    assert main(["dlq", "replay", "--id", "r-1", "--fixed", str(fixed)]) == 0
    (entry, sent), = fake_dlq
    assert entry.record_id == "r-1" and sent == b'{"event_id": "e1"}'
    assert "re-driven 1 input record(s)" in capsys.readouterr().out
    # --fixed needs exactly one input dead letter
    assert main(["dlq", "replay", "--fixed", str(fixed), "--id", "m-1"]) == 2
    assert main(["dlq", "replay", "--kind", "erp", "--fixed", str(fixed)]) == 2
    # without --id, replay stays the ERP re-drive it always was
    fake_dlq.clear()
    assert main(["dlq", "replay"]) == 0
    assert [e.milestone_id for e in fake_dlq] == ["m-1", "m-2"]


@pytest.fixture
def fake_reconcile(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from app.erp import reconcile

    state: dict[str, Any] = {"drift": ()}

    async def fake_run(s: Any, options: Any = None, **_: Any) -> reconcile.Report:
        if isinstance(state["drift"], Exception):
            raise state["drift"]
        return reconcile.Report(state["drift"], (), 0)

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setattr(reconcile, "run", fake_run)
    return state


def test_reconcile_json_in_sync_and_drift(fake_reconcile, capsys) -> None:
    from app.erp.reconcile import Drift

    assert main(["reconcile", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["in_sync"] is True and report["drift"] == []
    fake_reconcile["drift"] = (Drift("shipped_not_posted", "WH1", "WH1/OUT-1", 1_800_000_000_000, "not done in the ERP",
                                     "WH1|O1", order_id="O1"),)
    assert main(["reconcile", "--json"]) == 1
    report = orjson.loads(capsys.readouterr().out)
    assert report["in_sync"] is False and report["counts"]["shipped_not_posted"] == 1
    assert report["drift"][0]["document"] == "WH1/OUT-1" and report["drift"][0]["since"].startswith("2027-01-15")


def test_reconcile_failure_is_exit_1_on_stderr(fake_reconcile, capsys) -> None:
    fake_reconcile["drift"] = TimeoutError("ERP not answering")
    assert main(["reconcile", "--json"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "reconcile: failed: ERP not answering" in out.err


TRACE = {"warehouse_id": "WH1", "order_id": "O1", "entries": [
    {"at": "2026-11-27T08:00:00.000Z", "kind": "event", "type": "OrderReleased", "source": "erp", "id": "e1"}]}


@pytest.fixture(scope="module")
def worker_url() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/orders/WH1/O1/trace"
            body = orjson.dumps(TRACE if found else {"error": "no trace for order O2 in warehouse WH1"})
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_trace_json_and_text(worker_url: str, capsys) -> None:
    assert main(["trace", "WH1", "O1", "--url", worker_url, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == TRACE
    assert main(["trace", "WH1", "O1", "--url", worker_url]) == 0
    assert "OrderReleased" in capsys.readouterr().out


def test_trace_not_found_or_unreachable_is_exit_1_on_stderr(worker_url: str, capsys) -> None:
    assert main(["trace", "WH1", "O2", "--url", worker_url, "--json"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "404: no trace for order O2" in out.err
    from app.kafka.embedded import free_port

    assert main(["trace", "WH1", "O1", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "cannot reach the worker" in capsys.readouterr().err


# -- replay ------------------------------------------------------------------------------------

RELEASE = {"event_id": "r1", "type": "OrderReleased", "source": "erp", "warehouse_id": "WH1", "order_id": "O1",
           "occurred_at": "2026-11-27T08:00:00.000Z", "lines": [{"line_no": 1, "sku": "SKU-1", "qty": 1}]}


def test_replay_reads_stdin_and_prints_a_summary(tmp_path: Path) -> None:
    dead = tmp_path / "dead.ndjson"
    stream = orjson.dumps(RELEASE) + b"\n{broken\n"
    done = run("replay", "-", "--dead-letter", str(dead), stdin=stream)
    assert done.returncode == 0, done.stderr
    milestones = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert milestones and milestones[0]["type"] == "OrderAccepted"
    assert len(dead.read_bytes().splitlines()) == 1
    summary = done.stderr.decode().strip().splitlines()
    assert len(summary) == 1, summary
    assert summary[0].startswith(f"syncgov replay: 2 records, {len(milestones)} milestones, 1 dead letters in ")


def test_replay_quiet_has_no_summary(tmp_path: Path) -> None:
    done = run("replay", "-", "--quiet", stdin=orjson.dumps(RELEASE) + b"\n")
    assert done.returncode == 0 and done.stderr == b""


def test_replay_recognises_the_confluent_wire_format(tmp_path: Path) -> None:
    from app.commands.replay import frame_avro
    from app.kafka import codec

    confluent = b"\x00" + (42).to_bytes(4, "big") + b"\x02\x06abc"
    stream = frame_avro(confluent) + frame_avro(codec.encode_event(RELEASE)) + frame_avro(b"\x00\x01")
    dead = tmp_path / "dead.ndjson"
    done = run("replay", "-", "--dead-letter", str(dead), stdin=stream)
    assert done.returncode == 0, done.stderr
    reasons = [orjson.loads(line)["reason"] for line in dead.read_bytes().splitlines()]
    assert len(reasons) == 2
    assert "Confluent wire format" in reasons[0] and "schema id 42" in reasons[0] and "unknown schema" in reasons[0]
    assert "cut short" in reasons[1]
    assert any(orjson.loads(line)["type"] == "OrderAccepted" for line in done.stdout.splitlines())


def test_replay_missing_input_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["replay", str(tmp_path / "nope.ndjson")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_simulate_then_replay_through_the_console_script(tmp_path: Path) -> None:
    events, out, dead = tmp_path / "events.ndjson", tmp_path / "m.ndjson", tmp_path / "dl.ndjson"
    sim = run("simulate", "--orders", "20", "--malformed-rate", "0.01", "--output", str(events), "--quiet")
    assert sim.returncode == 0 and sim.stderr == b""
    rep = run("replay", str(events), "--output", str(out), "--dead-letter", str(dead))
    assert rep.returncode == 0
    milestones = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sum(m["type"] == "OrderAccepted" for m in milestones) >= 20
    # Every rule-8 rejection is a dead letter; a late StockAdjusted is INVALID_EVENT but not one.
    invalid = [m for m in milestones if m.get("code") == "INVALID_EVENT" and m["detail"] != "late"]
    assert len(dead.read_bytes().splitlines()) >= len(invalid) > 0
    assert f"{len(milestones):,} milestones" in rep.stderr.decode()


# -- simulate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--orders", "-3"], ["--orders", "many"], ["--warehouses", "0"], ["--events-per-s", "nan"],
    ["--events-per-s", "0"], ["--start", "yesterday"], ["--rate", "-1"], ["--rate", "inf"], ["--seed", "x"],
    ["--duplicate-rate", "2"], ["--late-rate", "nan"], ["--no-such-option"],
])
def test_simulate_bad_arguments_are_a_message_not_a_traceback(args: list[str], capsys) -> None:
    assert main(["simulate", *args, "--output", os.devnull]) == 2
    err = capsys.readouterr().err
    assert "syncgov simulate: error: argument" in err or "unrecognized arguments" in err
    assert "Traceback" not in err


def test_simulate_unwritable_output_is_exit_1(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--orders", "2", "--output", str(tmp_path / "no" / "such" / "dir.ndjson")]) == 1
    err = capsys.readouterr().err
    assert "syncgov simulate: cannot write" in err and "Traceback" not in err


def test_simulate_summary_line_counts_milestones_and_dead_letters(tmp_path: Path) -> None:
    done = run("simulate", "--orders", "10", "--malformed-rate", "0.05", "--output", str(tmp_path / "e.ndjson"))
    assert done.returncode == 0
    summary = orjson.loads(done.stderr.decode().strip().splitlines()[-1])
    assert summary["records"] > 0 and summary["milestones"] == sum(summary["truth"].values())
    assert summary["dead_letters"] == summary["sent"]["malformed"] > 0


# -- progress ----------------------------------------------------------------------------------


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_progress_shows_total_and_eta_on_a_terminal_only() -> None:
    from app.commands.progress import Progress

    now = [0.0]
    tty = _Tty()
    p = Progress(1000, stream=tty, clock=lambda: now[0], every_s=0)
    now[0] = 10.0
    p.update(250)
    assert "250/1,000 records" in tty.text and "25 records/s" in tty.text and "ETA 0:30" in tty.text
    p.finish()
    assert tty.text.endswith("\n") and "100%" in tty.text
    by_bytes = Progress(4096, unit="bytes", stream=tty, clock=lambda: now[0], every_s=0)
    now[0] = 20.0
    by_bytes.update(1024, count=50)
    assert "50 records (1,024/4,096 bytes)" in by_bytes.line()
    unknown = Progress(0, stream=tty, clock=lambda: now[0])
    unknown.update(7)
    assert "ETA" not in unknown.line() and "7 records" in unknown.line()

    class Pipe(_Tty):
        def isatty(self) -> bool:
            return False

    pipe = Pipe()
    quiet = Progress(10, stream=pipe, every_s=0)
    quiet.update(5)
    quiet.finish()
    assert pipe.text == "" and not quiet.enabled
