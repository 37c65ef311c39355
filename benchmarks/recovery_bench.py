"""Restart to ready with a large governance state (figure 6), and the worker's peak RSS
while it recovers (figure 7).

The state is built by producing changelog records in the state table's own format
(``tables/records.py``: ``<partition>SEP o SEP ["WH","<order id>"]`` ->
``{"o": offset, "v": <OrderState record>, "p": null}``, plus one meta record per
partition) straight to the worker's changelog topic ``<app_id>-governance-state-changelog``
(4 partitions; a key of input partition p goes to changelog partition p, as the worker
itself writes them). The order records are real ones: the default mix is run through
``PartitionState`` and its order writes are cloned under new order ids.

The changelog is produced as the worker writes it (``tables/state.py`` ``commit_all``):
the order records in multi-record batches, then, once they are all on the broker, the meta
record alone in its batch. Tansu reports a partition's end as the base offset of its last
batch + 1 and Faust's recovery reads up to that end, so the single record last makes it
exact (``--one-per-batch`` sends every record alone instead). After the worker is stopped,
the keys in its RocksDB stores are counted, so a recovery that stops early is a FAIL.

Measured, each repetition with a fresh process:
- cold: an EMPTY data dir, so the whole changelog is read: spawn -> /readyz 200; then one
  event per partition for a stored order, timed until all four are processed;
- warm: the data dir of the cold run kept (RocksDB + its persisted offsets): spawn -> ready;
- baseline: no state at all (an empty changelog): spawn -> ready, the start-up floor.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.core.model import CoreSettings  # noqa: E402
from app.core.timeutil import format_ts  # noqa: E402
from app.harness.processes import WorkerProcess  # noqa: E402
from app.kafka.clients import CHANGELOG_CONFIG, TopicSpec, create_topics, end_offsets, ensure_topics  # noqa: E402
from app.kafka.clients import send as kafka_send  # noqa: E402
from benchmarks.worker_bench import (  # noqa: E402
    BROKERS,
    PARTITIONS,
    Children,
    app_env,
    fresh_dir,
    log,
    machine,
    metric,
    py_spy,
    vm_hwm_mb,
)
from tables.records import META, ORDERS, SEP, PartitionState, table_key  # noqa: E402
from tests.integration.streams import simulate  # noqa: E402


def order_templates(n_orders: int = 200) -> list[bytes]:
    """Encoded OrderState records (``v`` of an order key) from a real default-mix run."""
    ps = PartitionState(0, CoreSettings(), None)
    for _, raw in simulate(orders=n_orders, warehouses=1, seed=3):
        ps.process(raw)
    out = []
    for key, value in ps.flush(0, lambda k: None):
        if value is not None and key.split(b"\x1f")[1] == ORDERS.encode():
            out.append(orjson.dumps(orjson.loads(value)["v"]))
    return out


def produce_state(bootstrap: str, app_id: str, keys: int, one_per_batch: bool = False) -> dict[str, Any]:
    """``keys`` order records (+ a meta record per partition) on the changelog; returns stats."""
    topic = f"{app_id}-governance-state-changelog"
    ensure_topics(bootstrap, [TopicSpec(topic, CHANGELOG_CONFIG, True)], PARTITIONS)  # compacted, as the worker makes it
    templates = order_templates()
    conf: dict[str, object] = {"bootstrap.servers": bootstrap, "linger.ms": 5,
                               "batch.num.messages": 1 if one_per_batch else 10000}
    per_partition = dict.fromkeys(range(PARTITIONS), 0)
    sizes = dict.fromkeys(range(PARTITIONS), 0)
    errors: list[BaseException] = []

    def fill(p: int) -> None:
        """One producer (one connection) per partition: Tansu serves connections in parallel."""
        try:
            producer = Producer(conf)

            def send(key: bytes, value: bytes) -> None:
                kafka_send(producer, topic, value, key, p)
                sizes[p] += len(key) + len(value)
                per_partition[p] += 1

            for i in range(p, keys, PARTITIONS):
                rec = templates[i % len(templates)]
                send(table_key(p, ORDERS, ("WH%d" % (p + 1), "BENCH%08d" % i)), b'{"o":-1,"v":' + rec + b',"p":null}')
                if i % 20000 < PARTITIONS:
                    producer.poll(0)
            if producer.flush(900) != 0:
                raise RuntimeError(f"changelog partition {p}: records undelivered after 900 s")
            send(table_key(p, META), orjson.dumps({"o": -1, "watermark": None, "seq": 0}))  # alone: a batch of its own
            if producer.flush(900) != 0:
                raise RuntimeError(f"changelog partition {p}: records undelivered after 900 s")
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=fill, args=(p,)) for p in range(PARTITIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    nbytes = sum(sizes.values())
    elapsed = time.perf_counter() - started
    ends = end_offsets(bootstrap, topic)
    return {
        "records": keys + PARTITIONS,
        "bytes": nbytes,
        "produce_seconds": round(elapsed, 2),
        "produce_records_per_s": round((keys + PARTITIONS) / elapsed),
        "one_record_per_batch": one_per_batch,
        "end_offsets_reported": ends,
        "end_offsets_expected": per_partition,
        "end_offsets_exact": all(ends.get(p) == n for p, n in per_partition.items()),
    }


def count_keys(data_dir: Path) -> int:
    """Order, meta and fence keys in the worker's governance-state RocksDB stores (the
    worker must be stopped): what was produced, plus a fence per partition (the probe
    events' dedup logs and lineage trails are not counted)."""
    from rocksdict import AccessType, Options, Rdict

    total = 0
    for path in sorted((data_dir / "v1" / "tables").glob("governance-state-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            # raw_mode: every key is bytes (rocksdict types keys as any of its value types)
            total += sum(1 for k in db.keys()  # noqa: SIM118 - a RocksDB handle
                         if isinstance(k, bytes) and k.split(SEP.encode(), 2)[1:2] in ([b"o"], [b"m"], [b"f"]))
        finally:
            db.close()
    return total


def time_to_ready(children: Children, bootstrap: str, data_dir: Path, env: dict[str, str],
                  timeout_s: float, profile: Path | None = None) -> tuple[float, WorkerProcess]:
    """Spawn a worker and wait for /readyz 200: (seconds from spawn, the running worker)."""
    worker = children.worker(bootstrap, data_dir, env, start=False)
    spy = None
    started = time.perf_counter()
    try:
        worker.start(ready_timeout_s=0)  # spawn only; readiness is waited for below
    except TimeoutError:
        pass
    if profile is not None and worker.process is not None:
        spy = subprocess.Popen([py_spy(), "record", "--nonblocking", "-r", "50",
                                "-f", "raw", "-o", str(profile), "-p", str(worker.process.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker.wait_ready(timeout_s)
    took = time.perf_counter() - started
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    return took, worker


def first_events(bootstrap: str, worker: WorkerProcess, topic: str, timeout_s: float, rep: int = 0) -> float:
    """One event per partition right after ready, each for an order of the produced state
    (a PickConfirmed of ``BENCH…`` order ``p + 4 * rep``, on the partition whose state
    holds it): seconds until all are processed. The worker's partitions load lazily: the
    order is read from RocksDB and decoded when its event arrives."""
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1})
    at = format_ts(int(time.time() * 1000) - 3_600_000)
    started = time.perf_counter()
    for p in range(PARTITIONS):
        order = "BENCH%08d" % (p + PARTITIONS * rep)
        ev = {"event_id": f"probe-{rep}-{p}", "type": "PickConfirmed", "occurred_at": at, "source": "wms",
              "warehouse_id": f"WH{p + 1}", "order_id": order, "line_no": 1, "sku": "PROBE", "qty": 1,
              "location": "DOCK"}
        producer.produce(topic, key=f"WH{p + 1}|{order}".encode(), value=orjson.dumps(ev), partition=p)
    producer.flush(30)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (metric(worker, "syncgov_records_processed_total") or 0) >= PARTITIONS:
            return time.perf_counter() - started
        time.sleep(0.05)
    return float("nan")


def recovery(bootstrap: str, children: Children, keys: int, reps: int, tag: str, timeout_s: float = 900,
             one_per_batch: bool = False, baseline_reps: int | None = None,
             profile: Path | None = None) -> dict[str, Any]:
    app_id = f"{tag}-rec"
    events = f"{app_id}.events"
    create_topics(bootstrap, [events], PARTITIONS)
    built = produce_state(bootstrap, app_id, keys, one_per_batch)
    log(f"recovery: {built['records']} changelog records produced in {built['produce_seconds']}s "
        f"({built['produce_records_per_s']}/s), end offsets exact: {built['end_offsets_exact']}")
    env = app_env(app_id, events)
    cold, warm, rss, recovered, first = [], [], [], [], []
    for rep in range(reps):
        data_dir = fresh_dir(f"{app_id}-{rep}")
        took, worker = time_to_ready(children, bootstrap, data_dir, env, timeout_s,
                                     profile if rep == 0 else None)
        cold.append(took)
        # each repetition its own probes: the earlier ones are in the restored state (its offset)
        first.append(first_events(bootstrap, worker, events, timeout_s, rep))
        peak = vm_hwm_mb(worker.process.pid) if worker.process else None
        rss.append(peak)
        worker.stop()
        n = count_keys(data_dir)
        recovered.append(n)
        log(f"recovery rep {rep + 1}/{reps}: cold (empty data dir) ready in {took:.1f}s, VmHWM {peak:.0f} MiB, "
            f"{n} keys in RocksDB, first event per partition processed {first[-1]:.2f}s after")
        took, worker = time_to_ready(children, bootstrap, data_dir, env, timeout_s)
        worker.stop()
        warm.append(took)
        log(f"recovery rep {rep + 1}/{reps}: warm (data dir kept) ready in {took:.1f}s")
    baseline = []
    for rep in range(reps if baseline_reps is None else baseline_reps):
        base_id = f"{tag}-empty{rep}"
        create_topics(bootstrap, [f"{base_id}.events"], PARTITIONS)
        took, worker = time_to_ready(children, bootstrap, fresh_dir(base_id), app_env(base_id, f"{base_id}.events"),
                                     timeout_s)
        worker.stop()
        baseline.append(took)
    if baseline:
        log(f"recovery: start-up with no state {', '.join(f'{x:.1f}' for x in baseline)}s")
    return {
        "keys": keys,
        "changelog": built,
        "cold_ready_s": cold,
        "warm_ready_s": warm,
        "empty_state_ready_s": baseline,
        "first_event_after_cold_ready_s": first,
        "recovered_keys": recovered,
        "expected_keys": keys + 2 * PARTITIONS,  # + a meta and a fence record per partition
        "worker_vm_hwm_mib": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="worker restart to ready with a large state")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--one-per-batch", action="store_true", help="produce every changelog record alone in its batch")
    parser.add_argument("--profile", type=Path, help="py-spy record (raw) the first cold recovery to this file")
    parser.add_argument("--broker", choices=tuple(BROKERS), default="embedded")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": machine(), "broker": args.broker}
    with Children() as children:
        bootstrap = children.broker(args.broker).bootstrap
        out["recovery"] = recovery(bootstrap, children, args.keys, args.reps, f"rb{int(time.time())}",
                                   one_per_batch=args.one_per_batch, profile=args.profile)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
