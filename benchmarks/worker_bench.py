"""The worker on a broker (embedded Tansu by default, ``--broker apache`` for Apache Kafka): throughput vs a raw consumer in the same run
(figure 3), latency at a fixed input rate (figure 4), peak RSS of the worker (figure 7).

Throughput: the simulator's default mix (4 warehouses, so every partition is used; JSON
values, key = warehouse_id) is produced once to a 4-partition topic. Each repetition
then reads it twice, one after the other on the same machine:

- a raw confluent-kafka consumer (assign all partitions from offset 0; ``consume(1000)``,
  ``orjson.loads`` and a dict update per record): the Python limit on this box, and
- a fresh ``syncgov worker`` (new WORKER_APP_ID = consumer group, changelog and output
  topics; ERP sink off; RocksDB store in a new directory), timed from the first
  ``syncgov_records_processed_total`` > 0 seen on its ``/metrics`` to the count of
  produced records (polled every 100 ms).

events/s = records counted from that first observation / elapsed. After each worker
repetition its milestones (milestones + exceptions topics, deduplicated by id) must
equal the per-partition replay of the recorded topic; a fast wrong answer is a FAIL.

Latency: a fresh worker on an empty topic; the default mix is produced with
confluent-kafka paced at a fixed rate (5,000/s). The wall-clock time just before each
``produce()`` call is kept by event_id (first copy of a duplicated id). Every order
milestone (OrderAccepted, OrderPicked, OrderPacked, ShipmentConfirmed, ReturnReceived)
is matched to its completing event: of its ``event_ids`` evidence, the one produced
last (OrderAccepted's evidence is its OrderReleased/OrderChanged). Latency = the
milestone record's Kafka timestamp (CreateTime, set by the worker's producer when it
sends the milestone) - that produce time. Window-closed InventoryAdjusted and
SyncExceptions are left out: they complete on the watermark, not on an event. The
run is cut into 3 equal consecutive windows (by produce time, after a 1 s warm-up);
each window is one repetition.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.commands.replay import replay_by_record  # noqa: E402
from app.core.model import CoreSettings, Milestone  # noqa: E402
from app.core.timeutil import parse_ts  # noqa: E402
from app.kafka import codec  # noqa: E402
from app.kafka.clients import TOPIC_CONFIG, TopicSpec, create_topics, ensure_topics, produce, read_all  # noqa: E402
from app.kafka.clients import send as kafka_send  # noqa: E402
from app.kafka.embedded import EmbeddedBroker  # noqa: E402

try:
    from app.kafka.clients import PRODUCER_DEFAULTS
except ImportError:  # older tree
    PRODUCER_DEFAULTS = {}
from app.harness.processes import WorkerProcess  # noqa: E402
from tests.integration.conftest import normalize  # noqa: E402
from tests.integration.streams import by_id, replay, simulate  # noqa: E402

WORKDIR = ROOT / "benchmarks" / "results" / "tmp"
PARTITIONS = 4
ORDER_MILESTONES = ("OrderAccepted", "OrderPicked", "OrderPacked", "ShipmentConfirmed", "ReturnReceived")
#: Records per order in the default mix (measured: 58,305 records for 1,000 orders, 4 warehouses).
RECORDS_PER_ORDER = 58.3


# -- shared helpers (also used by erp_bench and recovery_bench) -------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuTrace:
    """A worker's CPU seconds sampled from a thread every ``every_s`` (the kernel counts
    them in 10 ms ticks) from its spawn on, so the CPU between two moments of the worker's
    own clock (its first records in hand, its last commit) can be read afterwards. Read at
    the moment the bench saw the worker ready instead, it missed what the worker did before
    that: the ready poll runs every 0.2 s, and the worker starts reading as it becomes ready
    (up to a fifth of a 100,000-record run's CPU until 8 December)."""

    def __init__(self, worker: WorkerProcess, every_s: float = 0.01) -> None:
        self.samples: list[tuple[float, float]] = []
        self.every_s = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
        self._thread.start()

    def _run(self, worker: WorkerProcess) -> None:
        while not self._done.is_set():
            proc = worker.process
            if proc is not None:
                cpu = cpu_seconds(proc.pid)
                if math.isnan(cpu):
                    return
                self.samples.append((time.time(), cpu))
            self._done.wait(self.every_s)

    def at(self, when: float, wait_s: float = 2.0) -> float:
        """The CPU seconds of the last sample at or before ``when`` (Unix time), once a
        sample after it is in (waiting up to ``wait_s`` for it)."""
        deadline = time.monotonic() + wait_s
        while (not self.samples or self.samples[-1][0] <= when) and self._thread.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(self.every_s)
        before = [cpu for t, cpu in self.samples if t <= when]
        if not before:
            raise RuntimeError("no CPU sample of the worker before the moment asked")
        return before[-1]

    def stop(self) -> None:
        self._done.set()
        self._thread.join(1)


def metric(worker: WorkerProcess, name: str, labels: str = "") -> float | None:
    """One sample of the worker's /metrics (``name{labels}``), or None if absent or not answered
    (a worker busy in a long synchronous step does not answer until it is done)."""
    try:
        status, body = worker.get("/metrics", timeout_s=5.0)
    except OSError:
        return None
    if status != 200:
        return None
    want = f"{name}{{{labels}}}" if labels else name
    for line in body.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def metric_samples(worker: WorkerProcess, name: str) -> dict[str, float]:
    """Every sample of a metric family: {label text: value}."""
    out: dict[str, float] = {}
    try:
        status, body = worker.get("/metrics", timeout_s=5.0)
    except OSError:
        return out
    if status != 200:
        return out
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, value = line.rsplit(" ", 1)
            out[head[len(name):]] = float(value)
    return out


#: The brokers a benchmark can run on: the embedded Tansu broker, or Apache Kafka (ops/kafka).
BROKERS = {"embedded": "embedded Tansu", "apache": "Apache Kafka"}


@dataclass
class Children:
    """Every child process a benchmark starts, stopped at the end whatever happens. Workers
    get the settings of the broker they run on (``tests.conftest.worker_env``, as in the tests)."""

    stops: list[Callable[[], None]] = field(default_factory=list)
    broker_env: dict[str, dict[str, str]] = field(default_factory=dict)  # bootstrap -> worker settings
    broker_started_s: dict[str, float] = field(default_factory=dict)  # bootstrap -> spawn to serving

    def add(self, stop: Callable[[], None]) -> None:
        self.stops.append(stop)

    def broker(self, impl: str = "embedded") -> Any:
        """A fresh broker (``embedded`` or ``apache``); ``.bootstrap``, ``.process``."""
        from tests.conftest import worker_env

        if impl == "apache":
            from app.harness.processes import ops_module

            broker = ops_module("kafka/run.py").KafkaBroker(fresh_dir(f"kafka-{time.time_ns()}"))
        elif impl == "embedded":
            broker = EmbeddedBroker()
        else:
            raise ValueError(f"unknown broker {impl!r}; one of {', '.join(BROKERS)}")
        self.add(broker.stop)
        started = time.perf_counter()
        broker.start()
        self.broker_started_s[broker.bootstrap] = time.perf_counter() - started
        self.broker_env[broker.bootstrap] = worker_env(impl)
        return broker

    def exactly_once(self, bootstrap: str) -> bool:
        """Whether this broker's workers commit with Kafka transactions (the lane's
        ``WORKER_EXACTLY_ONCE``; ``auto`` is on for any broker given by address)."""
        return self.broker_env.get(bootstrap, {}).get("WORKER_EXACTLY_ONCE", "auto") != "off"

    def worker(self, bootstrap: str, data_dir: Path, env: dict[str, str], start: bool = True,
               ready_timeout_s: float = 120.0) -> WorkerProcess:
        worker = WorkerProcess(bootstrap, data_dir, env={"LOG_LEVEL": "info", **self.broker_env.get(bootstrap, {}),
                                                         **env})
        self.add(worker.stop)
        return worker.start(ready_timeout_s) if start else worker

    def stop_all(self) -> None:
        while self.stops:
            stop = self.stops.pop()
            try:
                stop()
            except Exception as exc:
                log(f"stopping a child failed: {exc!r}")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def app_env(app_id: str, events_topic: str, **extra: str) -> dict[str, str]:
    """A worker's settings: its own group/changelog/output topics on a given input topic."""
    return {
        "WORKER_APP_ID": app_id,
        "TOPIC_EVENTS": events_topic,
        "TOPIC_MILESTONES": f"{app_id}.milestones",
        "TOPIC_EXCEPTIONS": f"{app_id}.exceptions",
        "TOPIC_DEAD_LETTERS": f"{app_id}.dead-letters",
        "TOPIC_ERP_DEAD_LETTERS": f"{app_id}.erp-dead-letters",
        "TOPIC_STOCK": f"{app_id}.stock",
        "TOPIC_PARTITIONS": str(PARTITIONS),
        "ERP_SINK_ENABLED": "false",
        **extra,
    }


def fresh_dir(name: str) -> Path:
    path = WORKDIR / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_gib, 1),
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }


