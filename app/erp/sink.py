"""The ordered ERP sink: milestones partitions in, ERP effects out, per document in order.

A stage object with an explicit per-partition lifecycle and no Faust in it (the Faust
wiring is ``agents/erp_sink.py``; tests drive it with fakes):

    assign  -> load: the partition's ledger meta (last resolved offset, holds) ->
    process -> read from meta offset + 1, post, record outcomes in the ledger ->
    revoke  -> cancel the partition's work, drop its memory, commit nothing more.

**Reading.** The stage owns its consumer (``Source``: manual assignment, pause, seek by
re-assignment). It reads exactly the partitions ``owned()`` names (one injected query: the
lead's ownership module replaces it), each from the offset after the one stored in the
partition's ledger meta.

**Order.** Records are kept in memory per partition until resolved. A *document* is a
record key (one order, one stock key): its milestones form a FIFO and only its head is
posted; the next one starts only once the head's effect is in the ERP (``posted``,
``already_done``, ``skipped``). Other documents go on concurrently (one shared rate
limiter in the port). A batch "cut" by a revocation loses its whole in-memory window and
is re-read from the stored offset, so nothing buffered behind it can overtake it.

**Commit.** Per partition, only the contiguous prefix of resolved records is committed:
the ledger entries of the outcomes go first, then the meta (offset + holds) as the commit
record (``Ledger.commit``), then the offset to the monitoring consumer group. A record is
resolved when its effect is in the ERP, or when it is durably recorded as dead-lettered,
parked or held (ledger + ERP dead-letter topic), or is a duplicate of a done one, or is
undecodable (ERP dead-letter topic).

**Failures.** ``PermanentErpError``: dead-lettered, and its document is *held*: its
successors are recorded as held (ledger, ``syncgov dlq list``, metric) and not posted until
the blocker is re-driven (``syncgov dlq replay`` puts it back on the topic; its new record
releases the document: the blocker, then the held successors, in order). Transient errors
and ``NotReadyErpError`` (a precondition not met yet) are retried with capped, jittered
backoff (a deferral's retry time is rounded up to a shared tick, ``defer_tick_s``, so
documents waiting for the ERP retry together and their reads share a batched request); a
failure counts toward ``max_retries`` only once the ERP has answered some other
milestone successfully since this document started failing (a down ERP parks nothing, a
document the ERP refuses alone is parked). After ``max_retries`` counted failures, and
not before its failures have lasted ``park_after_s`` (an ERP incident that fails some kinds of
request while others go through, for a few minutes, parks nothing), the document is *parked*: like a dead letter (ERP dead-letter topic with ``parked``, hold,
re-drive), so the partition goes on.

**Unknown outcomes.** A request that may still commit (``TransientErpError.unknown``: no
answer, 502/504) is not followed by a read-before-write until ``settle_s`` (the stated
bound on how long an ERP write may run: ``ERP_TIMEOUT_S``) has passed, so the read sees a
late commit and a create is never repeated blindly. The same wait covers a takeover: the
records a new owner inherits (below the partition's end at assignment) are not posted
before ``settle_s`` after the assignment, when nothing the previous owner sent can still
commit.

**Fencing.** ``still_owner(partition)`` is checked before every ERP request (``fence`` is
the port's ``before_send`` hook; the partition is a context variable of the document's
task) and before every commit. A revoked partition's work stops (``Revoked``), nothing of
it is committed, and it is re-read from its stored offset by the next owner (or by this
worker when ownership comes back): the ledger and the adapters' read-before-write turn
the redo into acknowledgements.
"""
from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from app import metrics
from app.core import model
from app.core.timeutil import format_ts, parse_ts
from app.erp.port import (
    ErpPort,
    MilestoneRecord,
    NotReadyErpError,
    PermanentErpError,
    PostResult,
    TransientErpError,
    milestone_record,
)
from app.erp.ratelimit import backoff

log = logging.getLogger(__name__)

#: Ledger outcomes after which a milestone is not posted again.
DONE: Final = frozenset({"posted", "already_done", "skipped"})
#: Ledger outcomes that stop a document until a re-drive.
BLOCKING: Final = frozenset({"dead_lettered", "parked"})
SLA = {
    model.M_SHIPMENT_CONFIRMED: metrics.SLA_SHIPPED_TO_POSTED,
    model.M_RETURN_RECEIVED: metrics.SLA_RETURN_TO_POSTED,
}

