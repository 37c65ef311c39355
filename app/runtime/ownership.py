"""Who owns which partition, and until when: the one ownership model of every stage.

**Partitions are the unit of ownership.** Every topic a stage reads (events, the stock
repartition topic, milestones) and every state table has ``TOPIC_PARTITIONS`` partitions,
and a worker owns partition *P* of all of them at once: Faust's group assignment of the
ownership topic (``<app id>-__ownership``, never written) decides which *P* are this
worker's, and its table recovery brings their state. Each stage (``app.runtime.runner``)
follows that assignment with its own consumer.

**Fencing.** A worker can lose a partition without knowing it: stalled past the session
timeout (a GC pause, SIGSTOP, a network cut), it is evicted and another worker takes the
partition over while it still holds a batch. Two guards keep such a *zombie* out:

- a **lease**: the group coordinator cannot evict a member before ``session timeout``
  after the last heartbeat it answered, so a worker may write state, outputs or ERP calls
  only while ``now < last answered heartbeat sent + session timeout - margin``. A stage
  checks it before it emits, before it commits and before every ERP call; a lease found
  expired *after* a commit means the commit may have raced the new owner: the worker
  marks its local stores for a wipe and exits (the changelog is the truth).
- an **epoch** on every state record: the consumer group's generation when the worker
  took the partition over, raised above the partition's last stored fence when it is not
  above it (``tables.records.take_over_epoch``: a deleted empty group starts again at
  generation 1 on Apache Kafka 4). The new owner writes a fence record with its epoch first; a
  restore skips any record of a lower epoch written after it (``FencedTable``), so a late
  write of the old owner can never be taken for committed state.

On Apache Kafka with ``WORKER_EXACTLY_ONCE`` (``app/runtime/transactions.py``) the broker
fences too: each input partition has its own transactional producer, a new owner's
``init_transactions`` aborts the old owner's open transaction and makes its commit fail,
and every restore reads committed records only. The lease and the epoch stay (the ERP
sink is not transactional, and the fence records keep one restore rule for both modes).
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Exit code of a worker that found itself fenced after a commit (restart it: its local
#: stores are wiped at the next start and recovered from the changelogs).
FENCED_EXIT_CODE = 75
WIPE_MARKER = "WIPE-LOCAL-STATE"


class Fenced(Exception):
    """This worker may no longer own the partition: nothing more is written or called for it."""


class BatchAborted(Exception):
    """A batch's transaction was aborted (exactly-once): nothing of it is visible, and the
    stage's in-memory state is ahead of the stored one: redo it from the stored offset."""


class Lease:
    """Time-bounded proof of group membership, renewed by answered heartbeats and joins.

    Thread-safe: renewed from the consumer's thread, read from the event loop."""

    def __init__(self, session_timeout_s: float, margin_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if margin_s >= session_timeout_s:
            raise ValueError("the lease margin must be shorter than the session timeout")
        self.session_timeout_s = session_timeout_s
        self.margin_s = margin_s
        self.clock = clock
        self._alive_at: float | None = None
        self._lock = threading.Lock()

    def renew(self, sent_at: float) -> None:
        with self._lock:
            if self._alive_at is None or sent_at > self._alive_at:
                self._alive_at = sent_at

    @property
    def expires_at(self) -> float | None:
        alive = self._alive_at
        return None if alive is None else alive + self.session_timeout_s - self.margin_s

    def valid(self) -> bool:
        expires = self.expires_at
        return expires is not None and self.clock() < expires


class Ownership:
    """The partitions this worker owns now, the epoch it took each at, and its lease.

    ``assignment()`` is injected (Faust's view, see ``app.runtime.app``) so that stages and
    tests depend on this class only."""

    def __init__(
        self,
        assignment: Callable[[], set[int] | None],
        generation: Callable[[], int],
        lease: Lease,
        wipe_dir: Path | None = None,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self._assignment = assignment
        self._generation = generation
        self.lease = lease
        self.wipe_dir = wipe_dir
        self._exit = exit

    def owned(self) -> set[int] | None:
        """The partitions owned now; None while the group rebalances or state recovers."""
        return self._assignment()

    def epoch(self) -> int:
        """The fencing epoch of a partition taken over now (the group generation)."""
        return self._generation()

    def check(self) -> None:
        """Raise ``Fenced`` unless the lease holds: call before any write or ERP call."""
        if not self.lease.valid():
            raise Fenced("the group lease has expired (no answered heartbeat within the session timeout)")

    def still_owner(self, partition: int) -> bool:
        owned = self._assignment()
        return owned is not None and partition in owned and self.lease.valid()

    def after_commit(self, what: str) -> None:
        """A commit has been written: if the lease expired meanwhile, the commit may have
        landed after another worker took the partitions over. The changelog restore skips
        it (epoch), but this worker's local stores have it: wipe them and exit."""
        if self.lease.valid():
            return
        log.critical(
            "%s committed after this worker's group lease expired (stalled past the session timeout?): "
            "its local state may hold fenced writes; wiping local stores and exiting (code %d)",
            what,
            FENCED_EXIT_CODE,
        )
        if self.wipe_dir is not None:
            self.wipe_dir.mkdir(parents=True, exist_ok=True)
            (self.wipe_dir / WIPE_MARKER).write_text(f"{what} at {time.time():.3f}\n")
        logging.shutdown()
        self._exit(FENCED_EXIT_CODE)


def wipe_if_marked(data_dir: Path, table_dir: Path) -> bool:
    """At start-up, before Faust opens its stores: remove the local table stores if a
    fenced commit marked them (they are recovered from the changelogs)."""
    marker = data_dir / WIPE_MARKER
    if not marker.exists():
        return False
    log.warning("local state marked after a fenced commit (%s): wiping %s", marker.read_text().strip(), table_dir)
    shutil.rmtree(table_dir, ignore_errors=True)
    marker.unlink()
    return True
