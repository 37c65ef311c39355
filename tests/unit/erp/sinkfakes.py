"""Fakes for the ordered ERP sink: a milestones topic with a consumer, the ledger table,
the ERP dead-letter topic, an ERP port with a script per milestone, and a virtual clock."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.erp.port import PostResult
from app.erp.sink import (
    DONE,
    Flush,
    OrderedErpSink,
    Record,
    SinkConfig,
    fence,
    meta_key,
)
from app.kafka import codec


class Clock:
    """Virtual time: ``sleep`` moves it on at once."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def milestone(mid: str, mtype: str = "OrderPicked", order: str = "OUT-1", **body: Any) -> dict[str, Any]:
    m = {"milestone_id": mid, "type": mtype, "warehouse_id": "WH1", "occurred_at": "2026-11-27T10:00:00.000Z",
         "event_ids": ["e"], "order_id": order}
    if mtype == "OrderPicked":
        m.update(lines=[{"line_no": 1, "sku": "SKU-1", "ordered": 1, "picked": 1}], short=False)
    elif mtype == "OrderPacked":
        m.update(package_ids=["P1"])
    elif mtype == "ShipmentConfirmed":
        m.update(shipment_id="S", carrier="UPS", tracking_no="T", lines=[{"line_no": 1, "qty": 1}])
    elif mtype == "InventoryAdjusted":
        m.pop("order_id")
        m.update(sku="SKU-1", location="A-01", net_delta=-2, event_count=1,
                 window_start="2026-11-27T09:55:00.000Z", window_end="2026-11-27T10:00:00.000Z")
    m.update(body)
    return m


def doc_key(m: Mapping[str, Any]) -> bytes:
    return f"WH1|{m.get('order_id') or m.get('sku')}".encode()


class Topic:
    """The milestones topic: records per partition."""

    def __init__(self, partitions: int = 1) -> None:
        self.parts: dict[int, list[Record]] = {p: [] for p in range(partitions)}

    def add(self, m: dict[str, Any] | bytes, partition: int = 0, key: bytes | None = None) -> int:
        value = m if isinstance(m, bytes) else codec.encode_milestone(m)
        key = key if key is not None else (doc_key(m) if isinstance(m, dict) else b"junk")
        offset = len(self.parts[partition])
        self.parts[partition].append(Record(partition, offset, key, value, 1_000))
        return offset


class Source:
    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.pos: dict[int, int] = {}
        self.paused: set[int] = set()
        self.committed: dict[int, int] = {}
        self.assignments: list[dict[int, int]] = []

    async def assign(self, starts: Mapping[int, int]) -> None:
        self.pos = {p: max(0, o) for p, o in starts.items()}
        self.paused = set()
        self.assignments.append(dict(starts))

    async def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        for p, pos in self.pos.items():
            if p in self.paused:
                continue
            batch = self.topic.parts[p][pos:pos + max_records - len(out)]
            out += batch
            self.pos[p] = pos + len(batch)
        await asyncio.sleep(0)
        return out

    async def pause(self, partitions: Collection[int]) -> None:
        self.paused |= set(partitions)

    async def resume(self, partitions: Collection[int]) -> None:
        self.paused -= set(partitions)

    async def ends(self, partitions: Collection[int]) -> dict[int, int]:
        return {p: len(self.topic.parts[p]) for p in partitions}

    def cached_end(self, partition: int) -> int | None:
        return len(self.topic.parts[partition])

    async def commit(self, offsets: Mapping[int, int]) -> None:
        self.committed.update(offsets)

    async def close(self) -> None:
        pass


class Ledger:
    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.commits = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    async def commit(self, partition: int, offset: int, flush: Flush) -> None:
        store = self.data.setdefault(partition, {})
        for key, value in flush(store.get):
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
        self.commits += 1
        await asyncio.sleep(0)

    def entry(self, mid: str, partition: int = 0) -> dict[str, Any] | None:
        raw = self.get(partition, mid.encode())
        return None if raw is None else orjson.loads(raw)

    def offset(self, partition: int = 0) -> int:
        raw = self.get(partition, meta_key(partition))
        return -1 if raw is None else orjson.loads(raw)["offset"]

    def holds(self, partition: int = 0) -> dict[str, Any]:
        raw = self.get(partition, meta_key(partition))
        return {} if raw is None else orjson.loads(raw)["holds"]