def orders_for(records: int) -> int:
    return max(20, round(records / RECORDS_PER_ORDER))


def recorded(bootstrap: str, topic: str, count: int) -> list[list[bytes]]:
    """The topic as recorded, one list per partition in offset order (read with count=)."""
    return recorded_with_append_times(bootstrap, topic, count)[0]


def recorded_with_append_times(bootstrap: str, topic: str, count: int) -> tuple[list[list[bytes]], dict[str, int]]:
    """``recorded``, and each event id's broker append time (ms) where the broker stamped the
    records (a topic with LogAppendTime; empty otherwise)."""
    parts: dict[int, list[bytes]] = {}
    appended: dict[str, int] = {}
    for rec in read_all(bootstrap, topic, count=count, timeout_s=300):
        parts.setdefault(rec.partition, []).append(rec.value)
        if rec.appended:
            eid = event_id(rec.value)
            if eid is not None:
                appended.setdefault(eid, rec.timestamp_ms)
    return [parts[p] for p in sorted(parts)], appended


def event_id(value: bytes) -> str | None:
    """A JSON record's ``event_id``, if it has one."""
    try:
        eid = orjson.loads(value).get("event_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return eid if isinstance(eid, str) else None


def worker_milestones(bootstrap: str, app_id: str) -> list[tuple[dict[str, Any], int]]:
    """Every (normalized milestone, Kafka timestamp ms) on a worker's milestones and exceptions topics."""
    out = []
    for topic in (f"{app_id}.milestones", f"{app_id}.exceptions"):
        out += [(normalize(codec.decode(r.value)), r.timestamp_ms) for r in read_all(bootstrap, topic, timeout_s=300)]
    return out


def check_parity(bootstrap: str, app_id: str, expected: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """Do the worker's milestones (deduplicated by id) equal the replay? (ok, detail)."""
    got_raw = [m for m, _ in worker_milestones(bootstrap, app_id)]
    try:
        got = by_id(got_raw)
    except AssertionError as exc:
        return False, f"two different milestones share an id: {str(exc)[:300]}"
    if got == expected:
        return True, f"{len(got)} milestones = replay ({len(got_raw) - len(got)} duplicate copies)"
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differ = [k for k in set(got) & set(expected) if got[k] != expected[k]]
    return False, f"differs from replay: {len(missing)} missing, {len(extra)} extra, {len(differ)} different"


# -- figure 3: throughput -------------------------------------------------------------------


def raw_consume(bootstrap: str, topic: str, count: int, timeout_s: float = 300) -> tuple[float, float, float]:
    """performance.md's raw baseline: (events/s from the first record, seconds, CPU seconds)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"raw-{time.time_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        sums: dict[bytes | None, int] = {}
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        n = 0
        started = None
        deadline = time.monotonic() + timeout_s
        while n < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer read {n} of {count} records")
            # at most the records still to come: consume(n, t) waits for n records or t seconds,
            # so asking for more than remain would time the last wait, not the consumer
            msgs = consumer.consume(min(1000, count - n), 1.0)
            if started is None and msgs:
                started, cpu0 = time.perf_counter(), time.process_time()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                try:
                    loads(msg.value() or b"")
                except decode_error:
                    pass
                key = msg.key()
                sums[key] = sums.get(key, 0) + 1
                n += 1
        elapsed = time.perf_counter() - (started or time.perf_counter())
        return n / elapsed, elapsed, time.process_time() - cpu0
    finally:
        consumer.close()


#: /metrics poll period. Each scrape costs the worker ~2 ms of its event loop (8% of its
#: samples at 20 ms, so 100 ms: ~2%, and +-0.1 s on the elapsed time).
POLL_S = 0.1


def first_records_at(worker: WorkerProcess, topic: str, stage: str = "governance") -> float | None:
    """Unix time at which ``stage`` had its first records of ``topic`` in hand: the timestamp
    of its first "<stage>: first records from <topic> since the assignment" line in the
    worker's JSON log (``app.runtime.runner``: logged when the first batch after an
    assignment has been read, before it is processed), or None. The raw consumer and the
    peer are timed from their first record too."""
    head = f"{stage}: first records from {topic} since the assignment"
    try:
        lines = worker.log_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if head not in line:
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if str(entry.get("msg", "")).startswith(head):
            return parse_ts(entry["ts"]) / 1000
    return None


def wait_processed(worker: WorkerProcess, count: int, timeout_s: float, topic: str,
                   trace: CpuTrace | None = None) -> dict[str, float]:
    """Poll /metrics every POLL_S until ``count`` records of ``topic`` are processed; then
    events/s over all ``count`` records, timed from the governance stage's first records in
    hand (its log line) to its last committed batch (``syncgov_last_commit_timestamp_seconds``),
    and the worker's CPU seconds over the same span from its ``trace`` (without one: from this
    call, the worker just ready, to the end; that misses what it did before the bench saw it
    ready, see ``CpuTrace``).

    Neither end of that span depends on when a poll happens to be answered: timing from the
    first poll that saw a processed record (as this did before 2026-12-06) left out all the
    work done before the first batch's count reached /metrics (a poll is not answered while a
    batch runs the core), up to a whole batch, which made the figure up to 2 x too high on
    100,000 records."""
    return wait_processed_all([worker], count, timeout_s, topic, trace)


def py_spy() -> str:
    """The py-spy binary: on PATH, in the project's venv, or in the bench venv (.venv-quix,
    made here if missing: a ``--no-peer --profile`` run on a fresh machine needs it too)."""
    for candidate in (shutil.which("py-spy"), Path(sys.executable).parent / "py-spy"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    from benchmarks import quix_bench
    return str(quix_bench.ensure_venv().parent / "py-spy")


def throughput(bootstrap: str, children: Children, records: int, reps: int, tag: str,
               profile: Path | None = None, peer_reps: int | None = None, warmup: int = 0) -> dict[str, Any]:
    """Figure 3 (+ RSS): returns the raw and the worker measurements and the parity checks.

    ``warmup`` rounds (a worker, and the peer unless ``peer_reps`` is 0) run over the same
    records first and are not counted: the timed repetitions then meet a broker past its JVM's
    warm-up (a fresh Apache Kafka spends most of its CPU in its first minutes compiling, C2
    ~12 s in a 90 s bench run), as a production broker is; they still write fresh topics."""
    stream = simulate(orders=orders_for(records), warehouses=4, seed=7)
    n = len(stream)
    topic = f"{tag}.tp.events"
    create_topics(bootstrap, [topic], PARTITIONS)
    t = time.perf_counter()
    produce(bootstrap, topic, stream)
    log(f"throughput: produced {n} records in {time.perf_counter() - t:.1f}s")
    sizes = [len(v) for _, v in stream]
    expected = by_id(replay(recorded(bootstrap, topic, n)))
    del stream
    raw_rates, raw_cpu, worker_rates, worker_cpu, rss, parity = [], [], [], [], [], []
    quix: list[dict[str, Any]] = []
    warmups: list[dict[str, Any]] = []
    worker_cpu_from_ready: list[float] = []

    def peer_round(app_id: str) -> dict[str, Any]:
        return quix_run(bootstrap, topic, n, app_id, expected, exactly_once=children.exactly_once(bootstrap))

    def worker_round(app_id: str, spy_to: Path | None = None) -> tuple[dict[str, float], float | None, bool, str]:
        """A fresh worker over the topic: its timing, peak RSS and parity check; killed after."""
        worker = children.worker(bootstrap, fresh_dir(app_id), app_env(app_id, topic), start=False)
        trace = CpuTrace(worker)
        children.add(trace.stop)
        worker.start(120.0)
        spy: subprocess.Popen[bytes] | None = None
        if spy_to is not None and worker.process is not None:
            spy = subprocess.Popen([py_spy(), "record", "--nonblocking",
                                    "-o", str(spy_to), "-f", "raw", "-r", "400", "-p", str(worker.process.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def stop_spy(s: subprocess.Popen[bytes] = spy) -> None:
                if s.poll() is None:
                    s.terminate()

            children.add(stop_spy)
        done = wait_processed(worker, n, timeout_s=max(120, n / 50), topic=topic, trace=trace)
        trace.stop()
        peak = vm_hwm_mb(worker.process.pid) if worker.process else None
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes the profile
            spy.wait(60)
        ok, detail = check_parity(bootstrap, app_id, expected)
        worker.kill9()  # measured and checked: no need to wait for a clean leave of the group
        return done, peak, ok, detail

    for rep in range(warmup):
        peer = peer_round(f"{tag}-wqx{rep}") if peer_reps != 0 else {}
        done, _, ok, detail = worker_round(f"{tag}-wtp{rep}")
        warmups.append({"worker_events_per_s": done["events_per_s"], "ok": ok, "detail": detail,
                        "peer_ok": peer.get("ok"), "peer_detail": peer.get("detail") or peer.get("error")})
        if not ok:  # a correctness check failed: the worker's figures are a FAIL whatever their speed
            parity.append({"ok": False, "detail": f"warm-up round {rep + 1}: {detail}"})
        log(f"throughput warm-up {rep + 1}/{warmup} (not counted): worker {done['events_per_s']:,.0f}/s, "
            f"parity {'OK' if ok else 'FAIL'}: {detail}")
    for rep in range(reps):
        rate, secs, cpu = raw_consume(bootstrap, topic, n)
        raw_rates.append(rate)
        raw_cpu.append(cpu)
        log(f"throughput rep {rep + 1}/{reps}: raw consumer {rate:,.0f}/s ({secs:.2f}s, {cpu:.2f} CPU s)")
        if peer_reps is None or rep < peer_reps:
            quix.append(peer_round(f"{tag}-qx{rep}"))
        done, peak, ok, detail = worker_round(f"{tag}-tp{rep}", profile if rep == 0 else None)
        rate, secs, counted = done["events_per_s"], done["seconds"], done["counted"]
        worker_rates.append(rate)
        worker_cpu.append(done["cpu_s"] / counted * 1e6 if counted else float("nan"))
        worker_cpu_from_ready.append(done.get("cpu_s_from_ready", math.nan) / counted * 1e6 if counted else math.nan)
        rss.append(peak)
        parity.append({"ok": ok, "detail": detail})
        log(f"throughput rep {rep + 1}/{reps}: worker {rate:,.0f}/s ({secs:.2f}s for {counted:.0f}, "
            f"{done['cpu_s']:.2f} CPU s; {done.get('cpu_s_from_ready', math.nan):.2f} from ready on), "
            f"VmHWM {peak:.0f} MiB, parity {'OK' if ok else 'FAIL'}: {detail}")
    return {
        "records": n,
        "mean_record_bytes": round(sum(sizes) / len(sizes), 1),
        "partitions": PARTITIONS,
        "warehouses": 4,
        "orders": orders_for(records),
        "raw_events_per_s": raw_rates,
        "worker_events_per_s": worker_rates,
        "ratios": [w / r for w, r in zip(worker_rates, raw_rates, strict=True)],
        "raw_cpu_us_per_event": [c / n * 1e6 for c in raw_cpu],
        "worker_cpu_us_per_event": worker_cpu,
        "worker_cpu_us_per_event_from_ready": worker_cpu_from_ready,
        "worker_vm_hwm_mib": rss,
        "parity": parity,
        "quix": quix,
        "warmup_rounds": warmup,
        "warmup": warmups,
    }


def quix_run(bootstrap: str, topic: str, n: int, app_id: str, expected: dict[str, dict[str, Any]],
             exactly_once: bool = False) -> dict[str, Any]:
    """One run of the Quix Streams peer (``benchmarks/quix_peer.py``) and its parity check,
    with the worker's processing guarantee (``exactly_once``: both with Kafka transactions)."""
    from benchmarks import quix_bench

    try:
        got = quix_bench.run(bootstrap, topic, n, app_id, fresh_dir(app_id), PARTITIONS, timeout_s=max(120, n / 50),
                             exactly_once=exactly_once)
    except Exception as exc:  # the peer is a comparison: its failure is reported, not fatal
        log(f"quix peer failed: {exc!r}")
        return {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
    ok, detail = check_parity(bootstrap, app_id, expected)
    got.update(ok=ok, detail=detail, cpu_us_per_event=got["cpu_s"] / n * 1e6,
               processing_guarantee="exactly-once" if exactly_once else "at-least-once")
    log(f"quix peer: {got['events_per_s']:,.0f}/s ({got['seconds']:.2f}s, {got['cpu_s']:.1f} CPU s), "
        f"VmHWM {got['vm_hwm_mib'] or 0:.0f} MiB, parity {'OK' if ok else 'FAIL'}: {detail}")
    return got


# -- scale-out: two worker processes against one -------------------------------------------


def wait_processed_all(workers: list[WorkerProcess], count: int, timeout_s: float, topic: str,
                       trace: CpuTrace | None = None) -> dict[str, float]:
    """``wait_processed`` over the workers of one group: their processed counts summed, timed
    from the first worker's first records in hand to the last worker's last commit, their CPU
    seconds summed. With one worker's ``trace``, its CPU seconds are those of that same span
    (``cpu_s``; else from this call on)."""
    deadline = time.monotonic() + timeout_s
    pids = [w.process.pid for w in workers if w.process]
    cpu0 = sum(cpu_seconds(p) for p in pids)
    n = 0.0
    while time.monotonic() < deadline:
        n = sum(metric(w, "syncgov_records_processed_total") or 0.0 for w in workers)
        if n >= count:
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            starts = [s for s in (first_records_at(w, topic) for w in workers) if s is not None]
            ends = [e for e in (metric(w, "syncgov_last_commit_timestamp_seconds") for w in workers) if e is not None]
            if not starts or not ends:
                raise RuntimeError(f"no 'first records from {topic}' line in a worker's log, or no last commit in /metrics")
            elapsed = max(ends) - min(starts)
            rate = count / elapsed if elapsed > 0 else float("nan")
            out = {"events_per_s": rate, "seconds": elapsed, "counted": float(count), "cpu_s": cpu}
            if trace is not None:  # the span's CPU; and what the bench saw from ready on, for comparison
                out.update(cpu_s=trace.at(max(ends)) - trace.at(min(starts)), cpu_s_from_ready=cpu)
            return out
        if any(w.process is None or w.process.poll() is not None for w in workers):
            raise RuntimeError(f"a worker exited after {n:.0f} of {count} records processed")
        time.sleep(POLL_S)
    raise TimeoutError(f"workers processed {n:.0f} of {count} records within {timeout_s}s")


def start_all(workers: list[WorkerProcess], ready_timeout_s: float = 120) -> None:
    """Start workers one after the other from this thread (each waits for its /readyz). Not
    from helper threads: a worker dies with the thread that spawned it (``die_with_parent``)."""
    for w in workers:
        w.start(ready_timeout_s)


def scale(bootstrap: str, children: Children, records: int, reps: int, tag: str,
          settle_s: float = 8.0) -> dict[str, Any]:
    """One worker, then two of one group, each on a fresh topic: the workers start, become
    ready and settle (``settle_s``, for the group's assignment), then the recorded default
    mix is produced as fast as the producer goes and the processed counts are polled. The
    two-worker run's milestones must equal the replay."""
    stream = simulate(orders=orders_for(records), warehouses=4, seed=11)
    n = len(stream)
    expected: dict[str, dict[str, Any]] | None = None
    one: list[float] = []
    two: list[float] = []
    parity: list[dict[str, Any]] = []
    for rep in range(reps):
        for k in (1, 2):
            app_id = f"{tag}-sc{rep}w{k}"
            topic = f"{app_id}.events"
            create_topics(bootstrap, [topic], PARTITIONS)
            workers = [children.worker(bootstrap, fresh_dir(f"{app_id}-{i}"), app_env(app_id, topic), start=False)
                       for i in range(k)]
            start_all(workers)
            time.sleep(settle_s)
            producing = threading.Thread(target=produce, args=(bootstrap, topic, stream))
            producing.start()
            done = wait_processed_all(workers, n, timeout_s=max(120, n / 50), topic=topic)
            producing.join()
            (one if k == 1 else two).append(done["events_per_s"])
            if k == 2:
                if expected is None:
                    expected = by_id(replay(recorded(bootstrap, topic, n)))
                ok, detail = check_parity(bootstrap, app_id, expected)
                parity.append({"ok": ok, "detail": detail})
            log(f"scale rep {rep + 1}/{reps}: {k} worker(s) {done['events_per_s']:,.0f}/s "
                f"({done['seconds']:.2f}s, {done['cpu_s']:.1f} CPU s)")
            for w in workers:
                w.kill9()
    return {"records": n, "one_events_per_s": one, "two_events_per_s": two,
            "ratios": [b / a for a, b in zip(one, two, strict=True)], "parity": parity,
            "cores": os.cpu_count()}


# -- figure 4: latency at a fixed rate ------------------------------------------------------


def paced_produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float,
                  sent_at: dict[str, float]) -> float:
    """Produce at ``rate``/s, keep ``time.time()`` before each produce by event_id; returns the achieved rate."""
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, "linger.ms": 5,
                         "batch.num.messages": 10000})
    started = time.perf_counter()
    for n, (key, value) in enumerate(records, 1):
        eid = event_id(value)
        now = time.time()
        if eid is not None and eid not in sent_at:
            sent_at[eid] = now
        kafka_send(producer, topic, value, key, poll_s=0.01)
        ahead = n / rate - (time.perf_counter() - started)
        if ahead > 0.001:
            producer.poll(0)
            time.sleep(ahead)
    elapsed = time.perf_counter() - started
    if producer.flush(60) != 0:
        raise RuntimeError("paced producer: records undelivered after 60 s")
    return len(records) / elapsed


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))  # the ceil(q/100 * n)-th
    return ordered[k]


