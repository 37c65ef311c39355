"""Observability end to end: a real Prometheus (Debian `prometheus`, on 127.0.0.1) scrapes a
worker during an ERP flow and answers for the business SLA histogram and the drift gauge;
the exposition passes `promtool check metrics`; reconciliation finds drift made by
changing Tryton behind the pipeline's back, and a second run publishes nothing new."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.keys import event_key
from app.core.model import Milestone
from app.core.timeutil import format_ts
from app.erp import reconcile
from app.erp.tryton import INTERNAL, SHIPMENT, TrytonRest
from app.harness.processes import WorkerProcess
from app.kafka import codec
from app.kafka.clients import produce, read_all
from app.kafka.embedded import die_with_parent, free_port
from app.settings import load
from app.simulator.work import warehouse_work, watermark_flush
from tests.fixtures.erp import ErpStack
from tests.integration.conftest import wait_for
from tests.integration.test_dashboard import expressions
from tests.integration.test_erp_pipeline import erp_env, run_source
from tests.integration.test_erp_tryton import new_order, shipment

pytestmark = pytest.mark.observability
KINDS = set(reconcile.KINDS)


def worker_env(stack: ErpStack) -> dict[str, str]:
    """The sink and the reconciliation share the gateway's quota (9 + 0.5 <= 10 req/s)."""
    return erp_env(stack, ERP_RATE_PER_S=str(stack.rate_per_s - 1), ERP_BURST=str(stack.burst - 1))


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found (Debian package `prometheus`)")
    return path


@contextmanager
def prometheus(target: str, workdir: Path) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping ``target``'s /metrics every second; its base URL."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.fail("prometheus not found (Debian package `prometheus`)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: syncgov, metrics_path: /metrics, static_configs: [{{targets: ['{target}']}}]}}\n",
        encoding="utf-8")
    port = free_port()
    with open(workdir / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """An instant query through the HTTP API; the result vector ([] while Prometheus is not up)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            answer = orjson.loads(resp.read())
    except OSError:
        return []
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def values(base: str, expr: str, label: str | None = None) -> dict[str, float]:
    return {(s["metric"].get(label, "") if label else ""): float(s["value"][1]) for s in query(base, expr)}


def check_metrics(worker: WorkerProcess) -> None:
    status, body = worker.get("/metrics")
    assert status == 200, body[:300]
    proc = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


async def erp_flow(stack: ErpStack, bootstrap: str, worker: WorkerProcess, rest: TrytonRest,
                   created: list[dict[str, Any]], worked: int) -> None:
    """Release ``created`` through the source; the warehouse works the first ``worked`` of them
    (plus a stock count); wait until those are done in Tryton and every milestone is posted."""
    env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    await asyncio.to_thread(run_source, env)
    numbers = [s["number"] for s in created]
    releases = [codec.decode(r.value) for r in read_all(bootstrap, worker.env["TOPIC_EVENTS"])]
    releases = sorted((r for r in releases if r["type"] == "OrderReleased" and r["order_id"] in numbers),
                      key=lambda r: numbers.index(r["order_id"]))
    assert [r["order_id"] for r in releases] == numbers
    start = max(r["occurred_at"] for r in releases) + 1000
    work = warehouse_work(releases[:worked], seed=5, start_ms=start)
    records = [(event_key(e), orjson.dumps(e)) for e in work]
    records += [(key, orjson.dumps(e)) for key, e in watermark_flush("WH1", start + 30_000, 4, f"obs{start}")]
    produce(bootstrap, worker.env["TOPIC_EVENTS"], records)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        states = [(await shipment(rest, s["id"]))["state"] for s in created[:worked]]
        milestones = [m for m in milestones_of(bootstrap, worker) if m["type"] != "SyncException"]
        answered = sum(int(v) for k, v in metric_lines(worker, "syncgov_erp_calls_total").items()
                       if any(f'outcome="{o}"' in k for o in ("posted", "already_done", "skipped")))
        adjusted = any(m["type"] == "InventoryAdjusted" for m in milestones)
        if states == ["done"] * worked and adjusted and answered >= len(milestones):
            return
        await asyncio.sleep(1)
    raise AssertionError(f"flow not done within 150 s: {states}, {answered} of {len(milestones)} answered")


def milestones_of(bootstrap: str, worker: WorkerProcess) -> list[dict[str, Any]]:
    records = read_all(bootstrap, worker.env["TOPIC_MILESTONES"])
    return [Milestone.from_dict(codec.decode(r.value)).to_dict() for r in records]


def metric_lines(worker: WorkerProcess, name: str) -> dict[str, float]:
    """``name{labels}`` -> value from the worker's exposition."""
    text = worker.get("/metrics")[1].decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{")}


@pytest.mark.erp
@pytest.mark.kafka
async def test_prometheus_scrapes_the_sla_histogram_and_the_drift_gauge(
        erp_stack, kafka_bootstrap, worker_factory, tmp_path: Path) -> None:
    rest = erp_stack.direct_rest()
    try:
        created = [await new_order(rest, [("SKU-0021", 1), ("SKU-0022", 2)]) for _ in range(2)]
        worker = worker_factory(**worker_env(erp_stack))
        with prometheus(f"127.0.0.1:{worker.web_port}", tmp_path / "prometheus") as prom:
            wait_for(lambda: values(prom, 'up{job="syncgov"}') == {"": 1.0}, 60, "Prometheus scraping the worker")
            await erp_flow(erp_stack, kafka_bootstrap, worker, rest, created, worked=2)
            flow_done = time.time()

            count = "syncgov_shipment_confirmed_to_posted_seconds_count"
            wait_for(lambda: values(prom, count) == {"": 2.0}, 30, f"{count} == 2 in Prometheus")
            assert values(prom, 'syncgov_shipment_confirmed_to_posted_seconds_bucket{le="+Inf"}') == {"": 2.0}
            p95 = values(prom, "histogram_quantile(0.95, sum by (le) "
                               "(syncgov_shipment_confirmed_to_posted_seconds_bucket))")[""]
            assert 0 < p95 <= 300, p95  # posted within minutes of the confirmation

            # The worker's reconciliation timer ran after the flow: drift 0 of every kind.
            last = "syncgov_reconcile_last_success_timestamp_seconds"
            wait_for(lambda: values(prom, last).get("", 0) >= flow_done, 150, "a reconciliation after the flow")
            drift = "syncgov_sync_drift_documents"
            assert values(prom, drift, "kind") == dict.fromkeys(KINDS, 0.0)
            assert values(prom, "syncgov_sync_drift_oldest_age_seconds", "kind") == dict.fromkeys(KINDS, 0.0)

            for expr in expressions():  # every dashboard expression runs on a real Prometheus
                query(prom, expr)
        check_metrics(worker)
    finally:
        await rest.close()


@pytest.mark.kafka
def test_worker_exposition_passes_promtool_check_metrics(kafka_bootstrap, worker_factory) -> None:
    worker = worker_factory()
    release = {"event_id": "r1", "type": "OrderReleased", "occurred_at": format_ts(int(time.time() * 1000) - 60_000),
               "source": "erp", "warehouse_id": "WH1", "order_id": "O-1",
               "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": 1}]}
    produce(kafka_bootstrap, f"{worker_factory.prefix}.events", [(b"WH1", orjson.dumps(release)), (b"WH1", b"garbage")])
    wait_for(lambda: b"syncgov_dead_letters_total{" in worker.get("/metrics")[1], 60, "a dead letter counted")
    check_metrics(worker)


