"""One HTTP exchange with the ERP: rate gate, timeout and error classification.

Shared by both adapters. Every request waits for the adaptive limiter
(``app.erp.ratelimit``), is sent once (retries belong to
``app.erp.port.post_with_retry``, which re-reads the document first) and
comes back as an :class:`HttpAnswer` (2xx) or one of the port's errors:

- a throttle status (``ERP_THROTTLE_STATUSES``, 429 by default): transient,
  with the ERP's ``Retry-After`` (seconds or HTTP date); the rate is cut;
- 5xx, 408, timeouts, refused or broken connections: transient;
- any other status: permanent, carrying the ERP's answer text.

The key travels only in the auth header; it is scrubbed from every detail.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import aiohttp

from app import metrics
from app.erp.port import PermanentErpError, TransientErpError
from app.erp.ratelimit import AdaptiveLimiter, RatePolicy

log = logging.getLogger(__name__)

DETAIL_LIMIT = 2000


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: Mapping[str, str]


def parse_retry_after(value: str | None, now_epoch_s: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now_epoch_s
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


class _Grant:
    """A slot from ``ErpHttpClient.acquire``: open until its request is sent or it is given
    back."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class ErpHttpClient:
    """Rate-limited, classified HTTP requests to one ERP base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        policy: RatePolicy,
        timeout_s: float,
        throttle_statuses: tuple[int, ...] = (429,),
        auth_header: tuple[str, str] | None = None,
        secret: str = "",
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
        before_send: Callable[[], None] | None = None,
        cold_start: bool = True,
        role: str = "sink",
    ) -> None:
        """``before_send`` runs once the rate limit lets a request go, right before it is
        sent; it may raise to stop the request (the ERP sink's fence: `app.erp.sink.fence`).

        ``cold_start``: the bucket starts full (no request may go at once), not empty. A fresh
        client (a restarted worker, a second process of the same key) cannot know what the
        gateway still counts from the requests just before it, so its first burst could be
        answered 429; the limiter starts as if the gateway's whole burst had just been spent,
        and the first requests go out paced at the rate (the first after (reserve + 2)/rate:
        0.3 s at 10/s with ``ERP_BURST_RESERVE=1``).

        The limiter counts a request when it goes on the wire (``sent``, right before the
        session sends it), not when its slot was granted: a granted request that waits (for
        the batcher to fill it, for an OAuth2 token, for its body) holds its place in the
        bucket meanwhile, so requests granted apart never arrive bunched (``app.erp.ratelimit``).

        ``role``: which part of syncgov this client works for (``sink``, ``source``,
        ``reconcile``); every metric of the client carries it as its ``role`` label."""
        self.base_url = base_url.rstrip("/")
        self._before_send = before_send
        self.limiter = AdaptiveLimiter(policy, clock(), cold=cold_start)
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._throttle = frozenset(throttle_statuses)
        self._auth = dict([auth_header]) if auth_header else {}
        self._secret = secret
        self._more_secrets: set[str] = set()
        self._session = session
        self._own_session = session is None
        self._released = asyncio.Event()
        #: The slot the current task holds from ``acquire`` (see ``_Grant``).
        self._grant: ContextVar[_Grant | None] = ContextVar(f"erp-grant-{id(self)}", default=None)
        self.role = role
        self._rate = metrics.ERP_RATE.labels(role)
        self._throttled = metrics.ERP_THROTTLED.labels(role)
        self._retry_after = metrics.ERP_RETRY_AFTER.labels(role)
        self._rate.set(policy.rate_per_s)
        metrics.ERP_QUOTA_SHARE.labels(role).set(policy.rate_per_s)

    def set_share(self, rate_per_s: float, burst: int) -> None:
        """This client's share of the ERP quota changed (``app.erp.quota``): the limiter
        follows it from now on."""
        self.limiter.set_quota(rate_per_s, burst, self._clock())
        metrics.ERP_QUOTA_SHARE.labels(self.role).set(rate_per_s)
        self._rate.set(self.limiter.rate)

    def _answered(self, answer: str) -> None:
        metrics.ERP_REQUESTS.labels(self.role, answer).inc()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def throttle_statuses(self) -> frozenset[int]:
        return self._throttle

    @property
    def before_send(self) -> Callable[[], None] | None:
        return self._before_send

    def add_secret(self, secret: str) -> None:
        """Another value never to show in a detail (a password, a session token)."""
        if secret:
            self._more_secrets.add(secret)

    def scrub(self, text: str) -> str:
        """``text`` without the key, cut to a loggable length."""
        for secret in (self._secret, *self._more_secrets):
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text if len(text) <= DETAIL_LIMIT else text[:DETAIL_LIMIT] + "…"

    async def acquire(self) -> None:
        """Wait for a place in the rate bucket and an in-flight slot; the caller must then
        ``request(..., acquired=True)`` exactly once, or ``release_unsent()``. The coalescing
        batcher takes its slot first and only then decides what goes into the request, so the
        calls made while it waited join it. The slot holds its place in the bucket until the
        request goes on the wire, however long that takes. The slot belongs to the current
        task (and the tasks it starts afterwards)."""
        await self._acquire()
        self._grant.set(_Grant())

    def release_unsent(self) -> None:
        """Give back the current task's slot from ``acquire`` if it has not been sent (nothing
        left to send, or the request failed before it went on the wire); else nothing. Safe to
        call more than once: a ``finally`` that releases a slot never used keeps a failure
        between grant and send from holding a place in the bucket for good."""
        grant = self._grant.get()
        if grant is None or not grant.open:
            return
        grant.open = False
        self.limiter.cancel(self._clock())
        self._notify()

    async def _acquire(self) -> None:
        while True:
            wait = self.limiter.acquire(self._clock())
            if wait == 0.0:
                return
            if math.isinf(wait):
                released = self._released
                await released.wait()
            else:
                await asyncio.sleep(wait)

    def _notify(self) -> None:
        released, self._released = self._released, asyncio.Event()
        released.set()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        acquired: bool = False,
        auth: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Send one request; return the 2xx answer or raise a classified ERP error.

        ``acquired``: the caller already holds a slot from ``acquire()`` and has run its own
        fences (the batcher, per item); ``before_send`` is not run again. ``auth``: headers
        that replace the configured auth header (Tryton's JSON-RPC session)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        all_headers = {"Accept": "application/json", **(headers or {}), **(self._auth if auth is None else auth)}
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        where = f"{method} {path}"
        if not acquired:
            await self._acquire()
        else:
            grant = self._grant.get()
            if grant is not None:
                grant.open = False  # from here on this request owns the slot
        if self._before_send is not None and not acquired:
            try:
                self._before_send()
            except BaseException:
                self.limiter.cancel(self._clock())  # granted, never sent
                self._notify()
                raise
        self.limiter.sent(self._clock())  # the bucket counts it from now, when it goes on the wire
        self._notify()  # a place held by a granted request is now the level's: waiters re-check
        try:
            try:
                async with self._session.request(
                    method, self.base_url + path, params=params, data=body,
                    headers=all_headers, timeout=self._timeout,
                ) as response:
                    payload = await response.read()
                    status, answer_headers = response.status, dict(response.headers)
            except TimeoutError:
                self.limiter.on_error(self._clock())
                self._answered("timeout")
                raise TransientErpError(
                    None, None, f"{where}: no answer within {self._timeout_s:g} s", unknown=True) from None
            except aiohttp.ClientError as exc:
                self.limiter.on_error(self._clock())
                self._answered("error")
                # Refused before connecting: never sent. Anything later: it may have reached the ERP.
                sent = not isinstance(exc, aiohttp.ClientConnectorError)
                raise TransientErpError(
                    None, None, self.scrub(f"{where}: {type(exc).__name__}: {exc}"), unknown=sent) from None
            except BaseException:
                self.limiter.on_error(self._clock())
                raise
            text = self.scrub(payload.decode("utf-8", "replace").strip())
            if status in self._throttle:
                retry_after = parse_retry_after(answer_headers.get("Retry-After"), time.time())
                self.limiter.on_throttle(self._clock(), retry_after)
                self._answered("throttled")
                self._throttled.inc()
                self._retry_after.inc(retry_after or 0.0)
                self._rate.set(self.limiter.rate)
                log.info("ERP throttled %s with %d (Retry-After %s); rate now %.2f/s",
                         where, status, retry_after, self.limiter.rate)
                raise TransientErpError(status, retry_after, f"{where}: {status} {text}")
            if status >= 500 or status == 408:
                self.limiter.on_error(self._clock())
                self._answered(f"{status // 100}xx")
                # A gateway's 502/504: the ERP behind it may have the request (and commit it).
                raise TransientErpError(status, None, f"{where}: {status} {text}", unknown=status in (502, 504))
            self.limiter.on_success(self._clock())
            self._answered(f"{status // 100}xx")
            self._rate.set(self.limiter.rate)
            if status >= 300:
                raise PermanentErpError(status, f"{where}: {status} {text}")
            return HttpAnswer(status, payload, answer_headers)
        finally:
            self._notify()

