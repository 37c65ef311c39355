"""The ERP quota shared by partition ownership (``ERP_QUOTA_PER_S``).

One ERP gateway grants the whole fleet one quota. The order-release connector
(``ERP_SOURCE_RATE_PER_S``) and reconciliation (``RECONCILE_RATE_PER_S``, the leader
worker's timer) take their fixed shares off the top; the rest belongs to the ERP sinks,
split by the milestones partitions each worker owns:

    sink share = (ERP_QUOTA_PER_S - ERP_SOURCE_RATE_PER_S - RECONCILE_RATE_PER_S)
                 x owned partitions / TOPIC_PARTITIONS

A partition has one owner at a time (``app.runtime.ownership``), so the shares of the
fleet add up to the whole quota when every partition is owned and never to more, with
any number of replicas (a worker without a partition sends no sink request at all: the
sink's fence refuses it). ``ERP_BURST`` is shared the same way, at least 1 per worker
(a token bucket cannot send with less): the fleet's burst is therefore at most
``max(ERP_BURST, workers)`` (each limiter keeps ``ERP_BURST_RESERVE`` of its share unused, and
bursts at least 1: ``app.erp.ratelimit``). Every rebalance recomputes the share (the sink asks
``owned()`` on every round; ``follow`` wraps it). ``ERP_QUOTA_PER_S=0`` turns this off:
each sink then uses ``ERP_RATE_PER_S``/``ERP_BURST`` as its own.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

from app import metrics
from app.erp.client import ErpHttpClient
from app.settings import ErpSettings, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Share:
    rate_per_s: float
    burst: int


def sinks_pool(s: Settings) -> float:
    """What the whole quota leaves to the ERP sinks of the fleet."""
    return s.erp.quota_per_s - s.erp.source_rate_per_s - s.reconcile.rate_per_s


def sink_share(pool_per_s: float, burst: int, owned: int, partitions: int) -> Share:
    """One worker's share for ``owned`` of ``partitions`` partitions (``owned`` >= 1)."""
    if not 0 < owned <= partitions:
        raise ValueError(f"owned partitions must be in 1..{partitions}, got {owned}")
    fraction = owned / partitions
    return Share(pool_per_s * fraction, max(1, math.floor(burst * fraction)))


def sink_settings(s: Settings) -> ErpSettings:
    """The ERP settings the sink's client starts with: with ``ERP_QUOTA_PER_S``, one
    partition's share (the first rebalance sets the real one before any request)."""
    if not s.erp.quota_per_s:
        return s.erp
    first = sink_share(sinks_pool(s), s.erp.burst, 1, s.topics.partitions)
    return dataclasses.replace(s.erp, rate_per_s=first.rate_per_s, burst=first.burst)


class QuotaFollower:
    """Sets the sink client's share from the partitions this worker owns, whenever they change."""

    def __init__(self, client: ErpHttpClient, s: Settings) -> None:
        self.client = client
        self.pool = sinks_pool(s)
        self.burst = s.erp.burst
        self.partitions = s.topics.partitions
        self._owned: frozenset[int] | None = None
        self.share: Share | None = None

    def update(self, owned: Collection[int] | None) -> None:
        """Called with every ``owned()`` answer; None (a rebalance under way) changes nothing."""
        if owned is None:
            return
        now = frozenset(owned)
        if now == self._owned:
            return
        self._owned = now
        if not now:  # no partition: no sink request can go out (fenced); the gauge says 0
            metrics.ERP_QUOTA_SHARE.labels(self.client.role).set(0)
            log.info("ERP quota share: no partition owned, no sink requests")
            return
        self.share = sink_share(self.pool, self.burst, len(now), self.partitions)
        self.client.set_share(self.share.rate_per_s, self.share.burst)
        log.info("ERP quota share: %.3g req/s, burst %d (%d of %d partitions)", self.share.rate_per_s,
                 self.share.burst, len(now), self.partitions)


def follow(client: ErpHttpClient, s: Settings,
           owned: Callable[[], set[int] | None]) -> Callable[[], set[int] | None]:
    """``owned`` for the sink, updating ``client``'s share on every change of ownership
    (``owned`` itself when ``ERP_QUOTA_PER_S`` is off)."""
    if not s.erp.quota_per_s:
        return owned
    follower = QuotaFollower(client, s)

    def owned_and_shared() -> set[int] | None:
        now = owned()
        follower.update(now)
        return now

    return owned_and_shared
