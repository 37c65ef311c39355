"""The chaos stack and its faults.

``ErpSide``: Tryton (a copy of the template database) <- the fault proxy
(``ops/chaos/faultproxy.py``: 500s, timeouts, answers lost after commit) <- the nginx
quota gateway (``ops/nginx/gateway.py``; swapped to ``ops/chaos/gateway-429.conf.tmpl``
for a throttling storm). Tryton can be stopped and started again on the same port and
database directory.

``WorkerPool``: ``syncgov worker`` processes (kill -9, SIGSTOP/SIGCONT, clean stop, start,
scale), with a supervisor that restarts a worker that exited by itself (and records it: a
crash). A worker that exits with code 75 shortly after an injected stall found itself
fenced (its group lease expired while it was stopped): that is the expected end of a
zombie; it is restarted and recorded as such, not as a crash.
``Supervised``: the same for ``syncgov source``.

Records: poison records of five kinds (each one must end in the dead-letter topic with a
reason) and ``PickConfirmed`` written with the oldest published writer schema.
"""
from __future__ import annotations

import functools
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import orjson
from fastavro import parse_schema, schemaless_writer

from app.commands.replay import process_record
from app.core.engine import Engine
from app.core.model import DeadLetter
from app.core.timeutil import parse_ts
from app.erp.client import ErpHttpClient
from app.erp.ratelimit import RatePolicy
from app.erp.tryton import TrytonRest
from app.harness.processes import WorkerProcess, ops_module
from app.kafka import codec
from app.kafka.embedded import die_with_parent, free_port, terminate
from app.runtime.ownership import FENCED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[3]
CHAOS_OPS = ROOT / "ops" / "chaos"


Say = Callable[[str], None]


# -- the ERP side: Tryton <- fault proxy <- nginx gateway -----------------------------------------


@dataclass
class ErpSide:
    """Tryton behind the fault proxy behind the nginx gateway, each on its own free port."""

    workdir: Path
    gateway_rate: float = 20
    gateway_burst: int = 10
    retry_after_s: int = 1
    tryton_port: int = 0
    proxy_port: int = 0
    gateway_port: int = 0
    database: str = ""
    key_file: Path | None = None
    tryton_pid: int = 0
    proxy_pid: int = 0
    gateway_pid: int = 0
    _tryton_proc: subprocess.Popen[bytes] | None = None

    @property
    def tryton_url(self) -> str:
        return f"http://127.0.0.1:{self.tryton_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def key(self) -> str:
        assert self.key_file is not None
        return self.key_file.read_text().strip()

    @property
    def access_log(self) -> Path:
        return self.workdir / "nginx" / "access.log"

    @property
    def proxy_log(self) -> Path:
        return self.workdir / "proxy" / "proxy.log"

    def start(self) -> ErpSide:
        run = ops_module("erp/run.py")
        proxy = ops_module("chaos/faultproxy.py")
        gateway = ops_module("nginx/gateway.py")
        self.tryton_port = self.tryton_port or free_port()
        server = run.start(self.workdir / "tryton", self.tryton_port)
        self.tryton_pid, self.database, self.key_file = server.pid, server.database, server.key_file
        self.proxy_port = self.proxy_port or free_port()
        self.proxy_pid = proxy.start(self.workdir / "proxy", self.proxy_port, f"127.0.0.1:{self.tryton_port}").pid
        self.gateway_port = self.gateway_port or free_port()
        gw = gateway.start(self.workdir / "nginx", self.gateway_port, f"127.0.0.1:{self.proxy_port}",
                           rate_per_s=self.gateway_rate, burst=self.gateway_burst, retry_after_s=self.retry_after_s)
        self.gateway_pid = gw.pid
        return self

    def stop(self) -> None:
        """Stop what runs (gateway, proxy, Tryton); safe to call twice."""
        for relative, attr in (("nginx/gateway.py", "gateway_pid"), ("chaos/faultproxy.py", "proxy_pid"),
                               ("erp/run.py", "tryton_pid")):
            pid = getattr(self, attr)
            if pid:
                try:
                    ops_module(relative).stop_pid(pid)
                finally:
                    setattr(self, attr, 0)

    # (b) the ERP down and up again -----------------------------------------------------------

    def stop_tryton(self) -> None:
        if self.tryton_pid:
            ops_module("erp/run.py").stop_pid(self.tryton_pid)
            self.tryton_pid = 0

    def start_tryton(self, timeout_s: float = 120.0) -> None:
        """Start trytond again on the same port and database directory (no template copy)."""
        run = ops_module("erp/run.py")
        workdir = (self.workdir / "tryton").resolve()
        with open(workdir / "trytond.log", "ab") as log:
            proc = subprocess.Popen(
                [str(run.init_db.VENV / "bin" / "trytond"), "-c", str(workdir / "trytond.conf")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        (workdir / "trytond.pid").write_text(str(proc.pid))
        self._tryton_proc, self.tryton_pid = proc, proc.pid
        run._wait_ready(f"{self.tryton_url}/{self.database}/rest/model/res.user?s=1", self.key, proc, timeout_s)

    # (c) the gateway's configuration: normal, 429 to everything, 500 to everything ----------

    def gateway_template(self, name: str) -> None:
        """Swap the running gateway's config (``normal``, ``429`` or ``500``) and reload nginx."""
        gateway = ops_module("nginx/gateway.py")
        gw_dir = (self.workdir / "nginx").resolve()
        upstream = f"127.0.0.1:{self.proxy_port}"
        if name == "normal":
            conf = gateway.render(gw_dir, self.gateway_port, upstream, self.gateway_rate, self.gateway_burst,
                                  self.retry_after_s)
        else:
            values = {"dir": str(gw_dir), "port": str(self.gateway_port), "upstream": upstream,
                      "rate": gateway.nginx_rate(self.gateway_rate), "burst": str(self.gateway_burst),
                      "retry_after": str(self.retry_after_s)}
            text = (CHAOS_OPS / f"gateway-{name}.conf.tmpl").read_text()
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            conf = gw_dir / "nginx.conf"
            conf.write_text(text)
        nginx = gateway.ensure_nginx()
        subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(gw_dir), "-e", str(gw_dir / "error.log")],
                       check=True)
        os.kill(self.gateway_pid, signal.SIGHUP)
        time.sleep(0.5)  # the new nginx worker takes over

    # (d) 500s and timeouts behind the gateway --------------------------------------------------

    def proxy_mode(self, mode: str, **options: Any) -> None:
        ops_module("chaos/faultproxy.py").set_mode((self.workdir / "proxy").resolve(), mode, **options)

    def direct_rest(self, concurrency: int = 4) -> TrytonRest:
        """REST straight to Tryton (the ERP's own users, and the verifier): no gateway, no faults."""
        key = self.key
        client = ErpHttpClient(self.tryton_url, policy=RatePolicy(rate_per_s=500, burst=50, max_in_flight=concurrency),
                               timeout_s=120, auth_header=("Authorization", f"bearer {key}"), secret=key)
        return TrytonRest(client, self.database)


