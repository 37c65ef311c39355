"""The compiled build of this package, used when ``GOVERNANCE_CORE_BUILD`` names one.

``ops/build_core.py`` compiles the core's modules with mypyc (the compiler that ships with
mypy; it turns type-annotated Python into C extensions) into a directory *outside* the source
tree, with a manifest of the sources it was built from. Importing ``app.core`` with the
variable set puts that directory first on the package's search path, so ``app.core.engine``
and its siblings load as C extensions: the same source, the same rules, the same tests
(``tests/unit/core/test_native_core.py`` runs the core's suite against the build). Without
the variable the package is plain Python.

A build is refused, with an ``ImportError`` naming the variable, when it is missing, was made
for another Python, or from sources that differ from the ones beside this file in any module
of the package: a stale build never runs silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, MutableSequence
from pathlib import Path

ENV = "GOVERNANCE_CORE_BUILD"
MANIFEST = "manifest.json"
PACKAGE_DIR = Path(__file__).resolve().parent

#: The build directory in use in this process, or None (the package runs as plain Python).
active: str | None = None


class NativeBuildError(ImportError):
    """The build named by ``GOVERNANCE_CORE_BUILD`` cannot be used (the message says why)."""

    setting = ENV


def source_digests(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """sha256 of every ``.py`` module of the package, by module name."""
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(package_dir.glob("*.py"))}


def cache_tag() -> str:
    """What a build must match: the interpreter's implementation and version (the C ABI)."""
    return f"{sys.implementation.cache_tag}-{sys.platform}"


def check(build: Path, package_dir: Path = PACKAGE_DIR) -> dict[str, object]:
    """The build's manifest if ``build`` was made for this interpreter from these sources."""
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except FileNotFoundError:
        raise NativeBuildError(f"no {MANIFEST} there (build one: python ops/build_core.py "
                               f"--out {build})") from None
    except (OSError, ValueError) as exc:
        raise NativeBuildError(f"unreadable {MANIFEST}: {exc}") from None
    if manifest.get("python") != cache_tag():
        raise NativeBuildError(f"built for {manifest.get('python')}, this interpreter is {cache_tag()}")
    built = manifest.get("sources") or {}
    here = source_digests(package_dir)
    stale = sorted(name for name in set(built) | set(here) if built.get(name) != here.get(name))
    if stale:
        raise NativeBuildError(f"built from other sources of app/core ({', '.join(stale)} differ); "
                               f"rebuild it: python ops/build_core.py --out {build}")
    compiled = manifest.get("compiled") or []
    missing = [name for name in compiled if not list((build / "app" / "core").glob(f"{name}.*.so"))]
    if missing:
        raise NativeBuildError(f"the manifest lists {', '.join(missing)} but no extension is there")
    return dict(manifest)


def activate(package_path: MutableSequence[str], env: Mapping[str, str] = os.environ) -> str | None:
    """Put the build named by ``GOVERNANCE_CORE_BUILD`` (if any) first on ``package_path``
    (the package's ``__path__``), before any of its compiled modules is imported."""
    global active
    raw = env.get(ENV, "").strip()
    if not raw:
        return None
    build = Path(raw).resolve()
    try:
        check(build)
    except NativeBuildError as exc:
        raise NativeBuildError(f"{ENV}={raw}: {exc}") from None
    modules = str(build / "app" / "core")
    if modules not in package_path:
        package_path.insert(0, modules)
    if str(build) not in sys.path:
        sys.path.append(str(build))  # mypyc's shared runtime module of the build is a top-level one
    active = str(build)
    return active
