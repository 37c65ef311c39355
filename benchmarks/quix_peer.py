"""The peer in the throughput benchmark: Quix Streams 3.28.1 running syncgov's own core.

Runs in its own venv (``.venv-quix``, made by ``benchmarks.quix_bench.ensure_venv``: Quix
Streams pins its own confluent-kafka and rocksdict, which must not meet Faust's), with the
repository on ``sys.path`` for ``app.core`` (standard library, orjson, msgspec) and ``app.kafka.codec``
(fastavro). The job is the worker's, written the Quix way:

- events topic -> ``StreamingDataFrame.apply(stateful=True, expand=True)``: per input
  partition one ``Engine`` (``forward_stock=True``, as the worker's governance stage);
  every order state and dedup entry the record changed is written to Quix's per-key
  state (RocksDB, changelog topic) before the next record;
- outputs to topics: milestones (Avro, ``app.kafka.codec``) to ``<app>.milestones`` or
  ``<app>.exceptions``, dead letters to ``<app>.dead-letters``, StockAdjusted forwards and
  watermark marks to ``<app>.stock`` (one partition: Quix's ``to_topic`` cannot address a
  partition, and marks must reach every stock partition);
- stock topic -> a second stateful dataframe: the inventory stage (``app.core.stock``),
  window state per key in Quix's store, InventoryAdjusted to ``<app>.milestones``.

A mark is sent when a partition's watermark enters a new window bucket (the only moves
that can close a window downstream; the inventory stage's result does not depend on when
marks come, see ``app/core/stock.py``).

Prints one JSON line when done: events/s from the first events record to the
``--records``-th (its outputs handed to Quix's producer), seconds, CPU seconds, VmHWM.
It then keeps running until the stock topic is drained, so the milestones are complete
for the parity check, and stops (its last checkpoint commits and flushes).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quixstreams import Application, State, message_context  # noqa: E402
from quixstreams.models.serializers import SerializationContext, Serializer  # noqa: E402
from quixstreams.models.topics import TopicConfig  # noqa: E402

from app.commands.replay import process_record  # noqa: E402
from app.core import keys  # noqa: E402
from app.core.engine import Engine  # noqa: E402
from app.core.model import M_SYNC_EXCEPTION, CoreSettings, DeadLetter, Milestone, StockForward  # noqa: E402
from app.core.stock import InventoryStage, Mark, apply_record, encode_forward, encode_mark  # noqa: E402
from app.kafka import codec  # noqa: E402
from tables.records import Tracked  # noqa: E402

Item = tuple[str, bytes, bytes]  # (topic kind, key, value)


def vm_hwm_mb() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class ItemValue(Serializer):  # type: ignore[misc]  # quixstreams is not in the project venv
    """Serializes an output item ``(topic kind, key, value)`` as its encoded value."""

    def __call__(self, value: Item, ctx: SerializationContext) -> bytes:
        return value[2]


class Governance:
    """One Engine per input partition; its changed keys go to the record's Quix state."""

    def __init__(self, settings: CoreSettings, records: int) -> None:
        self.settings = settings
        self.bucket = settings.window_size_ms
        self.engines: dict[int, tuple[Engine, Tracked[Any], Tracked[Any]]] = {}
        self.marked: dict[int, int | None] = {}
        self.records = records
        self.count = 0
        self.started: float | None = None
        self.cpu0 = 0.0
        self.done: dict[str, Any] | None = None
        self.stock_sent = 0

    def engine(self, partition: int) -> tuple[Engine, Tracked[Any], Tracked[Any]]:
        got = self.engines.get(partition)
        if got is None:
            orders: Tracked[Any] = Tracked()
            seen: Tracked[Any] = Tracked()
            got = (Engine(self.settings, orders=orders, seen=seen, forward_stock=True), orders, seen)
            self.engines[partition] = got
        return got

    def __call__(self, raw: bytes, state: State) -> list[Item]:
        if self.started is None:
            self.started, self.cpu0 = time.perf_counter(), time.process_time()
        ctx = message_context()
        partition, offset = ctx.partition, ctx.offset
        engine, orders, seen = self.engine(partition)
        outs = process_record(engine, raw)  # as the worker and replay read a record
        if orders.dirty:
            for key in orders.dirty:
                value = orders.get(key)
                skey = f"o|{key[0]}|{key[1]}"
                if value is None:
                    state.delete(skey)
                else:
                    state.set(skey, value.to_record())
            orders.dirty.clear()
        if seen.dirty:
            for key in seen.dirty:
                if key in seen:
                    state.set(f"s|{key}", seen[key])
            seen.dirty.clear()
        items: list[Item] = []
        for out in outs:
            if out.__class__ is Milestone:
                assert isinstance(out, Milestone)
                kind = "exceptions" if out.type == M_SYNC_EXCEPTION else "milestones"
                items.append((kind, milestone_key(out), codec.encode_milestone(out.to_dict())))
            elif out.__class__ is StockForward:
                assert isinstance(out, StockForward)
                e = out.event
                items.append(("stock", keys.stock_key(e.warehouse_id, e.data["sku"], e.data["location"]),
                              encode_forward(partition, offset, e, out.watermark)))
            elif out.__class__ is DeadLetter:
                assert isinstance(out, DeadLetter)
                items.append(("dead-letters", out.record_id.encode(), codec.encode_dead_letter(
                    raw=out.raw, reason=out.reason, record_id=out.record_id, topic=ctx.topic,
                    partition=partition, offset=offset, failed_at=int(time.time() * 1000))))
        wm = engine.watermark
        if wm is not None and wm // self.bucket != self.marked.get(partition):
            self.marked[partition] = wm // self.bucket
            items.append(("stock", b"", encode_mark(Mark(partition, offset, wm))))
        self.stock_sent += sum(1 for kind, _, _ in items if kind == "stock")
        self.count += 1
        if self.count == self.records:
            elapsed = time.perf_counter() - self.started
            self.done = {"events_per_s": self.records / elapsed, "seconds": elapsed,
                         "cpu_s": time.process_time() - self.cpu0, "records": self.records}
        return items