# -- processes: workers and the source ---------------------------------------------------------


@dataclass
class Exit:
    """A process that ended without being asked to: a crash."""

    name: str
    code: int | None
    at: float
    log: Path


@dataclass
class WorkerPool:
    """Named `syncgov worker` processes on one broker, each with its own store and port."""

    bootstrap: str
    workdir: Path
    env: dict[str, str]
    say: Say = print
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)
    kills: int = 0
    starts: int = 0
    exits: list[Exit] = field(default_factory=list)
    restarts_s: list[float] = field(default_factory=list)  # kill -9 -> ready again, each time
    stalls: int = 0
    resumed_at: dict[str, float] = field(default_factory=dict)  # name -> when its last stall ended
    fenced: list[Exit] = field(default_factory=list)  # exits with code 75 after an injected stall
    fenced_grace_s: float = 120.0  # a fenced exit this long after SIGCONT is still the stall's
    aborted: bool = False  # set by stop_all: starts give up at once
    _busy: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _claim(self, name: str) -> bool:
        with self._lock:
            if name in self._busy:
                return False
            self._busy.add(name)
            return True

    def _release(self, name: str) -> None:
        with self._lock:
            self._busy.discard(name)

    def running(self) -> list[str]:
        return sorted(n for n in self.wanted if (w := self.workers.get(n)) and w.process and w.process.poll() is None)

    def _start(self, name: str, ready_timeout_s: float) -> WorkerProcess:
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = WorkerProcess(self.bootstrap, self.workdir / name, env=dict(self.env))
        self.wanted.add(name)
        self.resumed_at.pop(name, None)  # a new process: an old stall no longer explains its exit
        for attempt in range(1, 4):
            if self.aborted:
                raise RuntimeError("the worker pool is stopping")
            try:
                worker.start(ready_timeout_s=ready_timeout_s)
                self.starts += 1
                return worker
            except (RuntimeError, TimeoutError) as exc:
                self.exits.append(Exit(name, worker.process.poll() if worker.process else None, time.time(),
                                       worker.log_file))
                self.say(f"worker {name} did not come up (attempt {attempt}): {exc}")
                worker.kill9()
                time.sleep(2)
        raise RuntimeError(f"worker {name} does not start; see {worker.log_file}")

    def start(self, name: str, ready_timeout_s: float = 240.0) -> WorkerProcess:
        """Start (or restart) ``name`` and wait until it is ready."""
        while not self._claim(name):
            time.sleep(0.2)
        try:
            return self._start(name, ready_timeout_s)
        finally:
            self._release(name)

    def kill9(self, name: str, restart_after_s: float = 0.0, ready_timeout_s: float = 240.0) -> None:
        """kill -9 ``name``; start it again (same store and port) after ``restart_after_s``."""
        while not self._claim(name):
            time.sleep(0.2)
        try:
            started = time.monotonic()
            self.workers[name].kill9()
            self.kills += 1
            time.sleep(restart_after_s)
            self._start(name, ready_timeout_s)
            self.restarts_s.append(time.monotonic() - started)
        finally:
            self._release(name)

    def stall(self, name: str, seconds: float) -> int | None:
        """SIGSTOP ``name`` for ``seconds`` (longer than the session timeout: the group evicts
        it and its partitions move), then SIGCONT. Returns the pid, or None if it was not running."""
        while not self._claim(name):
            time.sleep(0.2)
        try:
            proc = self.workers[name].process
            if proc is None or proc.poll() is not None:
                return None
            os.kill(proc.pid, signal.SIGSTOP)
            self.stalls += 1
            try:
                time.sleep(seconds)
            finally:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
                self.resumed_at[name] = time.monotonic()
            return proc.pid
        finally:
            self._release(name)

    def stop(self, name: str) -> None:
        """A clean stop (SIGTERM: the worker leaves the group); not restarted."""
        while not self._claim(name):
            time.sleep(0.2)
        try:
            self.wanted.discard(name)
            self.workers[name].stop()
        finally:
            self._release(name)

    def supervise(self) -> None:
        """Restart every wanted worker that exited by itself (recorded in ``exits``)."""
        for name in sorted(self.wanted):
            worker = self.workers.get(name)
            if worker is None or self.aborted or not self._claim(name):
                continue
            try:
                proc = worker.process
                if proc is not None and proc.poll() is None:
                    continue
                code = proc.poll() if proc is not None else None
                resumed = self.resumed_at.pop(name, None)
                if code == FENCED_EXIT_CODE and resumed is not None and \
                        time.monotonic() - resumed <= self.fenced_grace_s:
                    self.fenced.append(Exit(name, code, time.time(), worker.log_file))
                    self.say(f"(h) worker {name} found itself fenced after its stall (exit {code}, "
                             f"{time.monotonic() - resumed:.0f} s after SIGCONT): restarting it (its stores "
                             "recover from the changelogs)")
                else:
                    self.exits.append(Exit(name, code, time.time(), worker.log_file))
                    self.say(f"worker {name} exited by itself (code {code}); restarting it; see {worker.log_file}")
                worker.process = None
                self._start(name, 240.0)
            finally:
                self._release(name)

    def stop_all(self) -> None:
        self.aborted = True
        for name in list(self.workers):
            self.wanted.discard(name)
            self.workers[name].stop()