def _stats(lat: list[float]) -> dict[str, Any]:
    return {"n": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": max(lat) if lat else float("nan"), "missing": sum(1 for x in lat if x == float("inf"))}


def completed_by(parts: list[list[bytes]]) -> list[tuple[dict[str, Any], str | None]]:
    """The replay's order milestones (contract dicts, as ``replay`` gives them), each with the
    event id of the record whose processing emitted it: the event that completed it, which
    is not always in its evidence (picks held until their order's release arrives: the
    OrderReleased completes the OrderPicked, whose evidence is the picks)."""
    out = []
    for raw, outputs in replay_by_record(parts, CoreSettings()):
        eid = event_id(raw) if raw is not None else None
        for o in outputs:
            if isinstance(o, Milestone) and o.type in ORDER_MILESTONES:
                out.append((normalize(o.to_dict()), eid))
    return out


def latency_stats(expected: list[tuple[dict[str, Any], str | None]], sent_at: dict[str, float], got: dict[str, int],
                  appended: dict[str, int], windows: int = 3, warmup_s: float = 1.0) -> dict[str, Any]:
    """Latencies (ms) of the expected milestones (each with the event that completed it,
    ``completed_by``): from that event's ``produce()`` wall time (``sent_at``, s) to the
    milestone's timestamp (``got``, ms; missing: infinite), per window of send time after the
    warm-up, overall and by type. Where the broker stamped the completing event
    (``appended``, ms), each window also splits it: ``append_*`` from that append to the
    milestone (the worker's fetch, batch, core and write) and ``send_*`` from ``produce()`` to
    the append (the load generator's client and the broker's produce path)."""
    t0 = min(sent_at.values())
    # (send time of the completing event, latency ms, type, from append ms, send to append ms)
    samples: list[tuple[float, float, str, float | None, float | None]] = []
    unmatched = 0
    for m, completing in expected:
        if completing is None or completing not in sent_at:
            unmatched += 1
            continue
        at = sent_at[completing]
        got_ms = got.get(m["milestone_id"])
        total = (got_ms - at * 1000) if got_ms is not None else float("inf")
        stamp = appended.get(completing)
        from_append = send = None
        if stamp is not None:
            from_append = (got_ms - stamp) if got_ms is not None else float("inf")
            send = stamp - at * 1000
        samples.append((at, total, m["type"], from_append, send))
    usable = [x for x in samples if x[0] >= t0 + warmup_s]
    span = (max(sent_at.values()) - (t0 + warmup_s)) / windows
    per_window = []
    for w in range(windows):
        lo = t0 + warmup_s + w * span
        hi = lo + span if w < windows - 1 else float("inf")
        inside = [x for x in usable if lo <= x[0] < hi]
        window = _stats([x[1] for x in inside])
        after_ms = [x[3] for x in inside if x[3] is not None]
        send_ms = [x[4] for x in inside if x[4] is not None]
        if inside and len(after_ms) == len(send_ms) == len(inside):  # every completing event stamped
            after, before = _stats(after_ms), _stats(send_ms)
            window.update(append_p50_ms=after["p50_ms"], append_p99_ms=after["p99_ms"],
                          send_p50_ms=before["p50_ms"], send_p99_ms=before["p99_ms"])
        per_window.append(window)
    return {
        "windows": per_window,
        "overall": _stats([x[1] for x in usable]),
        "by_type": {k: _stats([x[1] for x in usable if x[2] == k]) for k in ORDER_MILESTONES
                    if any(x[2] == k for x in usable)},
        "unmatched_milestones": unmatched,
        "negative_latencies": sum(1 for x in usable if x[1] < 0),
    }


def latency(bootstrap: str, children: Children, rate: float, seconds: float, tag: str,
            windows: int = 3, warmup_s: float = 1.0, wait_s: float = 60.0) -> dict[str, Any]:
    """Figure 4 (+ RSS). The expected order milestones come from the replay of the recorded
    topic; one the worker has not produced ``wait_s`` after the last record was produced
    counts as an infinite latency (censored), so a worker that cannot keep up fails."""
    total = int(rate * seconds)
    stream = simulate(orders=orders_for(total) + 5, warehouses=4, seed=21)[:total]
    app_id = f"{tag}-lat{int(rate)}"
    topic = f"{app_id}.events"
    # Stamped by the broker when it appends a record (the worker reads only the payload's
    # event time): the worker's own part of the latency is told apart from the send's.
    ensure_topics(bootstrap, [TopicSpec(topic, {**TOPIC_CONFIG, "message.timestamp.type": "LogAppendTime"}, False)],
                  PARTITIONS)
    worker = children.worker(bootstrap, fresh_dir(app_id), app_env(app_id, topic))
    sent_at: dict[str, float] = {}
    achieved = paced_produce(bootstrap, topic, stream, rate, sent_at)
    n = len(stream)
    log(f"latency: produced {n} records at {achieved:,.0f}/s (target {rate:,.0f}/s)")
    try:
        done = wait_processed(worker, n, timeout_s=wait_s, topic=topic)
        kept_up = True
    except TimeoutError as exc:
        log(f"latency: {exc}")
        done, kept_up = None, False
    processed = metric(worker, "syncgov_records_processed_total") or 0.0
    peak = vm_hwm_mb(worker.process.pid) if worker.process else None
    got: dict[str, int] = {}
    for m, ts in worker_milestones(bootstrap, app_id):
        got[m["milestone_id"]] = min(ts, got.get(m["milestone_id"], ts))
    worker.kill9()
    parts, appended = recorded_with_append_times(bootstrap, topic, n)
    expected = completed_by(parts)
    measured = latency_stats(expected, sent_at, got, appended, windows=windows, warmup_s=warmup_s)
    return {
        "rate_per_s": rate,
        "achieved_rate_per_s": achieved,
        "records": n,
        "seconds": seconds,
        "kept_up": kept_up,
        "processed_when_measured": processed,
        "processing": done,
        "wait_after_produce_s": wait_s,
        **measured,
        "expected_order_milestones": len(expected),
        "worker_vm_hwm_mib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="worker throughput and latency on a broker")
    parser.add_argument("--broker", choices=tuple(BROKERS), default="embedded")
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=0, help="0: skip the latency run")
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--latency-wait", type=float, default=60)
    parser.add_argument("--profile", type=Path, help="py-spy record the first worker repetition to this file")
    parser.add_argument("--no-peer", action="store_true", help="without the Quix Streams peer")
    parser.add_argument("--warmup", type=int, default=0, help="untimed warm-up rounds before the repetitions")
    args = parser.parse_args(argv)
    tag = f"wb{int(time.time())}"
    out: dict[str, Any] = {"machine": machine(), "broker": args.broker}
    with Children() as children:
        bootstrap = children.broker(args.broker).bootstrap
        out["throughput"] = throughput(bootstrap, children, args.records, args.reps, tag, args.profile,
                                       peer_reps=0 if args.no_peer else None, warmup=args.warmup)
        if args.latency_seconds > 0:
            out["latency"] = latency(bootstrap, children, args.rate, args.latency_seconds, tag,
                                     wait_s=args.latency_wait)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
