"""The governance stage's own path without Kafka: CPU per event, or instructions per event.

Runs the simulator's default mix (4 warehouses, 4 partitions) through a
``GovernanceStage`` as the worker does (decode, core, lineage entries, per-batch state
flush with prior values, Avro outputs), with an in-memory writer in place of Kafka and
RocksDB: what the stage costs around the core, with no broker, consumer or producer in
the measurement. The writer applies each batch's records to a dict, so prior values and
lineage trails are read back as in the worker.

CPU time on a shared 2-core machine moves by +-20 %; the instruction count does not
(+-0.05 % between repetitions), so small changes are compared under callgrind:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        python -m benchmarks.stage_bench --orders 500 --reps 3 --callgrind
    grep ^summary /tmp/cg.out.3     # instructions of the third repetition; / events

With ``--callgrind`` each repetition zeroes callgrind's counters before it and dumps them
after it (``callgrind_control``), so ``<out>.N`` holds repetition N alone (the first one
also pays for first calls: compare the later ones). The stream ends a few hours before
now (the worker's `future` check), so two runs' streams differ slightly: compare
instructions per event (7 December: 49,046 and 49,324 per event in two runs of the same
code, 0.6 % apart; repetitions of one run 0.01 % apart).

The process runs with the worker's garbage-collector policy (``app.runtime.heap.tune``,
``--gc-gen0`` as ``WORKER_GC_GEN0``; 0 keeps Python's defaults), applied after the stream is
built, as the worker applies it after start-up. Until 7 December, afternoon, the bench ran
with Python's defaults, so its counts included collections the worker does not make.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.model import CoreSettings
from app.core.stock import Mark
from app.runtime import heap
from app.runtime.outputs import OutputEncoder
from app.runtime.statestore import Commits, Outputs
from app.settings import TopicSettings, load_section
from app.stages.governance import GovernanceStage
from tests.integration.streams import simulate

PARTITIONS = 4


class Record:
    """An input record as the stage reads it (a confluent-kafka ``Message``'s three calls)."""

    __slots__ = ("_offset", "_partition", "_value")

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class MemoryWriter:
    """A ``BatchWriter`` on a dict: outputs encoded and counted, state records applied."""

    def __init__(self) -> None:
        self.table: dict[bytes, bytes] = {}
        self.encoder = OutputEncoder(load_section(TopicSettings, {}))
        self.outputs = 0
        self.writes = 0

    def records(self, partition: int) -> list[tuple[bytes, bytes]]:
        start = f"{partition}\x1f".encode()
        return [(k, v) for k, v in self.table.items() if k.startswith(start)]

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.table.get(key)

    async def fence(self, partitions: set[int], epoch: int) -> None:
        pass

    def forget(self, partitions: set[int]) -> None:
        pass

    async def settle(self) -> None:
        pass

    async def write(self, outputs: Outputs, marks: list[Mark], commits: Commits,
                    on_committed: Callable[[], None] | None = None) -> None:
        sent: list[bytes] = []
        self.encoder.produce(lambda topic, key, value, partition: sent.append(value), outputs, marks)
        self.outputs += len(sent)
        for _, _, flush in commits:
            for key, value in flush(self.table.get):
                self.writes += 1
                if value is None:
                    self.table.pop(key, None)
                else:
                    self.table[key] = value
        if on_committed is not None:
            on_committed()


def stream(orders: int) -> list[Record]:
    """The simulated records in send order, each in its key's partition (CRC32, as
    librdkafka's default partitioner), with its offset there."""
    counts = [0] * PARTITIONS
    out = []
    for key, raw in simulate(orders=orders, warehouses=4, seed=7):
        partition = zlib.crc32(key) % PARTITIONS
        out.append(Record(partition, counts[partition], raw))
        counts[partition] += 1
    return out


def callgrind(command: str) -> None:
    subprocess.run(["callgrind_control", command, str(os.getpid())], stdout=subprocess.DEVNULL, check=False)


def run(records: list[Record], batch: int, zero: Callable[[], None], dump: Callable[[], None]) -> dict[str, Any]:
    writer = MemoryWriter()
    stage = GovernanceStage(topic="events", writer=writer, settings=CoreSettings(), idle_partition_s=1e9)

    async def go() -> None:
        await stage.assign(set(range(PARTITIONS)), 1)
        gc.collect()
        zero()
        for start in range(0, len(records), batch):
            chunk: dict[int, list[Record]] = {}
            for record in records[start : start + batch]:
                chunk.setdefault(record.partition(), []).append(record)
            await stage.process(chunk, {})
        dump()

    cpu = time.process_time()
    asyncio.run(go())
    cpu = time.process_time() - cpu
    return {"cpu_us_per_event": round(cpu / len(records) * 1e6, 3), "outputs": writer.outputs,
            "state_records": writer.writes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1500, help="simulated orders (~59 records each)")
    parser.add_argument("--batch", type=int, default=5000, help="records per batch, all partitions together")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="zero and dump callgrind's counters per repetition")
    parser.add_argument("--gc-gen0", type=int, default=heap.GEN0,
                        help="the worker's GC policy's young threshold (0: Python's defaults)")
    args = parser.parse_args(argv)
    records = stream(args.orders)
    heap.tune(args.gc_gen0)
    zero: Callable[[], None] = (lambda: callgrind("-z")) if args.callgrind else (lambda: None)
    dump: Callable[[], None] = (lambda: callgrind("-d")) if args.callgrind else (lambda: None)
    reps = [run(records, args.batch, zero, dump) for _ in range(args.reps)]
    print(json.dumps({"events": len(records), "batch": args.batch, "reps": reps}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
