"""The operations page in a real browser: headless Chromium (Debian `chromium`) loads the
worker's `/`, the page's JS reads /metrics and the order trace, and the DOM shows the live
counts. A screenshot is saved to tests/artifacts/ops-page.png."""
from __future__ import annotations

import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from app.core.keys import order_key
from app.core.timeutil import format_ts
from app.kafka.clients import produce
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.observability]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")


def chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium once (5 s of virtual time for the page's fetches); its stdout."""
    binary = shutil.which("chromium")
    if not binary:
        pytest.fail("chromium not found (Debian package `chromium`)")
    proc = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Tables(HTMLParser):
    """Rows of every table by table id: {table: {row data-key or index: [cell texts]}}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list[str]]] = {}
        self.texts: dict[str, str] = {}  # id of a <p> or <span> -> its text
        self._table = ""
        self._row: list[str] | None = None
        self._leaf = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = a["id"] or ""
            self.tables[self._table] = {}
        elif tag == "tr":
            self._row = []
            rows = self.tables.setdefault(self._table, {})
            rows[a.get("data-key") or str(len(rows))] = self._row
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")
        elif tag in ("p", "span") and a.get("id"):
            self._leaf = a["id"] or ""
            self.texts[self._leaf] = ""

    def handle_data(self, data: str) -> None:
        if self._row:
            self._row[-1] += data
        if self._leaf:
            self.texts[self._leaf] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "span"):
            self._leaf = ""
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = ""


def _event(i: int, at_ms: int) -> bytes:
    return orjson.dumps({
        "event_id": f"rel-{i}", "type": "OrderReleased", "occurred_at": format_ts(at_ms), "source": "erp",
        "warehouse_id": "WH1", "order_id": f"O-{i}", "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": 2}]})


def test_ops_page_shows_live_counts_and_an_order_trace(kafka_bootstrap, worker_factory, tmp_path: Path) -> None:
    worker = worker_factory()
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    produce(kafka_bootstrap, f"{worker_factory.prefix}.events",
            [(order_key("WH1", f"O-{i}"), _event(i, ten_minutes_ago + i)) for i in range(3)] + [(b"WH1", b"{not json")])
    wait_for(lambda: b'syncgov_milestones_total{type="OrderAccepted"} 3.0' in worker.get("/metrics")[1], 60,
             "3 OrderAccepted on /metrics")

    page = Tables()
    page.feed(chromium(tmp_path / "profile", "--dump-dom", f"{worker.url}/#order=WH1/O-1"))
    t = page.tables
    assert t["milestones"]["OrderAccepted"] == ["OrderAccepted", "3"]
    assert t["milestones"]["SyncException"] == ["SyncException", "1"]
    assert t["exceptions"]["INVALID_EVENT"] == ["INVALID_EVENT", "1"]
    assert t["dead-letters"]["input: undecodable"] == ["input: undecodable", "1"]
    listed = [row for key, row in t["open-dead-letters"].items() if key != "0"]  # row "0": the header
    assert len(listed) == 1 and listed[0][0] == "input" and listed[0][2].startswith("undecodable")
    assert listed[0][3].endswith(": {not json") and f"{worker_factory.prefix}.events[" in listed[0][3]
    accepted = t["sla"]["syncgov_order_release_to_accepted_seconds"]
    assert accepted[1] == "3" and "min" in accepted[2] and "min" in accepted[3], accepted
    assert t["erp-calls"]["0"] == ["no ERP calls yet"]
    assert t["drift"]["0"] == ["not reconciled yet"]
    assert page.texts["status"].startswith("ready")
    trace = [row[:3] for key, row in t["trace-entries"].items() if key != "0"]
    assert [kind for _, kind, _ in trace] == ["event", "milestone"]
    assert [kind_type for _, _, kind_type in trace] == ["OrderReleased", "OrderAccepted"]

    errors = Tables()
    errors.feed(chromium(tmp_path / "profile", "--dump-dom", f"{worker.url}/#order=WH1/NO-SUCH-ORDER"))
    assert errors.texts["trace-error"] == "404: no trace for order NO-SUCH-ORDER in warehouse WH1"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ops-page.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1200", "--hide-scrollbars",
             f"{worker.url}/#order=WH1/O-1")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
