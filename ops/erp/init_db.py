"""Build the cached Tryton template database once (~30 s), reuse it afterwards.

The template lives in ``<repo>/var/erp-template/`` (``erp.sqlite``, ``rest.key``
mode 0600, ``stamp``). It is rebuilt only when the stamp (a hash of the
requirements, this script, ``setup_data.py`` and the config template) changes.
Each ERP run copies it into a fresh directory (``ops/erp/run.py``).

Stdlib only: callable from any Python (the app venv's test fixtures) and as
``python ops/erp/init_db.py``.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = ROOT / ".venv-erp"
TEMPLATE_DIR = ROOT / "var" / "erp-template"
DATABASE = "erp"
MODULES = ("sale", "stock", "stock_package_shipping", "carrier")
_STAMPED = ("requirements.txt", "init_db.py", "setup_data.py", "trytond.conf.tmpl")


def render_config(db_dir: Path, port: int, out: Path) -> Path:
    """Write a trytond.conf for ``db_dir`` listening on ``127.0.0.1:port``."""
    text = Template((HERE / "trytond.conf.tmpl").read_text()).substitute(db_dir=db_dir, port=port)
    out.write_text(text)
    return out


def _stamp() -> str:
    digest = hashlib.sha256()
    for name in _STAMPED:
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()


def _is_current() -> bool:
    stamp = TEMPLATE_DIR / "stamp"
    return stamp.is_file() and stamp.read_text().strip() == _stamp() and (TEMPLATE_DIR / "rest.key").is_file()


def _build(work: Path) -> None:
    conf = render_config(work, 0, work / "trytond.conf")
    (work / f"{DATABASE}.sqlite").touch()
    pass_file = work / "admin.pass"
    pass_file.write_text("admin\n")
    env = {**os.environ, "TRYTONPASSFILE": str(pass_file)}
    subprocess.run(
        [str(VENV / "bin" / "trytond-admin"), "-c", str(conf), "-d", DATABASE, "--all",
         "--email", "admin@example.com", "-u", *MODULES, "--activate-dependencies"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [str(VENV / "bin" / "python"), str(HERE / "setup_data.py"), "--config", str(conf),
         "--database", DATABASE, "--key-file", str(work / "rest.key")],
        check=True, env=env,
    )
    with closing(sqlite3.connect(work / f"{DATABASE}.sqlite")) as db:  # one self-contained file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for name in ("trytond.conf", "admin.pass", f"{DATABASE}.sqlite-wal", f"{DATABASE}.sqlite-shm"):
        (work / name).unlink(missing_ok=True)
    (work / "stamp").write_text(_stamp())


def ensure_template() -> Path:
    """Install the Tryton venv and build the template if missing or stale; return its dir."""
    if _is_current():
        return TEMPLATE_DIR
    TEMPLATE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(TEMPLATE_DIR.parent / ".erp-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current():
            return TEMPLATE_DIR
        subprocess.run(["bash", str(HERE / "install.sh")], check=True)
        work = Path(tempfile.mkdtemp(prefix=".erp-template-", dir=TEMPLATE_DIR.parent))
        try:
            _build(work)
            shutil.rmtree(TEMPLATE_DIR, ignore_errors=True)
            work.rename(TEMPLATE_DIR)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return TEMPLATE_DIR


if __name__ == "__main__":
    print(ensure_template(), file=sys.stderr)