def drift_records(bootstrap: str, worker: WorkerProcess) -> list[dict[str, Any]]:
    records = [codec.decode(r.value) for r in read_all(bootstrap, worker.env["TOPIC_EXCEPTIONS"])]
    return [r for r in records if r["type"] == reconcile.DRIFT_TYPE]


@pytest.mark.erp
@pytest.mark.kafka
async def test_reconciliation_finds_drift_made_behind_the_pipelines_back(
        erp_stack, kafka_bootstrap, worker_factory) -> None:
    rest = erp_stack.direct_rest()
    try:
        created = [await new_order(rest, [("SKU-0031", 3)]) for _ in range(2)]
        shipped, unworked = created
        worker = worker_factory(**worker_env(erp_stack))
        await erp_flow(erp_stack, kafka_bootstrap, worker, rest, created, worked=1)
        env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        cli = [sys.executable, "-m", "app.cli", "reconcile"]
        clean = await asyncio.to_thread(subprocess.run, cli, env=env, capture_output=True, text=True, timeout=120)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "0 document(s) out of sync" in clean.stdout

        # Behind the pipeline's back: the shipped order is cancelled in the ERP, the order
        # the warehouse never touched is shipped there, and the stock count is undone.
        await rest.button(SHIPMENT, shipped["id"], "cancel")
        for button in ("assign_force", "pick", "pack", "do"):
            await rest.button(SHIPMENT, unworked["id"], button)
        adjustment, = [m for m in milestones_of(kafka_bootstrap, worker) if m["type"] == "InventoryAdjusted"]
        internal, = await rest.search(INTERNAL, [("reference", "=", adjustment["milestone_id"])], ["state"])
        assert internal["state"] == "done"
        await rest.button(INTERNAL, internal["id"], "cancel")

        found = await asyncio.to_thread(subprocess.run, cli, env=env, capture_output=True, text=True, timeout=120)
        assert found.returncode == 1, found.stdout + found.stderr
        for kind in KINDS:
            assert f"  {kind:<20} 1" in found.stdout, found.stdout
        assert erp_stack.key not in found.stdout + found.stderr

        settings = load({**env, "RECONCILE_WINDOW_S": "0"})  # every drift is overdue: SyncDrift records
        now = settings.reconcile
        first = await reconcile.run(settings, now)
        assert first.counts() == dict.fromkeys(KINDS, 1)
        assert len(first.published) == 3
        second = await reconcile.run(settings, now)
        assert second.drift == first.drift and second.published == () and second.known == 3

        records = drift_records(kafka_bootstrap, worker)
        assert sorted(r["kind"] for r in records) == sorted(KINDS)
        by_kind = {r["kind"]: r for r in records}
        assert by_kind["shipped_not_posted"]["order_id"] == shipped["number"]
        assert by_kind["shipped_not_posted"]["erp_ref"] == f"{SHIPMENT},{shipped['id']}"
        assert by_kind["posted_not_shipped"]["order_id"] == unworked["number"]
        assert by_kind["stock_moves_missing"]["milestone"] == adjustment["milestone_id"]
        assert {r["milestone_id"] for r in records} == set(first.published)
    finally:
        await rest.close()
