"""The coalescing batcher: many callers' ERP calls, one request per group.

The ordered sink keeps one task per document, each calling the port for its head
milestone only. The adapters turn those calls into *items* of a group (a read of one
model by one key field, one Tryton button on one model, one bulk route ...) and await
``Batcher.call(group, payload)``. The batcher collects the items made within a short
window and, above all, while it waits for the rate limiter: it first takes a slot from
the client (a token and an in-flight place) and only then decides what goes into the
request, so under backlog every call made while the quota was spent joins the next
request. The group whose oldest item waited longest goes first. ``execute(group,
payloads)`` sends one request and answers one outcome per item (a value, or an
exception for that item alone); each caller's future gets its own.

- **One bad item never fails its neighbours.** When ``execute`` raises an error that
  ``splittable`` says came from one of the items and changed nothing (Tryton rolls the
  whole call back and names the record; a bulk API refusing the body), the batch is
  bisected, each half in its own request, until the bad item stands alone and gets the
  error; the others succeed. Errors that are not the items' fault (throttled, 5xx, no
  answer) go to every item as they are: the sink's retry rules apply per milestone.
- **Order within a document** is the callers': a document has one call at a time (its
  task awaits it), so grouping across documents never reorders one document's steps.
- **Batch size adapts** to the quota (a batch is whatever gathered while the limiter
  made it wait: small when the ERP is idle, large under backlog) and to the ERP's
  latency, per kind of request (``kind(group)``: a button of a model, a read of a model):
  a request of several items answered after more than ``target_s`` cuts that kind's
  limit to the items it would have done in ``target_s``; a full request answered within
  half of it raises the limit by half (never above ``max_items``). So a slow ERP gets
  smaller requests well within ``ERP_TIMEOUT_S``, and one slow single-record answer (the
  ERP busy with something else) never shrinks the batches of a kind.
- **Fencing per item.** ``before_send`` (the sink's fence) runs for each item in the
  context its caller enqueued it from, right before the request: an item of a revoked
  partition gets ``Revoked`` and is left out, the rest go.
- **A short window.** A request goes once its group's oldest record has waited
  ``window_s`` (``ERP_BATCH_WINDOW_S``) or a group has a full request's worth: records
  arriving close together share a request while the ERP is idle; under backlog the records
  are older than that already and requests follow each other as fast as the limiter allows.
- **Cancelled callers** (a revoked partition's tasks) are dropped before sending.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app import metrics
from app.erp.port import NotReadyErpError, PermanentErpError

log = logging.getLogger(__name__)


class Gate(Protocol):
    """The rate gate of the HTTP client (``ErpHttpClient.acquire`` / ``release_unsent``)."""

    async def acquire(self) -> None: ...

    def release_unsent(self) -> None:
        """Give back the current task's slot if it was not sent (idempotent)."""
        ...


#: ``execute(group, payloads)`` -> one outcome per payload: a value, or an exception for that item.
Execute = Callable[[Hashable, list[Any]], Awaitable[Sequence[Any]]]


@dataclass(eq=False)
class _Item:
    payload: Any
    future: asyncio.Future[Any]
    context: contextvars.Context
    enqueued: float
    arrived: float  # the event loop's time (the window), whatever ``clock`` is


@dataclass
class _Pace:
    """The items limit of one kind of request (multiplicative both ways, on the ERP's answer time)."""

    limit: float

    def observe(self, elapsed_s: float, n: int, target_s: float, max_items: int) -> None:
        if elapsed_s > target_s and n > 1:
            self.limit = max(1.0, min(self.limit, n * target_s / elapsed_s))
        elif n >= int(self.limit) and elapsed_s <= target_s / 2:
            self.limit = min(float(max_items), self.limit * 1.5)


@dataclass
class BatchStats:
    requests: int = 0
    items: int = 0
    splits: int = 0
    largest: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [requests, items]