#: A table write: (key, value), value None for a delete.
Write = tuple[bytes, "bytes | None"]
Flush = Callable[[Callable[[bytes], "bytes | None"]], list[Write]]


def meta_key(partition: int) -> bytes:
    """The ledger key of a milestones partition's meta (offset and holds)."""
    return f"sink\x1fmeta\x1f{partition}".encode()


def order_key(warehouse_id: str, order_id: str) -> bytes:
    """Key of an order's ERP-call trail (milestone ids are hex, so no clash)."""
    return f"order:{warehouse_id}|{order_id}".encode()


class Revoked(Exception):
    """The partition is no longer this worker's: no further ERP call or commit for it."""


_PARTITION: contextvars.ContextVar[int] = contextvars.ContextVar("erp_sink_partition")


def fence(still_owner: Callable[[int], bool]) -> Callable[[], None]:
    """The port's ``before_send`` hook: raises ``Revoked`` right before a request of a
    partition this worker no longer owns (the partition is the calling task's)."""

    def check() -> None:
        partition = _PARTITION.get(None)
        if partition is not None and not still_owner(partition):
            raise Revoked(partition)

    return check


# -- ports ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record of the milestones topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


class Source(Protocol):
    """The milestones consumer, under the sink's control (manual assignment)."""

    async def assign(self, starts: Mapping[int, int]) -> None:
        """Read exactly these partitions, each from its offset (pauses are lifted)."""

    async def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...

    async def pause(self, partitions: Collection[int]) -> None: ...

    async def resume(self, partitions: Collection[int]) -> None: ...

    async def ends(self, partitions: Collection[int]) -> dict[int, int]:
        """Each partition's end offset (next offset to be written), from the broker."""

    def cached_end(self, partition: int) -> int | None:
        """The last known end offset (no broker call), for the backlog metric."""

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Next offset to read per partition, to the monitoring consumer group (never read back)."""

    async def close(self) -> None: ...


class Ledger(Protocol):
    """The ERP ledger table, per milestones partition."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    async def commit(self, partition: int, offset: int, flush: Flush) -> None:
        """Store ``flush(previous)``'s writes of one partition, the last one (the meta) only
        once the others are durable; returns when all are."""


class DeadLetters(Protocol):
    async def send(self, key: bytes | None, value: bytes) -> None:
        """A record on the ERP dead-letter topic; returns once the broker has it."""


@dataclass(frozen=True)
class SinkConfig:
    max_retries: int = 8
    park_after_s: float = 0.0  # ... and only once its failures have lasted this long (ERP_PARK_AFTER_S)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    settle_s: float = 10.0  # an ERP write that reached the ERP commits or fails within this
    max_window: int = 2000  # unresolved records kept per partition before it is paused
    poll_records: int = 500
    poll_timeout_s: float = 0.2
    idle_s: float = 0.1  # wait when nothing is owned
    defer_tick_s: float = 1.0  # deferred documents (not ready yet) retry together, on this tick


# -- per partition state ----------------------------------------------------------------------


@dataclass(eq=False)
class Slot:
    """A milestone to resolve. ``offset`` None: a held milestone released from the ledger
    (its own record was resolved when it was held)."""

    milestone: MilestoneRecord
    offset: int | None
    timestamp_ms: int | None = None
    resolved: bool = False

    @property
    def id(self) -> str:
        return self.milestone["milestone_id"]


@dataclass(eq=False)
class Undecodable:
    """A record that is no milestone, already sent to the ERP dead-letter topic: it only
    holds its place in the partition's offset order."""

    offset: int
    timestamp_ms: int | None = None
    resolved: bool = True


@dataclass
class Hold:
    """A document stopped behind its dead-lettered or parked milestone ``blocker``.

    ``blocker`` None: it was re-driven and is done; the document is being released.
    ``offset``: a record of the blocker above it is a re-drive (below: a redelivery)."""

    blocker: str | None
    offset: int
    reason: str
    held: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"blocker": self.blocker, "offset": self.offset, "reason": self.reason, "held": self.held}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Hold:
        return cls(d.get("blocker"), int(d["offset"]), str(d["reason"]), list(d.get("held") or []))


