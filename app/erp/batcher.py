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
  latency: per group kind, the seconds per item are tracked (EWMA) and a batch is cut
  at ``target_s`` worth of items (never above ``max_items``), so a slow ERP gets smaller
  requests well within ``ERP_TIMEOUT_S``.
- **Fencing per item.** ``before_send`` (the sink's fence) runs for each item in the
  context its caller enqueued it from, right before the request: an item of a revoked
  partition gets ``Revoked`` and is left out, the rest go.
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

log = logging.getLogger(__name__)


class Gate(Protocol):
    """The rate gate of the HTTP client (``ErpHttpClient.acquire`` / ``release_unsent``)."""

    async def acquire(self) -> None: ...

    def release_unsent(self) -> None: ...


#: ``execute(group, payloads)`` -> one outcome per payload: a value, or an exception for that item.
Execute = Callable[[Hashable, list[Any]], Awaitable[Sequence[Any]]]


@dataclass(eq=False)
class _Item:
    payload: Any
    future: asyncio.Future[Any]
    context: contextvars.Context
    enqueued: float


@dataclass
class _Pace:
    """Seconds per item of one kind of group (EWMA), for the latency-adaptive cap."""

    per_item_s: float | None = None

    def observe(self, elapsed_s: float, n: int) -> None:
        sample = elapsed_s / max(1, n)
        self.per_item_s = sample if self.per_item_s is None else 0.7 * self.per_item_s + 0.3 * sample


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
        item = _Item(payload, loop.create_future(), contextvars.copy_context(), self.clock())
        self._groups.setdefault(group, []).append(item)
        self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_loop())
        return await item.future

    def cap(self, group: Hashable) -> int:
        """Items per request for this group now: ``target_s`` worth at the measured pace."""
        pace = self._pace.get(self.kind(group))
        if pace is None or pace.per_item_s is None:
            return min(self.first_items, self.max_items)
        return max(1, min(self.max_items, int(self.target_s / max(pace.per_item_s, 1e-6))))

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
            await asyncio.sleep(self.window_s)  # callers woken together join the same request
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

    def _fenced(self, items: list[_Item]) -> list[_Item]:
        """The items still to send: cancelled callers dropped, each caller's fence run in its context."""
        out = []
        for item in items:
            if item.future.done():
                continue
            if self.before_send is not None:
                try:
                    item.context.run(self.before_send)
                except BaseException as exc:  # the fence's answer is the item's outcome
                    item.future.set_exception(exc)
                    continue
            out.append(item)
        return out

    async def _send(self, group: Hashable, items: list[_Item], *, acquired: bool) -> None:
        if not acquired:
            await self.gate.acquire()
        items = self._fenced(items)
        if not items:
            self.gate.release_unsent()
            return
        kind = self.kind(group)
        started = self.clock()
        try:
            outcomes = await self.execute(group, [item.payload for item in items])
        except asyncio.CancelledError:
            for item in items:
                if not item.future.done():
                    item.future.cancel()
            raise
        except BaseException as exc:  # the request's outcome goes to its items
            self._count(kind, len(items))
            if len(items) > 1 and self.splittable(exc):
                self.stats.splits += 1
                half = len(items) // 2
                log.info("ERP batch %s of %d refused (%s); splitting to find the item at fault",
                         kind, len(items), str(exc)[:200])
                await self._send(group, items[:half], acquired=False)
                await self._send(group, items[half:], acquired=False)
                return
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self._count(kind, len(items))
        self._pace.setdefault(kind, _Pace()).observe(self.clock() - started, len(items))
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
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    def _count(self, kind: str, n: int) -> None:
        self.stats.requests += 1
        self.stats.items += n
        self.stats.largest = max(self.stats.largest, n)
        per = self.stats.by_kind.setdefault(kind, [0, 0])
        per[0] += 1
        per[1] += n
