"""The Quix Streams peer of the throughput benchmark: its venv and one timed run.

``ensure_venv()`` makes ``.venv-quix`` (idempotent: a stamp file names the packages it
holds) with Quix Streams 3.28.1, orjson and fastavro, apart from the project's venv
(Quix pins its own confluent-kafka and rocksdict). ``run()`` starts
``benchmarks/quix_peer.py`` in it over a recorded events topic and returns its timing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-quix"
#: What the peer needs besides the repository (app.core: orjson, msgspec; app.kafka.codec: fastavro).
PACKAGES = ("quixstreams==3.28.1", "orjson", "msgspec", "fastavro", "py-spy==0.4.3")  # py-spy: worker_bench --profile
STAMP = VENV / ".installed"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """The peer's interpreter, installing the venv first if it is missing or out of date."""
    want = "\n".join(PACKAGES)
    if python().exists() and STAMP.exists() and STAMP.read_text() == want:
        return python()
    base = os.environ.get("QUIX_PYTHON", sys.executable)
    if not python().exists():
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python()), "-m", "pip", "install", "-q", *PACKAGES], check=True, timeout=900)
    STAMP.write_text(want)
    return python()


def run(bootstrap: str, topic: str, records: int, app_id: str, state_dir: Path, partitions: int,
        timeout_s: float = 600, exactly_once: bool = False) -> dict[str, Any]:
    """One run of the peer: events/s (first record to the last one processed), seconds, CPU
    seconds, VmHWM; raises if it does not finish. Its milestones are on ``<app_id>.milestones``
    and ``<app_id>.exceptions`` when it returns. ``exactly_once``: Quix's own exactly-once
    processing guarantee (Kafka transactions), to compare with a worker that runs with them."""
    cmd = [str(ensure_venv()), str(ROOT / "benchmarks" / "quix_peer.py"), "--bootstrap", bootstrap,
           "--topic", topic, "--app-id", app_id, "--records", str(records), "--partitions", str(partitions),
           "--state-dir", str(state_dir), "--timeout", str(timeout_s),
           "--processing-guarantee", "exactly-once" if exactly_once else "at-least-once"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 120, cwd=ROOT)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    result: dict[str, Any] | None = next((x for x in lines if "events_per_s" in x), None)
    error = next((x["error"] for x in lines if "error" in x), None)
    if proc.returncode != 0 or result is None or error:
        raise RuntimeError(f"Quix peer exited {proc.returncode}: {error or ''} {proc.stderr[-800:]}")
    result["wall_s"] = time.perf_counter() - started
    return result