class Batcher:
    def __init__(
        self,
        gate: Gate,
        execute: Execute,
        *,
        window_s: float = 0.01,
        max_items: int = 100,
        first_items: int = 50,
        target_s: float = 3.0,
        splittable: Callable[[BaseException], bool] = lambda exc: False,
        before_send: Callable[[], None] | None = None,
        kind: Callable[[Hashable], str] = lambda group: str(group[0]) if isinstance(group, tuple) else str(group),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate, self.execute = gate, execute
        self.window_s, self.max_items, self.first_items, self.target_s = window_s, max_items, first_items, target_s
        self.splittable, self.before_send, self.kind, self.clock = splittable, before_send, kind, clock
        self._groups: dict[Hashable, list[_Item]] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._pace: dict[str, _Pace] = {}
        self.stats = BatchStats()

    # -- callers ------------------------------------------------------------------------------

    async def call(self, group: Hashable, payload: Any) -> Any:
        """Enqueue one item and wait for its own outcome (its exception is raised here)."""
        loop = asyncio.get_running_loop()
        item = _Item(payload, loop.create_future(), contextvars.copy_context(), self.clock(), loop.time())
        self._groups.setdefault(group, []).append(item)
        self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_loop())
        return await item.future

    def cap(self, group: Hashable) -> int:
        """Items per request for this group now (see the module docstring)."""
        pace = self._pace.get(self.kind(group))
        if pace is None:
            return min(self.first_items, self.max_items)
        return max(1, min(self.max_items, int(pace.limit)))

    async def close(self) -> None:
        tasks = [t for t in (self._flusher, *self._sends) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for items in self._groups.values():
            for item in items:
                if not item.future.done():
                    item.future.cancel()
        self._groups.clear()

    # -- flushing -----------------------------------------------------------------------------

    def _pending(self) -> bool:
        for group in list(self._groups):
            items = [i for i in self._groups[group] if not i.future.done()]
            if items:
                self._groups[group] = items
            else:
                del self._groups[group]
        return bool(self._groups)

    async def _flush_loop(self) -> None:
        while True:
            if not self._pending():
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    if not self._pending():
                        return  # idle: the next call starts a new flusher
                continue
            wait = self._window_left()
            if wait > 0:  # callers arriving close together join the same request
                await asyncio.sleep(wait)
                continue
            await self.gate.acquire()  # under backlog, everything called meanwhile joins too
            if not self._pending():
                self.gate.release_unsent()
                continue
            group = min(self._groups, key=lambda g: self._groups[g][0].enqueued)
            items = self._groups[group]
            take, rest = items[: self.cap(group)], items[self.cap(group):]
            if rest:
                self._groups[group] = rest
            else:
                del self._groups[group]
            task = asyncio.ensure_future(self._send(group, take, acquired=True))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def _window_left(self) -> float:
        """Seconds until a request is due: the oldest waiting record has waited ``window_s``,
        or a group has a full request's worth (0 under backlog: no wait between requests)."""
        now = asyncio.get_running_loop().time()
        left = self.window_s
        for group, items in self._groups.items():
            if len(items) >= self.cap(group):
                return 0.0
            left = min(left, items[0].arrived + self.window_s - now)
        return max(0.0, left)

    def _fenced(self, group: Hashable, items: list[_Item]) -> list[_Item]:
        """The items still to send: cancelled callers dropped, each caller's fence run in its context."""
        out = []
        for item in items:
            if item.future.done():
                continue
            if self.before_send is not None:
                try:
                    item.context.run(self.before_send)
                except BaseException as exc:  # the fence's answer is the item's outcome
                    metrics.ERP_BATCH_RECORD_OUTCOMES.labels(self.kind(group), "fenced").inc()
                    item.future.set_exception(exc)
                    continue
            out.append(item)
        return out

    async def _send(self, group: Hashable, items: list[_Item], *, acquired: bool) -> None:
        if not acquired:
            await self.gate.acquire()
        items = self._fenced(group, items)
        if not items:
            self.gate.release_unsent()
            return
        kind = self.kind(group)
        started = self.clock()
        try:
            outcomes = await self.execute(group, [item.payload for item in items])
        except asyncio.CancelledError:
            self.gate.release_unsent()  # if it failed before its request went on the wire
            for item in items:
                if not item.future.done():
                    item.future.cancel()
            raise
        except BaseException as exc:  # the request's outcome goes to its items
            self.gate.release_unsent()  # if it failed before its request went on the wire
            self._count(kind, len(items))
            if len(items) > 1 and self.splittable(exc):
                self.stats.splits += 1
                metrics.ERP_BATCH_SPLITS.labels(kind).inc()
                half = len(items) // 2
                log.info("ERP batch %s of %d refused (%s); splitting to find the item at fault",
                         kind, len(items), str(exc)[:200])
                await self._send(group, items[:half], acquired=False)
                await self._send(group, items[half:], acquired=False)
                return
            for item in items:
                if not item.future.done():
                    self._outcome(kind, exc)
                    item.future.set_exception(exc)
            return
        self.gate.release_unsent()  # an execute that sent nothing (every item answered locally)
        self._count(kind, len(items))
        pace = self._pace.setdefault(kind, _Pace(float(min(self.first_items, self.max_items))))
        pace.observe(self.clock() - started, len(items), self.target_s, self.max_items)
        metrics.ERP_BATCH_SIZE.labels(kind).set(self.cap(group))
        if len(outcomes) != len(items):
            mismatch = RuntimeError(f"ERP batch {kind}: {len(outcomes)} outcomes for {len(items)} items")
            for item in items:
                if not item.future.done():
                    item.future.set_exception(mismatch)
            return
        for item, outcome in zip(items, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                self._outcome(kind, outcome)
                item.future.set_exception(outcome)
            else:
                self._outcome(kind, None)
                item.future.set_result(outcome)

    @staticmethod
    def _outcome(kind: str, exc: BaseException | None) -> None:
        if exc is None:
            outcome = "done"
        elif isinstance(exc, NotReadyErpError):
            outcome = "not_ready"
        elif isinstance(exc, PermanentErpError):
            outcome = "refused"
        else:
            outcome = "transient"
        metrics.ERP_BATCH_RECORD_OUTCOMES.labels(kind, outcome).inc()

    def _count(self, kind: str, n: int) -> None:
        metrics.ERP_BATCH_RECORDS.labels(kind).observe(n)
        self.stats.requests += 1
        self.stats.items += n
        self.stats.largest = max(self.stats.largest, n)
        per = self.stats.by_kind.setdefault(kind, [0, 0])
        per[0] += 1
        per[1] += n
