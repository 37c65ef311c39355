"""Compile the governance core (``app/core``) with mypyc into a directory of its own.

    python ops/build_core.py --out build/core-native      # then GOVERNANCE_CORE_BUILD=build/core-native

mypyc ships with mypy (a development dependency; the image installs it in its build stage
only). It compiles the core's type-annotated modules to C extensions; nothing is written
into the source tree: the sources are copied to a temporary directory, compiled there, and
the extensions land in ``<out>/app/core/`` beside ``<out>/manifest.json`` (the interpreter and
the sha256 of every module of ``app/core``, which ``app.core._native`` checks before it uses
the build). ``--if-stale`` rebuilds only when the manifest no longer matches.

Left as Python: ``__init__`` and ``_native`` (they choose the build) and ``model`` (its
frozen-dataclass constructors are tuned for the interpreter; the compiled modules use its
classes as ordinary Python classes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.pop("GOVERNANCE_CORE_BUILD", None)  # the tool reads the sources; an old build must not load
from app.core import _native  # noqa: E402

PYTHON_ONLY = frozenset({"__init__", "_native", "model"})

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
modules = sys.argv[1:]
sys.argv = [sys.argv[0], "build_ext", "--inplace"]
setup(name="syncgov-core-native", ext_modules=mypycify(modules, opt_level="3"))
"""


def compiled_modules(package_dir: Path = _native.PACKAGE_DIR) -> list[str]:
    return sorted(p.stem for p in package_dir.glob("*.py") if p.stem not in PYTHON_ONLY)


def is_current(out: Path) -> bool:
    """The build there is of these sources, for this interpreter, and compiles the modules
    this tool compiles now (a module moved in or out of ``PYTHON_ONLY`` rebuilds it)."""
    try:
        manifest = _native.check(out)
    except ImportError:
        return False
    return manifest.get("compiled") == compiled_modules()


def build(out: Path, *, python: str = sys.executable, quiet: bool = True) -> dict[str, object]:
    """Compile into ``out`` (replaced atomically); returns the manifest written."""
    started = time.monotonic()
    sources = _native.source_digests()
    modules = compiled_modules()
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="core-native-", dir=out.parent) as tmp:
        work = Path(tmp) / "src"
        (work / "app" / "core").mkdir(parents=True)
        (work / "app" / "__init__.py").write_text("")
        for p in _native.PACKAGE_DIR.glob("*.py"):
            shutil.copy2(p, work / "app" / "core" / p.name)
        (work / "setup_native.py").write_text(_SETUP)
        proc = subprocess.run([python, "setup_native.py", *(f"app/core/{m}.py" for m in modules)], cwd=work,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"mypyc failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        staged = Path(tmp) / "out"
        (staged / "app" / "core").mkdir(parents=True)
        for so in (work / "app" / "core").glob("*.so"):
            shutil.copy2(so, staged / "app" / "core" / so.name)
        for so in work.glob("*__mypyc*.so"):  # the build's shared runtime module (top level)
            shutil.copy2(so, staged / so.name)
        import mypy.version

        manifest: dict[str, object] = {
            "python": _native.cache_tag(),
            "mypyc": mypy.version.__version__,
            "compiled": modules,
            "python_only": sorted(PYTHON_ONLY),
            "sources": sources,
            "build_s": round(time.monotonic() - started, 1),
        }
        (staged / _native.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _native.check(staged)
        old = Path(tmp) / "old"
        if out.exists():
            out.rename(old)
        staged.rename(out)
    if not quiet:
        print(f"core-native: {len(modules)} modules compiled into {out} in {manifest['build_s']} s", file=sys.stderr)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "core-native")
    p.add_argument("--if-stale", action="store_true", help="do nothing when the build there is current")
    args = p.parse_args(argv)
    if args.if_stale and is_current(args.out):
        print(f"core-native: {args.out} is current", file=sys.stderr)
        return 0
    build(args.out, quiet=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
