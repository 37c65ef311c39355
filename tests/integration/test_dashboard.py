"""The Grafana dashboard: every expression parses (promtool, via a rules file with one
recording rule per expression), uses only metrics the app exports, and the dashboard
covers what the issue asks for. tests/integration/test_observability.py also runs every
expression against a real Prometheus."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import metrics

pytestmark = pytest.mark.observability

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "syncgov-dashboard.json"
#: Grafana's built-in interval variables and the dashboard's own (namespace, job: "All" is
#: the regex ``.*``, which also matches a series without the label), replaced by a sample
#: value before parsing.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*", "$job": ".*"}
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def panels(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for p in (dashboard or json.loads(DASHBOARD.read_text(encoding="utf-8")))["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def raw_expressions() -> list[str]:
    """Every target expression as the dashboard has it."""
    return [t["expr"] for p in panels() for t in p.get("targets", [])]


def expressions() -> list[str]:
    """Every target expression, Grafana variables substituted."""
    exprs = []
    for expr in raw_expressions():
        for var, sample in GRAFANA_VARS.items():
            expr = expr.replace(var, sample)
        exprs.append(expr)
    return exprs


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool not found (Debian package `prometheus`)")
    exprs = expressions()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"syncgov:dashboard_expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    proc = subprocess.run([promtool, "check", "rules", "dashboard.rules.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout + proc.stderr


def test_expressions_use_only_exported_metrics() -> None:
    exported = {f.name for f in metrics.REGISTRY.collect()}
    exported |= {s.name for f in metrics.REGISTRY.collect() for s in f.samples}
    used = {m for e in expressions() for m in re.findall(r"\bsyncgov_[a-z0-9_]+", e)}
    missing = {m for m in used if m not in exported and not any(m.removesuffix(s) in exported for s in SUFFIXES)}
    assert not missing, f"the dashboard uses metrics app.metrics does not define: {sorted(missing)}"


def test_dashboard_covers_the_issue() -> None:
    text = " ".join(expressions())
    for metric in ("syncgov_shipment_confirmed_to_posted_seconds_bucket", "syncgov_order_release_to_picked_seconds_bucket",
                   "syncgov_milestones_total", "syncgov_sync_exceptions_total", "syncgov_erp_calls_total",
                   "syncgov_erp_throttled_total", "syncgov_erp_backlog_milestones", "syncgov_sync_drift_documents",
                   "syncgov_consumer_lag_records"):
        assert metric in text, metric
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.95," in text


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "namespace", "job"]
    for v in dashboard["templating"]["list"][1:]:
        assert v["type"] == "query" and v["includeAll"] and v["allValue"] == ".*"
        assert v["datasource"]["uid"] == "${datasource}"
        assert v["query"]["query"].startswith("label_values(syncgov_") and v["query"]["query"].endswith(f", {v['name']})")
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for p in panels(dashboard):
        assert p["title"]
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_every_metric_is_scoped_by_the_namespace_and_job_variables() -> None:
    """Each selector of a syncgov metric filters on $namespace and $job (two installs in one
    Prometheus never mix on the dashboard)."""
    for expr in raw_expressions():
        selectors = re.findall(r"\bsyncgov_[a-z0-9_]+(\{[^}]*\})?", expr)
        assert selectors, expr
        for labels in selectors:
            assert 'namespace=~"$namespace"' in labels and 'job=~"$job"' in labels, expr


def test_erp_client_figures_are_shown_by_role() -> None:
    text = " ".join(raw_expressions())
    for metric in ("syncgov_erp_rate_limit_per_second", "syncgov_erp_throttled_total", "syncgov_erp_quota_share_per_second",
                   "syncgov_erp_requests_total"):
        assert re.search(rf"sum by \((?:[a-z, ]*)role(?:[a-z, ]*)\) \((?:rate\()?{metric}\b", text), metric
    assert "syncgov_source_last_poll_success_timestamp_seconds" in text and "syncgov_reconcile_runs_total" in text