@dataclass(eq=False)
class Doc:
    key: bytes
    queue: deque[Slot] = field(default_factory=deque)
    hold: Hold | None = None
    releasing: bool = False
    task: asyncio.Task[None] | None = None
    failures: int = 0  # in the current streak
    counted: int = 0  # failures that count toward parking
    streak_seq: int | None = None  # success counter when the streak began
    streak_started: float | None = None  # clock() at the streak's first failure
    not_before: float = 0.0


@dataclass(eq=False)
class PartitionRun:
    partition: int
    committed: int  # last offset covered by the stored meta (-1: none)
    read_pos: int  # next offset to read
    docs: dict[bytes, Doc] = field(default_factory=dict)
    slots: deque[Slot | Undecodable] = field(default_factory=deque)  # records read, in offset order
    writes: list[Write] = field(default_factory=list)  # ledger entries not committed yet
    trails: dict[bytes, list[dict[str, Any]]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # this run's outcomes by milestone id
    meta_dirty: bool = False
    inherited_end: int = 0  # records below it may have been in flight at the previous owner
    quiet_until: float = 0.0  # ... so they wait until then (settle_s after the assignment)
    assigned_ms: int | None = None  # wall time of the assignment: records written before it are inherited too
    paused: bool = False
    cut: bool = False  # revoked under us: dropped and reloaded by the stage

    def unresolved(self) -> int:
        return len(self.slots)

    def holds(self) -> dict[str, Hold]:
        return {doc.key.hex(): doc.hold for doc in self.docs.values() if doc.hold is not None}


def decode_milestone_default(raw: bytes) -> MilestoneRecord:
    """A milestone record off the milestones topic, in the port's form (``ValueError``, made a
    dead letter by the sink, when it is not one)."""
    from app.core.model import Milestone
    from app.kafka import codec

    return milestone_record(Milestone.from_dict(codec.decode(raw)).to_dict())


# -- the stage --------------------------------------------------------------------------------


class OrderedErpSink:
    def __init__(
        self,
        port: ErpPort,
        source: Source,
        ledger: Ledger,
        dead_letters: DeadLetters,
        *,
        owned: Callable[[], set[int] | None],
        still_owner: Callable[[int], bool],
        config: SinkConfig,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        decode: Callable[[bytes], MilestoneRecord] = decode_milestone_default,
    ) -> None:
        self.port, self.source, self.ledger, self.dead_letters = port, source, ledger, dead_letters
        self.owned, self.still_owner, self.config = owned, still_owner, config
        self.clock, self.wall, self.sleep, self.rand, self.decode = clock, wall, sleep, rand, decode
        self.runs: dict[int, PartitionRun] = {}
        self.assigned: set[int] | None = None
        self.success_seq = 0  # ERP answers that applied or acknowledged a milestone
        self._ends: dict[int, int] = {}  # the owned partitions' end offsets, last queried (refresh_gauges)
        self._errors: list[BaseException] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                await self.step()
        finally:
            for partition in list(self.runs):
                await self._drop(partition)
            await self.source.close()

    async def step(self) -> None:
        """One round: follow ownership, read, dispatch, commit resolved prefixes."""
        if self._errors:
            raise self._errors[0]
        if not await self._sync():
            await self.sleep(self.config.idle_s)
            return
        if not self.runs:
            await self.sleep(self.config.idle_s)
            return
        records = await self.source.poll(self.config.poll_records, self.config.poll_timeout_s)
        owned = self.owned()
        if owned is None or {p for p in owned if self.still_owner(p)} != self.assigned:
            self.assigned = None  # ownership moved during the poll: re-sync, re-seeking to read these again
            return
        for rec in records:
            run = self.runs.get(rec.partition)
            if run is None or run.cut or rec.offset < run.read_pos:
                continue  # not ours (any more), or before where this run reads
            run.read_pos = rec.offset + 1
            await self._accept(run, rec)
        await asyncio.sleep(0)  # let documents started by this batch make their first move
        for run in list(self.runs.values()):
            if not run.cut:
                await self._commit(run)
        await self._flow_control()
        self._metrics()

    async def _sync(self) -> bool:
        """Make the runs and the consumer's assignment match ``owned()``; False while
        ownership is unknown (a rebalance)."""
        owned = self.owned()
        if owned is None:
            return False
        owned = {p for p in owned if self.still_owner(p)}  # a partition being fenced off is not loaded
        changed = owned != self.assigned
        for partition in [p for p, r in self.runs.items() if p not in owned or r.cut]:
            await self._drop(partition)
            changed = True
        new = [p for p in sorted(owned) if p not in self.runs]
        for partition in new:
            self.runs[partition] = self._load(partition)
        if changed or new:
            await self.source.assign({p: self.runs[p].read_pos for p in sorted(owned)})
            self.assigned = set(owned)
            if new:
                ends = await self.source.ends(new)
                quiet = self.clock() + self.config.settle_s
                for partition in new:
                    run = self.runs[partition]
                    run.inherited_end = ends.get(partition, 0)
                    run.assigned_ms = int(self.wall() * 1000)
                    run.quiet_until = quiet  # for the inherited records only (``_inherited``)
            for run in self.runs.values():
                run.paused = False
            for partition in new:  # documents loaded mid-release go on, after the quiet time
                run = self.runs[partition]
                for doc in run.docs.values():
                    if doc.queue:
                        self._start(run, doc)
            log.info("ERP sink reads milestones partitions %s", sorted(owned))
        return True

    def _load(self, partition: int) -> PartitionRun:
        """A partition's run from its ledger meta; a document re-driven and done before the
        meta recorded it goes on releasing its held milestones."""
        raw = self.ledger.get(partition, meta_key(partition))
        meta = orjson.loads(raw) if raw else {}
        committed = int(meta.get("offset", -1))
        run = PartitionRun(partition, committed, committed + 1)
        for key_hex, hold_json in (meta.get("holds") or {}).items():
            doc = Doc(bytes.fromhex(key_hex), hold=Hold.from_json(hold_json))
            run.docs[doc.key] = doc
            hold = doc.hold
            assert hold is not None
            hold.held = [mid for mid in hold.held if self._entry_outcome(run, mid) not in DONE]
            if hold.blocker is not None and self._entry_outcome(run, hold.blocker) in DONE:
                hold.blocker = None
            if hold.blocker is None:
                self._release(run, doc, start=False)  # started once the quiet time is set
        log.info("ERP sink partition %d loaded at offset %d, %d document(s) held", partition, committed,
                 sum(1 for d in run.docs.values() if d.hold is not None))
        return run

    async def _drop(self, partition: int) -> None:
        """Stop a partition's work and forget it: nothing of it is committed any more."""
        run = self.runs.pop(partition, None)
        if run is None:
            return
        run.cut = True
        tasks = [d.task for d in run.docs.values() if d.task is not None and not d.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("ERP sink partition %d released; %d record(s) not resolved are left to its next owner",
                 partition, run.unresolved())

    # -- records ------------------------------------------------------------------------------

    def _entry(self, run: PartitionRun, mid: str) -> dict[str, Any] | None:
        raw = self.ledger.get(run.partition, mid.encode())
        return None if raw is None else orjson.loads(raw)

    def _entry_outcome(self, run: PartitionRun, mid: str) -> str | None:
        if mid in run.outcomes:
            return run.outcomes[mid]
        entry = self._entry(run, mid)
        return None if entry is None else str(entry.get("outcome"))

    async def _accept(self, run: PartitionRun, rec: Record) -> None:
        try:
            m = self.decode(rec.value)
            mid = str(m["milestone_id"])
        except Exception as exc:  # any undecodable record: a dead letter, never a crash
            await self._undecodable(run, rec, f"{type(exc).__name__}: {exc}")
            return
        slot = Slot(m, rec.offset, rec.timestamp_ms)
        run.slots.append(slot)
        key = rec.key or b""
        doc = run.docs.get(key)
        if doc is None:
            doc = run.docs[key] = Doc(key)
        outcome = self._entry_outcome(run, mid)
        if outcome in DONE:
            metrics.ERP_CALLS.labels(m["type"], "deduplicated").inc()
            slot.resolved = True
            return
        hold = doc.hold
        if hold is not None and not doc.releasing:
            slot.resolved = True
            if mid == hold.blocker and rec.offset > hold.offset:
                log.info("ERP sink: %s %s re-driven; releasing its document", m["type"], mid)
                slot.resolved = False
                doc.queue.append(slot)
                self._release(run, doc)
            elif mid != hold.blocker and mid not in hold.held:
                await self._hold(run, doc, m)
            return  # else: the blocker's own record again, or a held one again
        doc.queue.append(slot)
        self._start(run, doc)

    def _release(self, run: PartitionRun, doc: Doc, start: bool = True) -> None:
        """Queue the held milestones behind whatever is queued (the re-driven blocker)."""
        hold = doc.hold
        assert hold is not None
        doc.releasing = True
        for mid in hold.held:
            entry = self._entry(run, mid)
            if entry is None or "milestone" not in entry:
                log.error("ERP sink: held milestone %s has no ledger entry with its body; dropped from the hold", mid)
                continue
            doc.queue.append(Slot(entry["milestone"], None))
        self._settle_hold(run, doc)
        if doc.queue and start:
            self._start(run, doc)

    def _settle_hold(self, run: PartitionRun, doc: Doc) -> None:
        hold = doc.hold
        if hold is not None and doc.releasing and hold.blocker is None and not hold.held:
            doc.hold, doc.releasing = None, False
            run.meta_dirty = True

    def _start(self, run: PartitionRun, doc: Doc) -> None:
        if doc.task is None or doc.task.done():
            doc.task = asyncio.ensure_future(self._drive(run, doc))
            doc.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._errors.append(task.exception())  # type: ignore[arg-type]

    # -- one document -------------------------------------------------------------------------

    async def _drive(self, run: PartitionRun, doc: Doc) -> None:
        """Post the document's milestones, head first, each once its predecessor is done."""
        _PARTITION.set(run.partition)
        try:
            while doc.queue and not run.cut:
                slot = doc.queue[0]
                wait = doc.not_before
                if self._inherited(run, slot):  # maybe in flight at the previous owner
                    wait = max(wait, run.quiet_until)
                if wait > self.clock():
                    await self.sleep(wait - self.clock())
                    continue
                if not self.still_owner(run.partition):
                    raise Revoked(run.partition)
                await self._attempt(run, doc, slot)
        except Revoked:
            if not run.cut:
                log.info("ERP sink: partition %d revoked during ERP work; it is left to its next owner", run.partition)
            run.cut = True

    @staticmethod
    def _inherited(run: PartitionRun, slot: Slot) -> bool:
        """A record the previous owner may have been posting: a released held milestone, one
        below the partition's end at the assignment, or one written before the assignment (its
        Kafka timestamp: a broker that under-reports end offsets, as Tansu does after a
        multi-record batch, must not let inherited records skip the wait)."""
        if slot.offset is None or slot.offset < run.inherited_end:
            return True
        return slot.timestamp_ms is not None and run.assigned_ms is not None and slot.timestamp_ms <= run.assigned_ms

    async def _attempt(self, run: PartitionRun, doc: Doc, slot: Slot) -> None:
        m = slot.milestone
        seq = self.success_seq
        try:
            result = await self.port.post(m)
        except NotReadyErpError as exc:
            metrics.ERP_CALLS.labels(m["type"], "deferred").inc()
            await self._failed(run, doc, slot, seq, exc, retry_after=None, unknown=False)
        except TransientErpError as exc:
            metrics.ERP_CALLS.labels(m["type"], "transient_error").inc()
            await self._failed(run, doc, slot, seq, exc, retry_after=exc.retry_after_s, unknown=exc.unknown)
        except PermanentErpError as exc:
            metrics.ERP_CALLS.labels(m["type"], "permanent_error").inc()
            await self._block(run, doc, slot, "dead_lettered", exc.status, exc.detail)
        except Revoked:
            raise
        except Exception as exc:  # an adapter bug on one milestone: parked in time, never a crash loop
            log.exception("ERP sink: unexpected error posting %s %s", m["type"], m["milestone_id"])
            metrics.ERP_CALLS.labels(m["type"], "transient_error").inc()
            await self._failed(run, doc, slot, seq, exc, retry_after=None, unknown=True)
        else:
            self._done(run, doc, slot, result)

    def _done(self, run: PartitionRun, doc: Doc, slot: Slot, result: PostResult) -> None:
        m = slot.milestone
        if run.cut:
            raise Revoked(run.partition)
        metrics.ERP_CALLS.labels(m["type"], result.outcome).inc()
        if result.outcome != "skipped":
            self.success_seq += 1
        if result.outcome == "posted" and m["type"] in SLA and m.get("occurred_at"):
            SLA[m["type"]].observe(max(0.0, self.wall() - parse_ts(m["occurred_at"]) / 1000))
        self._record(run, m, {"outcome": result.outcome, "ref": result.document_ref})
        doc.failures = doc.counted = 0
        doc.streak_seq, doc.streak_started, doc.not_before = None, None, 0.0
        doc.queue.popleft()
        slot.resolved = True
        hold = doc.hold
        if hold is not None and doc.releasing:
            if hold.blocker == slot.id:
                hold.blocker = None
            elif slot.id in hold.held:
                hold.held.remove(slot.id)
            run.meta_dirty = True
            self._settle_hold(run, doc)

    async def _failed(self, run: PartitionRun, doc: Doc, slot: Slot, seq: int, exc: Exception,
                      retry_after: float | None, unknown: bool) -> None:
        m = slot.milestone
        if run.cut:
            raise Revoked(run.partition)
        if doc.streak_seq is None:
            doc.streak_seq = seq
        if doc.streak_started is None:
            doc.streak_started = self.clock()
        if self.success_seq > doc.streak_seq:
            doc.counted += 1  # the ERP answers others: this document's own trouble
        doc.failures += 1
        if doc.counted > self.config.max_retries and self.clock() - doc.streak_started >= self.config.park_after_s:
            log.warning("ERP sink: parking %s %s after %d failures (%d while the ERP answered others): %s",
                        m["type"], m["milestone_id"], doc.failures, doc.counted, exc)
            await self._block(run, doc, slot, "parked", getattr(exc, "status", None),
                              f"parked after {doc.failures} failed attempts; last: {_describe(exc)}",
                              failures=doc.failures)
            return
        wait = backoff(min(doc.failures - 1, 64), self.config.backoff_base_s, self.config.backoff_cap_s, self.rand)
        wait = max(wait, retry_after or 0.0)
        if unknown:
            wait = max(wait, self.config.settle_s)  # the request may still commit: let it, then read
        not_before = self.clock() + wait
        if isinstance(exc, NotReadyErpError) and self.config.defer_tick_s > 0:
            # Not a fault of the ERP's (no herd to spread): deferred documents retry on a shared
            # tick, so their reads share one batched request instead of one each at random times.
            tick = self.config.defer_tick_s
            not_before = math.ceil(not_before / tick) * tick
            wait = not_before - self.clock()
        doc.not_before = not_before
        log.info("ERP sink: %s %s %s (attempt %d); next try in %.1f s", m["type"], m["milestone_id"],
                 "deferred" if isinstance(exc, NotReadyErpError) else "failed", doc.failures, wait)

    async def _block(self, run: PartitionRun, doc: Doc, slot: Slot, reason: str, status: int | None, detail: str,
                     failures: int = 0) -> None:
        """Dead-letter or park the head, and hold the document's successors behind it."""
        m = slot.milestone
        if run.cut:
            raise Revoked(run.partition)
        if reason == "parked":
            metrics.ERP_CALLS.labels(m["type"], "parked").inc()
        self._record(run, m, {"outcome": reason, "ref": "", "status": status, "detail": detail})
        offset = slot.offset if slot.offset is not None else run.read_pos - 1
        previous = doc.hold
        doc.hold = Hold(slot.id, offset, reason, [])
        doc.releasing = False
        doc.failures = doc.counted = 0
        doc.streak_seq, doc.streak_started, doc.not_before = None, None, 0.0
        doc.queue.popleft()
        slot.resolved = True
        successors = list(doc.queue)
        doc.queue.clear()
        if previous is not None:  # a release stopped again: what was still held stays held
            queued = {s.id for s in successors}
            successors += [s for s in self._held_slots(run, previous) if s.id not in queued and s.id != slot.id]
        run.meta_dirty = True
        record = {"milestone_id": slot.id, "type": m["type"], "milestone": m, "status": status, "detail": detail,
                  "failed_at": format_ts(int(self.wall() * 1000))}
        if reason == "parked":
            record.update(parked=True, failures=failures)
        await self.dead_letters.send(doc.key, orjson.dumps(record))
        for s in successors:
            await self._hold(run, doc, s.milestone, s)
        log.warning("ERP sink: %s %s %s (%s); %d successor(s) of its document held until it is re-driven",
                    m["type"], slot.id, reason, detail[:300], len(successors))

    def _held_slots(self, run: PartitionRun, hold: Hold) -> list[Slot]:
        out = []
        for mid in hold.held:
            entry = self._entry(run, mid)
            if entry is not None and "milestone" in entry and self._entry_outcome(run, mid) not in DONE:
                out.append(Slot(entry["milestone"], None))
        return out

    async def _hold(self, run: PartitionRun, doc: Doc, m: MilestoneRecord, slot: Slot | None = None) -> None:
        """Record ``m`` as held behind its document's blocker (ledger, dead-letter topic marker)."""
        hold = doc.hold
        assert hold is not None and hold.blocker is not None
        mid = str(m["milestone_id"])
        if mid not in hold.held:
            hold.held.append(mid)
        run.meta_dirty = True
        if slot is not None:
            slot.resolved = True
        metrics.ERP_CALLS.labels(m["type"], "held").inc()
        self._record(run, m, {"outcome": "held", "ref": "", "blocker": hold.blocker, "milestone": m})
        marker = {"held": mid, "blocker": hold.blocker, "type": m["type"], "milestone": m,
                  "held_at": format_ts(int(self.wall() * 1000))}
        await self.dead_letters.send(doc.key, orjson.dumps(marker))

    async def _undecodable(self, run: PartitionRun, rec: Record, reason: str) -> None:
        digest = hashlib.sha256(rec.value).hexdigest()[:32]
        log.warning("ERP sink: undecodable milestone at %d/%d (%s): to the ERP dead-letter topic",
                    rec.partition, rec.offset, reason[:200])
        metrics.ERP_CALLS.labels("unknown", "undecodable").inc()
        value = {"milestone_id": f"undecodable:{digest}", "type": "Undecodable", "milestone": None,
                 "undecodable": True, "raw_b64": base64.b64encode(rec.value).decode(), "status": None,
                 "detail": f"undecodable milestone: {reason}"[:2000], "partition": rec.partition,
                 "offset": rec.offset, "failed_at": format_ts(int(self.wall() * 1000))}
        # Keyed (its key, else its id) so a re-drive marker lands in the same partition.
        await self.dead_letters.send(rec.key or str(value["milestone_id"]).encode(), orjson.dumps(value))
        run.slots.append(Undecodable(rec.offset, rec.timestamp_ms))

    def _record(self, run: PartitionRun, m: MilestoneRecord, fields: dict[str, Any]) -> None:
        """A ledger entry for ``m`` (and its order's trail entry), committed with the next meta."""
        mid = str(m["milestone_id"])
        now = int(self.wall() * 1000)
        value = {**fields, "at": format_ts(now), "type": m["type"]}
        run.outcomes[mid] = fields["outcome"]
        run.writes.append((mid.encode(), orjson.dumps(value)))
        order_id, warehouse_id = m.get("order_id"), m.get("warehouse_id")
        if order_id and warehouse_id:
            entry = {"at": now, "kind": "erp_call", "id": mid, "type": m["type"], "outcome": fields["outcome"],
                     "document_ref": fields.get("ref", "")}
            if fields.get("detail"):
                entry["detail"] = fields["detail"]
            run.trails.setdefault(order_key(warehouse_id, order_id), []).append(entry)

    # -- commit -------------------------------------------------------------------------------

    async def _commit(self, run: PartitionRun) -> None:
        """Store the outcomes and the contiguous resolved prefix (meta last), if any changed."""
        last = run.committed
        popped = 0
        for slot in run.slots:
            if not slot.resolved:
                break
            if slot.offset is not None:
                last = slot.offset
            popped += 1
        if not (popped or run.writes or run.meta_dirty or run.trails):
            return
        if not self.still_owner(run.partition):
            run.cut = True
            return
        for _ in range(popped):
            run.slots.popleft()
        writes, trails = run.writes, run.trails
        run.writes, run.trails, run.meta_dirty = [], {}, False
        meta = orjson.dumps({"offset": last, "holds": {k: h.to_json() for k, h in run.holds().items()}})
        key = meta_key(run.partition)

        def flush(previous: Callable[[bytes], bytes | None]) -> list[Write]:
            out = list(writes)
            for okey, entries in trails.items():
                out.append((okey, _trail(previous(okey), entries)))
            out.append((key, meta))
            return out

        await self.ledger.commit(run.partition, max(last, 0), flush)
        advanced = last != run.committed
        run.committed = last
        if advanced:
            await self.source.commit({run.partition: last + 1})
        # Forget documents with nothing queued, held or running.
        for dkey in [k for k, d in run.docs.items() if not d.queue and d.hold is None and (d.task is None or d.task.done())]:
            del run.docs[dkey]
        if len(run.outcomes) > 4 * self.config.max_window:
            run.outcomes.clear()  # all of them are in the ledger now

    async def _flow_control(self) -> None:
        """Pause a partition whose unresolved window is full; resume it at half."""
        pause = [p for p, r in self.runs.items() if not r.paused and r.unresolved() >= self.config.max_window]
        resume = [p for p, r in self.runs.items() if r.paused and r.unresolved() <= self.config.max_window // 2]
        if pause:
            await self.source.pause(pause)
            for p in pause:
                self.runs[p].paused = True
        if resume:
            await self.source.resume(resume)
            for p in resume:
                self.runs[p].paused = False

    # -- gauges -------------------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """The gauges from the owned partitions' current end offsets (a query, not the last
        poll's view): true when read even while the sink is idle, paused or owns nothing."""
        partitions = sorted(self.runs)
        self._ends = await self.source.ends(partitions) if partitions else {}
        self._metrics()

    async def refresh_gauges_every(self, seconds: float) -> None:
        """``refresh_gauges`` on a timer, until cancelled (a failed query is retried next time)."""
        while True:
            try:
                await self.refresh_gauges()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup: the next refresh retries
                log.debug("ERP sink gauges not refreshed: %s", exc)
            await self.sleep(seconds)

    def _metrics(self) -> None:
        """Ends only grow: the later of the consumer's cached end and the last queried one."""
        backlog, oldest, held = 0, None, 0
        blocked: dict[str, int] = {"dead_lettered": 0, "parked": 0}
        for run in self.runs.values():
            known = [e for e in (self.source.cached_end(run.partition), self._ends.get(run.partition)) if e is not None]
            end = max(known) if known else None
            if end is not None:
                backlog += max(0, end - run.committed - 1)
            for slot in run.slots:
                if not slot.resolved and slot.timestamp_ms is not None:
                    oldest = slot.timestamp_ms if oldest is None else min(oldest, slot.timestamp_ms)
                    break
            for doc in run.docs.values():
                if doc.hold is not None:
                    held += len(doc.hold.held)
                    if doc.hold.blocker is not None and not doc.releasing:
                        blocked[doc.hold.reason] = blocked.get(doc.hold.reason, 0) + 1
        metrics.ERP_BACKLOG.set(backlog)
        metrics.ERP_BACKLOG_AGE.set(max(0.0, self.wall() - oldest / 1000) if oldest is not None and backlog else 0.0)
        metrics.ERP_HELD.set(held)
        for reason, n in blocked.items():
            metrics.ERP_BLOCKED_DOCUMENTS.labels(reason).set(n)


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, (TransientErpError, NotReadyErpError)) else f"{type(exc).__name__}: {exc}"


def _trail(previous: bytes | None, entries: Iterable[dict[str, Any]]) -> bytes:
    from tables import lineage  # pure (no Faust): the trail's cap

    return orjson.dumps(lineage.extend(orjson.loads(previous or b"[]"), entries))
