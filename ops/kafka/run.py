"""Start and stop a throw-away single-node Apache Kafka broker (KRaft, combined
broker + controller) from the jars ``ops/kafka/install.sh`` fetched.

    python ops/kafka/run.py start --dir var/kafka-run [--port 9092]   # prints JSON, returns
    python ops/kafka/run.py stop --dir var/kafka-run
    python ops/kafka/run.py run [--dir D] [--port N]                 # foreground until Ctrl-C

``start`` writes ``server.properties`` and ``log4j2.xml`` into ``--dir``, formats fresh
storage there (``kafka.tools.StorageTool format``, static quorum), starts ``kafka.Kafka``
on 127.0.0.1 (free ports unless given) in a process group of its own that is killed with
its parent (PR_SET_PDEATHSIG), logs at WARN to ``--dir/broker.log``, and waits until the
broker answers an ApiVersions request (it enables request processing only once it is
unfenced, i.e. serving). Stdlib only, so the app venv's fixtures and the benchmarks can
load it with ``app.harness.processes.ops_module("kafka/run.py")``.

Missing jars or Java: :class:`KafkaInstallError` naming what is missing and how to get it.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # ops/: procgroup
from procgroup import die_with_parent, free_port, stop_pid  # noqa: E402

#: The broker version the install step fetches and the launcher runs (one place).
VERSION = (HERE / "VERSION").read_text().strip()
MIN_JAVA = 17

#: Settings of the test broker beyond the KRaft basics. Production clusters usually
#: disable auto-creation: the worker creates (and checks) its topics itself.
DEFAULT_CONFIG: dict[str, str] = {
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    "offsets.topic.num.partitions": "8",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "min.insync.replicas": "1",
}
#: A broker whose log cleaner runs soon after a segment rolls (the compaction test).
EAGER_CLEANER: dict[str, str] = {
    "log.cleaner.backoff.ms": "200",
    "log.cleaner.min.compaction.lag.ms": "0",
    "log.cleaner.min.cleanable.ratio": "0.01",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    "log.retention.check.interval.ms": "1000",
    "log.segment.delete.delay.ms": "100",
}

#: G1 regions of 4 MiB: at -Xmx512m G1 picks 1 MiB regions, so every buffer of 512 KiB or more
#: (a produce request's record batches, up to 1 MB each) is a humongous allocation, and each one
#: started a GC: 120-143 pauses, 1.35-1.53 s in all, in a 300,000-record worker bench against
#: 36-38 pauses, 0.24-0.33 s with 4 MiB regions (2 MiB threshold). Production brokers set the
#: same for the same reason (with larger heaps, 16 MiB).
JVM_OPTS = ["-Xmx512m", "-Xms64m", "-XX:+UseG1GC", "-XX:G1HeapRegionSize=4m", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true"]

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<!-- The test broker's logging: WARN and above, to a file in its data dir. -->
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class KafkaInstallError(RuntimeError):
    """Java or the broker's jars are missing."""


class KafkaStartError(RuntimeError):
    """The broker did not start (the message names its log)."""


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64 without padding, never starting
    with ``-`` (an argument parser would take it for an option, as Kafka's own
    ``Uuid.randomUuid`` avoids for the same reason)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def libs_dir(version: str = VERSION) -> Path:
    """``<repo>/.kafka/<version>/libs``, checked: an install error if it is not there."""
    libs = ROOT / ".kafka" / version / "libs"
    jar = libs / f"kafka_2.13-{version}.jar"
    if not jar.is_file():
        raise KafkaInstallError(
            f"Apache Kafka {version} is not installed: no {jar.relative_to(ROOT)}; run `bash ops/kafka/install.sh` "
            "(or `make system-deps`), which fetches the broker's jars with Maven"
        )
    return libs


