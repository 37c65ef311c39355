"""syncgov's alert rules: promtool-checked and unit-tested, runbook-linked.

The rules live in ONE place, ``.spec`` of ``k8s/base/prometheusrule.yaml``.
``ops/prometheus/extract_rules.py`` writes that spec as a plain rule file next
to a copy of ``ops/prometheus/alerts.test.yml``; promtool then checks and
unit-tests exactly what the cluster gets. promtool comes from Debian's
``prometheus`` package (``.ci/install-k8s-tools.sh``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.observability

ROOT = Path(__file__).resolve().parents[2]
RULE_MANIFEST = ROOT / "k8s" / "base" / "prometheusrule.yaml"
PROM_DIR = ROOT / "ops" / "prometheus"
ALERT_TESTS = PROM_DIR / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/syncgov/syncgov/blob/main/docs/runbook.md#"
#: the alerts the deployment issue asks for
EXPECTED_ALERTS = {
    "ErpPostingSlaBreach", "SyncDriftGrowing", "DeadLettersAppearing", "ErpDeadLettersAppearing",
    "ConsumerLagHigh", "ErpThrottledForLong", "WorkerNotCommitting", "TableRecoveryStuck", "ErpBacklogOld",
    "SyncgovFleetGone", "SourceStalled", "ReconcileFailing", "ReconcileNeverSucceeding",
}
SEVERITIES = {"critical", "warning", "info"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found (Debian package `prometheus`): run .ci/install-k8s-tools.sh")
    return path


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULE_MANIFEST.read_text(encoding="utf-8"))
    return [r for g in doc["spec"]["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prom-rules")
    proc = subprocess.run(
        [sys.executable, str(PROM_DIR / "extract_rules.py"), "--out", str(out), "--with-tests", "--with-config"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _promtool_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_extracted_rules_are_the_manifest_spec(rules_dir: Path) -> None:
    extracted = yaml.safe_load((rules_dir / "syncgov.rules.yml").read_text(encoding="utf-8"))
    manifest = yaml.safe_load(RULE_MANIFEST.read_text(encoding="utf-8"))
    assert extracted == {"groups": manifest["spec"]["groups"]}


def test_promtool_check_rules(rules_dir: Path) -> None:
    proc = _promtool_run("check", "rules", "syncgov.rules.yml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in proc.stdout + proc.stderr


def test_promtool_test_rules(rules_dir: Path) -> None:
    proc = _promtool_run("test", "rules", "alerts.test.yml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_local_prometheus_config_is_valid(rules_dir: Path) -> None:
    proc = _promtool_run("check", "config", "prometheus.yml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_issue_alerts_exist_once() -> None:
    names = [a["alert"] for a in _alerts()]
    assert sorted(names) == sorted(EXPECTED_ALERTS)


def _github_anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub renders them."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_alert_has_labels_annotations_and_a_runbook_section(alert: str) -> None:
    rule = next(r for r in _alerts() if r["alert"] == alert)
    assert rule["labels"]["severity"] in SEVERITIES
    ann = rule["annotations"]
    assert ann.get("summary") and ann.get("description")
    url = ann["runbook_url"]
    assert url.startswith(RUNBOOK_URL), url
    anchor = url[len(RUNBOOK_URL):]
    anchors = _github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    assert anchor in anchors, f"docs/runbook.md has no section #{anchor}"
    assert anchor == alert.lower()


def test_every_alert_has_a_firing_test_case() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["syncgov.rules.yml"]
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), f"alerts without a firing test case: {sorted(names - firing)}"
    assert len(quiet) >= 2, "keep not-firing cases for a couple of alerts"
    assert firing <= names and quiet <= names


def test_rules_only_use_metrics_the_app_exports() -> None:
    try:
        from app import metrics
    except ImportError:
        sys.path.insert(0, str(ROOT))
        from app import metrics
    exported = set()
    for family in metrics.REGISTRY.collect():
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
    used = {m for a in _alerts() for m in re.findall(r"\bsyncgov_[a-z0-9_]+", str(a["expr"]))}
    # labelled children (and a histogram's buckets) only appear once used: accept by family name
    suffixes = ("_bucket", "_count", "_sum", "_total")
    missing = {m for m in used if m not in exported and not any(m.removesuffix(s) in exported for s in suffixes)}
    assert not missing, f"rules reference metrics app.metrics does not define: {sorted(missing)}"
