"""Child processes of the demo, the tests and the benchmarks: a worker started as
`syncgov worker`, waited for on /readyz, stopped cleanly or killed with -9."""
from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from app.kafka.embedded import die_with_parent, free_port, terminate

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """One `syncgov worker` process with its own store path and web port."""

    bootstrap: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    web_port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.log_path or self.data_dir / "worker.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, ready_timeout_s: float = 90.0) -> WorkerProcess:
        if not self.web_port:
            self.web_port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "WORKER_DATA_DIR": str(self.data_dir),
            "WORKER_WEB_PORT": str(self.web_port),
            "WORKER_WEB_HOST": "127.0.0.1",
            **self.env,
        }
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log.close()
        self.wait_ready(ready_timeout_s)
        return self

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        """HTTP GET on the worker's web port: (status, body)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"worker exited during start-up; see {self.data_dir / 'worker.log'}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready within {timeout_s}s; see {self.data_dir / 'worker.log'}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a clean leave of the group), SIGKILL after the bound."""
        proc, self.process = self.process, None
        if proc is not None:
            terminate(proc, timeout_s)

    def kill9(self) -> None:
        """Crash it: no flush, no commit, no goodbye to the group."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


@functools.cache
def ops_module(relative: str) -> ModuleType:
    """Import a stdlib-only launcher script from ``ops/`` (not a package), e.g. ``erp/run.py``."""
    path = ROOT / "ops" / relative
    spec = importlib.util.spec_from_file_location(f"_syncgov_ops_{path.parent.name}_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