def java_binary() -> str:
    """The ``java`` to run (``$JAVA_HOME/bin/java`` or on PATH), at least Java 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise KafkaInstallError(
            f"no `java` on PATH (Apache Kafka needs Java {MIN_JAVA}+): run `bash ops/kafka/install.sh` "
            "(apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(found.group(1)) if found else 0
    if major == 1 and found and found.group(2):  # "1.8.0_x"
        major = int(found.group(2))
    if major < MIN_JAVA:
        raise KafkaInstallError(f"{java} is Java {major or '?'}; Apache Kafka {VERSION} needs Java {MIN_JAVA}+")
    return java


def api_versions_ok(port: int, timeout_s: float = 1.0) -> bool:
    """Does the broker on ``port`` process requests? (ApiVersions v0 answered with error 0.)"""
    client = b"syncgov-ops"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _recv(sock, 4)
            size = struct.unpack(">i", head)[0]
            answer = _recv(sock, size)
    except OSError:
        return False
    correlation, error = struct.unpack(">ih", answer[:6])
    return correlation == 1 and error == 0


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def server_properties(data_dir: Path, port: int, controller_port: int, config: dict[str, str]) -> str:
    base = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        **DEFAULT_CONFIG,
        **config,
    }
    return "".join(f"{k}={v}\n" for k, v in base.items())


@dataclass
class KafkaBroker:
    """One Apache Kafka process; use as a context manager or call start()/stop()."""

    data_dir: Path
    port: int = 0
    controller_port: int = 0
    config: dict[str, str] = field(default_factory=dict)
    version: str = VERSION
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 15.0
    process: subprocess.Popen[bytes] | None = None
    started_s: float | None = None  # spawn -> serving, of the last start
    detached: bool = False  # True: outlives this process (`run.py start`; stop with `run.py stop`)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def start(self) -> KafkaBroker:
        libs = libs_dir(self.version)
        java = java_binary()
        self.data_dir = self.data_dir.resolve()
        if self.data_dir.exists():  # fresh storage every start
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        props = self.data_dir / "server.properties"
        props.write_text(server_properties(self.data_dir, self.port, self.controller_port, self.config))
        log4j = self.data_dir / "log4j2.xml"
        log4j.write_text(LOG4J2.format(log=self.log_file))
        classpath = f"{libs}/*"
        jvm = [java, *JVM_OPTS, f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.data_dir}",
               "-cp", classpath]
        t0 = time.monotonic()
        fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={new_cluster_id()}",
                              "-c", str(props)],
                             capture_output=True, text=True, timeout=120)
        if fmt.returncode != 0:
            raise KafkaStartError(f"formatting the storage failed ({fmt.returncode}): {(fmt.stderr or fmt.stdout)[-800:]}")
        with open(self.data_dir / "stdout.log", "wb") as out:
            self.process = subprocess.Popen([*jvm, "kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            preexec_fn=os.setsid if self.detached else die_with_parent)
        (self.data_dir / "kafka.pid").write_text(str(self.process.pid))
        deadline = time.monotonic() + self.start_timeout_s
        while not api_versions_ok(self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise KafkaStartError(f"Apache Kafka exited with {code} during start-up; see {self.log_file} "
                                      f"and {self.data_dir / 'stdout.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise KafkaStartError(f"Apache Kafka did not serve on {self.bootstrap} within "
                                      f"{self.start_timeout_s:.0f} s; see {self.log_file}")
            time.sleep(0.1)
        self.started_s = time.monotonic() - t0
        return self

    def rss_mib(self) -> float | None:
        """Resident set of the broker's JVM now, in MiB."""
        if self.process is None:
            return None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        """SIGTERM to the broker's process group (a clean shutdown), SIGKILL after the bound."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_pid(proc.pid, self.stop_timeout_s)
            proc.poll()
        (self.data_dir / "kafka.pid").unlink(missing_ok=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a throw-away single-node Apache Kafka broker")
    parser.add_argument("action", choices=("start", "stop", "run"))
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "kafka")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.action == "stop":
        pid_file = args.dir / "kafka.pid"
        if pid_file.is_file():
            stop_pid(int(pid_file.read_text()), 15.0)
            pid_file.unlink()
        return 0
    try:
        broker = KafkaBroker(args.dir, port=args.port, detached=args.action == "start").start()
    except (KafkaInstallError, KafkaStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = {"pid": broker.process.pid if broker.process else None, "bootstrap": broker.bootstrap,
            "dir": str(broker.data_dir), "log": str(broker.log_file), "version": broker.version,
            "started_s": round(broker.started_s or 0, 2)}
    print(json.dumps(info), flush=True)
    if args.action == "start":
        return 0
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and broker.process is not None and broker.process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
