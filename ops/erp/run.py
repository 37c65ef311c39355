"""Start and stop a throw-away Tryton server from the cached template database.

    python ops/erp/run.py start --dir var/erp-run --port 8000   # prints JSON
    python ops/erp/run.py stop --dir var/erp-run

``start`` builds the template if needed (``init_db.ensure_template``), copies
it into ``--dir``, renders ``trytond.conf``, starts ``trytond`` in its own
process group (pid in ``--dir/trytond.pid``, output in ``--dir/trytond.log``)
and waits until ``/<db>/rest/model/res.user`` answers 200 with the REST key.
Stdlib only, so the app venv's test fixtures can import it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import init_db

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ops/: procgroup
from procgroup import stop_pid, stop_pid_file


@dataclass(frozen=True)
class ErpServer:
    """A running Tryton server."""

    pid: int
    base_url: str  # e.g. http://127.0.0.1:8000
    database: str
    key_file: Path
    log_file: Path


def _wait_ready(url: str, key: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"Authorization": f"bearer {key}"})
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"trytond exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"trytond did not answer {url} within {timeout_s:.0f} s")
        time.sleep(0.2)


def start(workdir: Path, port: int, timeout_s: float = 60.0) -> ErpServer:
    """Copy the template into ``workdir`` and start trytond on ``127.0.0.1:port``."""
    template = init_db.ensure_template()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    database = init_db.DATABASE
    for stale in ("-wal", "-shm", "-journal"):  # SQLite side files of an earlier run
        (workdir / f"{database}.sqlite{stale}").unlink(missing_ok=True)
    shutil.copyfile(template / f"{database}.sqlite", workdir / f"{database}.sqlite")
    key_file = workdir / "rest.key"
    shutil.copyfile(template / "rest.key", key_file)
    os.chmod(key_file, 0o600)
    conf = init_db.render_config(workdir, port, workdir / "trytond.conf")
    log_file = workdir / "trytond.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [str(init_db.VENV / "bin" / "trytond"), "-c", str(conf)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    (workdir / "trytond.pid").write_text(str(proc.pid))
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base_url}/{database}/rest/model/res.user?s=1", key_file.read_text().strip(), proc, timeout_s)
    except BaseException:
        stop_pid(proc.pid)
        raise
    return ErpServer(pid=proc.pid, base_url=base_url, database=database, key_file=key_file, log_file=log_file)


def stop(workdir: Path) -> None:
    """Stop the server whose pid file is in ``workdir``."""
    stop_pid_file(workdir / "trytond.pid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=init_db.ROOT / "var" / "erp-run")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.action == "stop":
        stop(args.dir)
        return
    server = start(args.dir, args.port)
    print(json.dumps({"pid": server.pid, "base_url": server.base_url, "database": server.database,
                      "key_file": str(server.key_file), "log_file": str(server.log_file)}))


if __name__ == "__main__":
    main()