@dataclass
class Supervised:
    """A long-running `syncgov` subcommand (e.g. ``source``), restarted when it exits."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    log: Path
    say: Say = print
    process: subprocess.Popen[bytes] | None = None
    exits: list[Exit] = field(default_factory=list)
    stopping: bool = False
    _said: float = 0.0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "app.cli", *self.argv], env=dict(self.env),
                                            stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

    def supervise(self) -> None:
        proc = self.process
        if self.stopping or proc is None or proc.poll() is None:
            return
        self.exits.append(Exit(self.name, proc.returncode, time.time(), self.log))
        if len(self.exits) == 1 or self.exits[-1].at - self._said > 30:  # one line per burst
            self.say(f"{self.name} exited by itself (code {proc.returncode}; {len(self.exits)} so far); "
                     f"restarting it; see {self.log}")
            self._said = self.exits[-1].at
        self.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stopping = True
        proc, self.process = self.process, None
        if proc is not None:
            terminate(proc, timeout_s)


# -- (e) poison records -------------------------------------------------------------------------

POISON_KINDS = ("random-bytes", "truncated-avro", "unknown-fingerprint", "wrong-types-json", "oversized")
#: Wrong-typed values per field (each breaks rule 8 on its own).
_WRONG: dict[str, Any] = {
    "qty": "2", "line_no": "one", "items": "all of them", "package_ids": 7, "delta": "-2", "barcode": 12345,
    "tote_id": ["T-1"], "lines": {"line_no": 1}, "tracking_no": 4711, "occurred_at": "yesterday at noon",
    "location": None, "sku": 42, "type": ["OrderReleased"],
}


def expect_dead_letter(raw: bytes) -> str | None:
    """The rule-8 reason a worker gives ``raw`` (same path as agents/governance.py), or None
    when it is a valid record."""
    letters = [o for o in process_record(Engine(), raw) if isinstance(o, DeadLetter)]
    return letters[0].reason if letters else None


def poison(kind: str, rng: Random, n: int, model: Mapping[str, Any]) -> bytes:
    """Poison record number ``n`` of ``kind``, modelled on the valid event ``model`` (unique bytes)."""
    ev = {**model, "event_id": f"poison-{n}"}
    if kind == "random-bytes":
        first = rng.choice([b for b in range(0x80, 0x100) if b != codec.MAGIC[0]])
        raw = bytes([first]) + rng.randbytes(rng.randint(15, 250)) + f"#poison-{n}".encode()
    elif kind == "truncated-avro":
        full = codec.encode_event(ev)
        raw = full[: rng.randint(codec.HEADER_LEN + 1, len(full) - 1)]
        while expect_dead_letter(raw) is None:  # a cut on a field boundary may still decode
            raw = raw[:-1]
    elif kind == "unknown-fingerprint":
        full = codec.encode_event(ev)
        known = codec.known_fingerprints()
        fp = rng.getrandbits(64)
        while fp in known:
            fp = rng.getrandbits(64)
        raw = codec.MAGIC + fp.to_bytes(8, "little") + full[codec.HEADER_LEN:]
    elif kind == "wrong-types-json":
        names = [k for k in _WRONG if k in ev and k not in ("location",)] or ["occurred_at"]
        name = rng.choice(names)
        raw = orjson.dumps({**ev, name: _WRONG[name]})
    elif kind == "oversized":
        size = rng.randint(200_000, 900_000)
        if rng.random() < 0.5:  # a huge JSON object missing its required fields
            raw = orjson.dumps({"event_id": f"poison-{n}", "type": ev.get("type"), "source": ev.get("source"),
                                "warehouse_id": ev.get("warehouse_id"), "blob": "x" * size})
        else:  # a huge binary blob
            raw = bytes([0xFE]) + rng.randbytes(size) + f"#poison-{n}".encode()
    else:
        raise ValueError(f"unknown poison kind {kind!r}")
    if expect_dead_letter(raw) is None:
        raise AssertionError(f"poison {kind} #{n} would be accepted: {raw[:120]!r}")
    return raw


# -- (g) a producer on an older writer schema ---------------------------------------------------

OLD_PICK_SCHEMA = "syncgov.event.PickConfirmed.v1.avsc"


def _plain_longs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("logicalType") == "timestamp-millis":
            return node["type"]
        return {k: _plain_longs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain_longs(v) for v in node]
    return node


@functools.cache
def _old_pick() -> tuple[bytes, Any, tuple[str, ...]]:
    schema = orjson.loads((codec.AVRO_DIR / "history" / OLD_PICK_SCHEMA).read_bytes())
    fp = codec.fingerprint(schema)
    if fp == codec.schema_fingerprint("syncgov.event.PickConfirmed") or fp not in codec.known_fingerprints():
        raise RuntimeError(f"{OLD_PICK_SCHEMA} is not a published older version of PickConfirmed")
    names = tuple(f["name"] for f in schema["fields"])
    return codec.MAGIC + fp.to_bytes(8, "little"), parse_schema(_plain_longs(schema)), names


def encode_old_pick(ev: Mapping[str, Any]) -> bytes:
    """``PickConfirmed`` as a producer still on the v1 writer schema writes it (no tote/wave)."""
    header, parsed, names = _old_pick()
    record = {name: ev[name] for name in names}
    record["occurred_at"] = parse_ts(ev["occurred_at"])
    out = io.BytesIO()
    out.write(header)
    schemaless_writer(out, parsed, record)
    return out.getvalue()
