"""The house's rules that a newcomer relies on, checked on the source tree:

- no module outside ``app/runtime/faust_adapter.py`` imports a private Faust or aiokafka
  name, or reaches into a private attribute of theirs;
- building the worker (``create_app``) and importing every operator command loads no
  harness (``app/harness``), test or benchmark module, and the runtime image leaves them out;
- importing the app's modules reads no setting and builds no Faust app (the composition
  root does that when called).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ADAPTER = ROOT / "app" / "runtime" / "faust_adapter.py"
RUNTIME_PACKAGES = ("app", "agents", "tables")


def _sources() -> list[Path]:
    return [p for pkg in RUNTIME_PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def _private_faust_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("faust", "aiokafka", "mode"):
            parts = node.module.split(".")
            found += [f"{node.module}" for p in parts if p.startswith("_") and not p.startswith("__")]
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names
                      if a.name.split(".")[0] in ("faust", "aiokafka", "mode") and any(
                          p.startswith("_") for p in a.name.split("."))]
    return found


def test_only_the_adapter_imports_private_faust_names() -> None:
    offenders = {str(p.relative_to(ROOT)): uses for p in _sources() if p != ADAPTER and (uses := _private_faust_uses(p))}
    assert offenders == {}
    assert _private_faust_uses(ADAPTER), "the adapter is where they are (this check must see them)"


def test_the_worker_and_the_commands_load_no_harness_and_read_no_setting_on_import() -> None:
    script = """
import json, os, sys
os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
import app.faust_app, app.cli, agents, agents.governance, agents.erp_sink, agents.reconcile
import tables.state, tables.inventory, tables.ledger, app.web, app.opspage
import app.kafka.topics, app.runtime.outputs
from app.commands import worker, source, replay, dlq, export, trace
import app.erp.reconcile
built = [m for m in sys.modules if m.startswith(("app.harness", "tests", "benchmarks"))]
from app import settings
s = settings.load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "WORKER_DATA_DIR": sys.argv[1]})
w = app.faust_app.create_app(s)
built += [m for m in sys.modules if m.startswith(("app.harness", "tests", "benchmarks"))]
print(json.dumps({"harness": sorted(set(built)), "agents": sorted(w.app.agents), "tables": sorted(w.app.tables)}))
"""
    import tempfile

    with tempfile.TemporaryDirectory() as data_dir:
        # no KAFKA_BOOTSTRAP_SERVERS: importing would fail if any module read the settings
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", script, data_dir], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["harness"] == []
    assert any(a.endswith("own_partitions") for a in found["agents"])
    assert found["tables"] == ["erp-ledger", "governance-state", "inventory-state"]


def test_the_runtime_image_leaves_the_harnesses_tests_and_benchmarks_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"app/harness", "tests", "benchmarks"} <= ignored
