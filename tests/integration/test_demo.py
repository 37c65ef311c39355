"""`python -m app.harness.demo` end to end: it exits 0, its report shows every shipment done in
Tryton with the tracking number the warehouse dispatched, no secret is printed, and
nothing it started is still running afterwards."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.harness.demo import ORDERS, SEED
from app.simulator.work import tracking_no

pytestmark = [pytest.mark.erp, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 300


def run_demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    """The demo as `make demo` runs it; on a timeout it gets SIGTERM (so it stops what it started)."""
    proc = subprocess.Popen([sys.executable, "-m", "app.harness.demo", "--dir", str(workdir)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"demo did not finish within {RUN_TIMEOUT_S} s:\n{out[-4000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def leftovers(workdir: Path, ports: set[int], pids: set[int]) -> list[str]:
    """Processes the demo started that still run: one of its pids or in their process groups
    (each child leads its own), or referring to its work dir or ports (command line, environment)."""
    marks = [str(workdir), *(f"127.0.0.1:{port}" for port in ports)]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state == "Z":
            continue
        if (int(entry.name) in pids or int(pgrp) in pids
                or any(mark in cmdline or mark in environ for mark in marks)):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(RUN_TIMEOUT_S + 90)
def test_demo_ends_with_every_shipment_done_and_leaves_nothing_running(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    done = run_demo(workdir)
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out[-4000:]}\n{done.stderr[-4000:]}"

    rows = re.findall(r"^  (OUT-\d+) .* (\w+) +(TRK\d+|-) +\d", out, re.MULTILINE)
    assert len({number for number, _, _ in rows}) == ORDERS, out
    for number, state, tracking in rows:
        assert (state, tracking) == ("done", tracking_no(SEED, number)), number
    assert "\nOK: " in out

    key = (workdir / "tryton" / "rest.key").read_text().strip()
    assert key and key not in out and key not in done.stderr

    pids = {int(pid) for pid in re.findall(r"\bpid (\d+)", out)}
    ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", out)}
    assert len(pids) >= 4 and len(ports) >= 4, out  # broker, Tryton, gateway, worker
    assert leftovers(workdir, ports, pids) == []
    assert [port for port in ports if listening(port)] == []
