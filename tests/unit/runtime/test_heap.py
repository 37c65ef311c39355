"""The GC policy, applied in a child process (it would change the test runner's own heap)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import settings as settings_module

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout.strip()


def test_the_policy_freezes_start_up_and_raises_the_thresholds() -> None:
    out = _run("import gc; from app.runtime import heap; print(heap.tune(), gc.get_freeze_count() > 1000)")
    assert out == "(50000, 20, 20) True"


def test_zero_keeps_pythons_defaults_and_freezes_nothing() -> None:
    out = _run("import gc; from app.runtime import heap; d = gc.get_threshold(); "
               "print(heap.tune(0) == d, gc.get_freeze_count())")
    assert out == "True 0"


def test_cycles_are_still_collected_under_the_policy() -> None:
    out = _run("import gc, weakref\n"
               "from app.runtime import heap\n"
               "heap.tune()\n"
               "class Node: pass\n"
               "a, b = Node(), Node(); a.peer, b.peer = b, a\n"
               "gone = weakref.ref(a); del a, b\n"
               "junk = [[i] for i in range(200_000)]\n"  # enough allocations for young collections
               "print(gone() is None)")
    assert out == "True"


def test_the_worker_setting_defaults_to_the_policy_and_rejects_a_negative() -> None:
    assert settings_module.load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}).worker.gc_gen0 == 50_000
    with pytest.raises(settings_module.SettingsError, match="WORKER_GC_GEN0"):
        settings_module.load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "WORKER_GC_GEN0": "-1"})