milestone_key = keys.milestone_key


class Inventory:
    """The inventory stage over the stock topic; changed windows go to the record's Quix state."""

    def __init__(self, settings: CoreSettings, sources: int) -> None:
        self.windows: Tracked[Any] = Tracked()
        self.stage = InventoryStage(settings, sources, self.windows)
        self.count = 0

    def __call__(self, raw: bytes, state: State) -> list[Item]:
        outs = apply_record(self.stage, raw)
        if isinstance(outs, str):  # the bench's stock topic has only the peer's own records
            raise ValueError(outs)
        for key in self.windows.dirty:
            value = self.windows.get(key)
            skey = "w|" + "|".join(key)
            if value is None:
                state.delete(skey)
            else:
                state.set(skey, [[start, win] for start, win in value.items()])
        self.windows.dirty.clear()
        self.count += 1
        return [("milestones", milestone_key(m), codec.encode_milestone(m.to_dict())) for m in outs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--processing-guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once",
                        help="Quix's own; the bench gives the worker's (exactly-once where the worker runs "
                             "with Kafka transactions)")
    args = parser.parse_args(argv)

    done = threading.Event()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.app_id,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel=os.environ.get("QUIX_LOGLEVEL", "WARNING"),
        processing_guarantee=args.processing_guarantee,
    )

    def topic(name: str, partitions: int | None = None) -> Any:
        config = TopicConfig(num_partitions=partitions, replication_factor=1) if partitions else None
        t = app.topic(name, value_deserializer="bytes", value_serializer=ItemValue(), config=config)
        # The embedded broker (Tansu) describes a topic without "retention.ms", which Quix
        # reads to configure a state changelog: the broker's default (7 days) stands in.
        t.broker_config.extra_config.setdefault("retention.ms", "604800000")
        return t

    events = topic(args.topic)
    outputs = {kind: topic(f"{args.app_id}.{kind}", args.partitions) for kind in ("milestones", "exceptions", "dead-letters")}
    outputs["stock"] = topic(f"{args.app_id}.stock", 1)
    settings = CoreSettings()
    governance = Governance(settings, args.records)
    inventory = Inventory(settings, args.partitions)

    def route(value: Item, key: Any, timestamp: int, headers: Any) -> Any:
        return outputs[value[0]]

    app.dataframe(events).apply(governance, stateful=True, expand=True).to_topic(route, key=lambda item: item[1])
    app.dataframe(outputs["stock"]).apply(inventory, stateful=True, expand=True).to_topic(route, key=lambda item: item[1])

    result: dict[str, Any] = {}

    def watch() -> None:
        """Report when the events are done; stop once the stock topic is drained too."""
        deadline = time.monotonic() + args.timeout
        while not done.is_set():
            if governance.done is not None and not result:
                result.update(governance.done, vm_hwm_mib=vm_hwm_mb())
                print(json.dumps(result), flush=True)
            if result and inventory.count >= governance.stock_sent:
                app.stop()
                return
            if time.monotonic() > deadline:
                print(json.dumps({"error": f"timeout: {governance.count} of {args.records} events, "
                                           f"{inventory.count} of {governance.stock_sent} stock records"}), flush=True)
                app.stop(fail=True)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        app.run()
    finally:
        done.set()
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