class DeadLetters:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, dict[str, Any]]] = []

    async def send(self, key: bytes | None, value: bytes) -> None:
        self.records.append((key, orjson.loads(value)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [v for _, v in self.records if kind in v or (kind == "milestone_id" and "held" not in v)]


Script = Callable[[dict[str, Any]], PostResult]


@dataclass
class Erp:
    """An ERP port: per milestone id a list of behaviours (an exception to raise, or None to
    post), consumed call by call; afterwards it posts. ``calls`` keeps every call in order."""

    script: dict[str, list[BaseException | None]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)
    before_send: Callable[[], None] | None = None
    on_call: Callable[[dict[str, Any]], None] | None = None

    async def post(self, m: dict[str, Any]) -> PostResult:
        if self.on_call is not None:
            self.on_call(m)
        if self.before_send is not None:
            self.before_send()  # what ErpHttpClient does before every request
        mid = m["milestone_id"]
        self.calls.append(mid)
        await asyncio.sleep(0)
        steps = self.script.get(mid) or []
        if steps:
            step = steps.pop(0)
            if step is not None:
                raise step
        if mid in self.posted:
            return PostResult("already_done", f"doc:{mid}")
        self.posted.append(mid)
        return PostResult("posted", f"doc:{mid}")

    async def read_state(self, m: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        pass


class Ownership:
    """``owned()`` / ``still_owner()`` under the test's control."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions: set[int] | None = set(partitions)

    def owned(self) -> set[int] | None:
        return None if self.partitions is None else set(self.partitions)

    def still_owner(self, partition: int) -> bool:
        return self.partitions is not None and partition in self.partitions


@dataclass
class Harness:
    topic: Topic
    erp: Any
    ledger: Ledger = field(default_factory=Ledger)
    dead: DeadLetters = field(default_factory=DeadLetters)
    clock: Clock = field(default_factory=Clock)
    owner: Ownership = field(default_factory=lambda: Ownership({0}))
    config: SinkConfig = field(default_factory=lambda: SinkConfig(max_retries=3, backoff_base_s=0.5,
                                                                  backoff_cap_s=4.0, settle_s=10.0))
    source: Source | None = None
    sink: OrderedErpSink | None = None

    def start(self) -> OrderedErpSink:
        """A (new) sink instance: a worker (re)starting on the same ledger and topic."""
        self.source = Source(self.topic)
        if hasattr(self.erp, "before_send"):
            self.erp.before_send = fence(self.owner.still_owner)
        self.sink = OrderedErpSink(
            self.erp, self.source, self.ledger, self.dead, owned=self.owner.owned,
            still_owner=self.owner.still_owner, config=self.config, clock=self.clock,
            wall=self.clock.wall, sleep=self.clock.sleep, rand=lambda: 0.5)
        return self.sink

    async def run_until(self, done: Callable[[], bool], steps: int = 3000) -> None:
        assert self.sink is not None
        for _ in range(steps):
            await self.sink.step()
            if done():
                return
        raise AssertionError("condition not reached")

    async def settle(self, steps: int = 200) -> None:
        """Run a number of rounds (for 'nothing happens' checks)."""
        assert self.sink is not None
        for _ in range(steps):
            await self.sink.step()

    async def stop(self) -> None:
        """The worker dies: its tasks stop, nothing more is committed."""
        assert self.sink is not None
        for p in list(self.sink.runs):
            await self.sink._drop(p)

    def done(self, *mids: str, partition: int = 0) -> bool:
        return all((self.ledger.entry(m, partition) or {}).get("outcome") in DONE for m in mids)
