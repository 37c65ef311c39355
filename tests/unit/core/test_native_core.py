"""The compiled (mypyc) build of the core: the same rules as the plain-Python core.

One build per session (ops/build_core.py, ~15 s on 2 cores, into a temporary directory). The
core's whole suite runs again in a child process with ``GOVERNANCE_CORE_BUILD`` pointing at
it (the child proves the compiled modules are the ones loaded), ``syncgov replay`` gives the
same milestones and dead letters byte for byte with and without it, and a build that does
not match the sources, the interpreter or its own manifest is refused, naming the setting.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core import _native

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "ops"))
import build_core  # noqa: E402

ENV = _native.ENV


def _env(build: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if build is not None:
        env[ENV] = str(build)
    return env


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("native") / "core-native"
    manifest = build_core.build(out)
    assert manifest["compiled"] == build_core.compiled_modules()
    assert "engine" in manifest["compiled"] and "model" not in manifest["compiled"]
    return out


def test_the_compiled_modules_are_the_ones_loaded(build: Path) -> None:
    probe = ("import app.core, app.core.engine as e, app.core.parse as p, app.core.model as m; "
             "print(app.core._native.active); print(e.__file__); print(p.__file__); print(m.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(build), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == str(build.resolve())
    assert out[1].startswith(str(build.resolve())) and out[1].endswith(".so")
    assert out[2].endswith(".so")
    assert out[3] == str(ROOT / "app" / "core" / "model.py")  # left as Python on purpose
    plain = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(None), capture_output=True,
                           text=True, check=True).stdout.split()
    assert plain[0] == "None" and plain[1].endswith("engine.py")


def test_the_core_suite_passes_against_the_build(build: Path) -> None:
    here = Path(__file__).relative_to(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here.parent), f"--ignore={here}",
         "-o", "addopts=--strict-markers"],
        cwd=ROOT, env=_env(build), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout and "skipped" not in proc.stdout


def test_replay_gives_the_same_bytes_with_the_build(build: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_core import generate

    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(line + b"\n" for line in generate(40_000, seed=11)))
    outputs = {}
    for name, where in (("python", None), ("native", build)):
        milestones, dead = tmp_path / f"{name}.ndjson", tmp_path / f"{name}.dead.ndjson"
        subprocess.run([sys.executable, "-m", "app.cli", "replay", str(events), "--output", str(milestones),
                        "--dead-letter", str(dead), "--quiet"], cwd=ROOT, env=_env(where), check=True, timeout=300)
        outputs[name] = (milestones.read_bytes(), dead.read_bytes())
    assert outputs["python"][0].count(b"\n") > 5_000 and outputs["python"][1].count(b"\n") > 10
    assert outputs["native"] == outputs["python"]


def _copy(build: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    return copy


def _refusal(build: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "app.cli", "replay", "-", "--quiet"], cwd=ROOT, env=_env(build),
                          input="", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    return proc.stderr


def test_a_build_from_other_sources_is_refused_naming_the_setting(build: Path, tmp_path: Path) -> None:
    copy = _copy(build, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["sources"]["orders"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    err = _refusal(copy)
    assert f"configuration error: {ENV}={copy}" in err and "other sources of app/core (orders differ)" in err
    assert "ops/build_core.py" in err


def test_a_build_for_another_python_or_missing_an_extension_is_refused(build: Path, tmp_path: Path) -> None:
    copy = _copy(build, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "python": "cpython-310-linux"}))
    with pytest.raises(_native.NativeBuildError, match="built for cpython-310-linux, this interpreter is cpython-"):
        _native.check(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _native.check(copy)
    for so in (copy / "app" / "core").glob("stock.*.so"):
        so.unlink()
    with pytest.raises(_native.NativeBuildError, match="lists stock but no extension is there"):
        _native.check(copy)


def test_no_build_there_is_a_configuration_error(tmp_path: Path) -> None:
    from app import settings

    err = _refusal(tmp_path / "nowhere")
    assert f"{ENV}={tmp_path / 'nowhere'}: no manifest.json there" in err
    with pytest.raises(settings.SettingsError, match=f"{ENV}=.*no manifest.json there"):
        settings.load({"KAFKA_BOOTSTRAP_SERVERS": "embedded", ENV: str(tmp_path)})


def test_the_build_tool_never_writes_into_the_source_tree(build: Path) -> None:
    assert not list((ROOT / "app" / "core").glob("*.so"))
    assert not (ROOT / "app" / "core" / "build").exists()
    assert build_core.is_current(build)


def test_a_build_that_compiled_other_modules_is_not_current(build: Path, tmp_path: Path) -> None:
    """A module moved in or out of the tool's ``PYTHON_ONLY`` since the build: ``--if-stale``
    builds again (the build is still usable, ``_native.check`` passes; it is only not the one
    the tool makes now)."""
    copy = _copy(build, tmp_path)
    assert build_core.is_current(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "compiled": manifest["compiled"][:-1]}))
    _native.check(copy)
    assert not build_core.is_current(copy)
