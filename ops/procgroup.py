"""Process-group helpers shared by the ops launchers (Tryton, the nginx gateway, the
fault proxy): each runs its server in a process group of its own. Stdlib only; the
launchers import it by putting ``ops/`` on ``sys.path``. ``free_port`` and ``die_with_parent``
have a twin in ``app/kafka/embedded.py`` on purpose: these launchers run without syncgov
installed, and the image ships ``app/`` without ``ops/``."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """In the child before exec: own session (process group), SIGKILL when the parent dies."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    """Until ``port`` accepts connections; an error if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not listen on {port} within {timeout_s:.0f} s") from None
            time.sleep(0.05)


def stop_pid(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group of ``pid``; once ``pid`` is gone or after ``grace_s``,
    SIGKILL whatever is left of the group (e.g. nginx workers)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                break
        except ChildProcessError:  # not our child: poll for existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def stop_pid_file(pid_file: Path) -> None:
    """Stop the process group whose leader's pid is in ``pid_file``, and remove the file."""
    if pid_file.is_file():
        stop_pid(int(pid_file.read_text()))
        pid_file.unlink()
