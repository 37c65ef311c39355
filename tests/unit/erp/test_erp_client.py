"""Error classification of one ERP exchange, against a tiny local aiohttp server."""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from app.erp.client import ErpHttpClient, parse_retry_after
from app.erp.port import PermanentErpError, PostResult, TransientErpError, post_with_retry
from app.erp.ratelimit import RatePolicy
from tests.fixtures.http_server import Handler, serving

KEY = "s3cr3t-key-never-shown"



@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start fake ERPs (one per handler) for the test; all stopped after it."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(handler: Handler) -> str:
            return await stack.enter_async_context(serving(handler))

        yield start


def client(base_url: str, **kw: object) -> ErpHttpClient:
    defaults: dict[str, object] = {
        "policy": RatePolicy(rate_per_s=100, burst=10, max_in_flight=4), "timeout_s": 2.0,
        "auth_header": ("Authorization", f"Bearer {KEY}"), "secret": KEY,
    }
    return ErpHttpClient(base_url, **{**defaults, **kw})  # type: ignore[arg-type]


async def test_2xx_is_returned_with_the_key_in_the_auth_header(serve) -> None:
    seen = {}

    async def ok(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        return web.json_response({"ok": True})

    c = client(await serve(ok))
    answer = await c.request("GET", "/x")
    await c.close()
    assert answer.status == 200 and answer.body == b'{"ok": true}'
    assert seen["auth"] == f"Bearer {KEY}"


@pytest.mark.parametrize("headers,expected", [({"Retry-After": "2"}, 2.0), ({}, None)])
async def test_429_is_transient_with_retry_after_and_cuts_the_rate(serve, headers, expected) -> None:
    async def throttled(request: web.Request) -> web.Response:
        return web.Response(status=429, text="slow down", headers=headers)

    c = client(await serve(throttled))
    with pytest.raises(TransientErpError) as caught:
        await c.request("GET", "/x")
    await c.close()
    assert (caught.value.status, caught.value.retry_after_s) == (429, expected)
    assert "slow down" in caught.value.detail
    assert c.limiter.rate == 50.0


async def test_a_configured_netsuite_style_status_is_a_throttle(serve) -> None:
    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=403, text='{"error": "SSS_REQUEST_LIMIT_EXCEEDED"}', headers={"Retry-After": "5"})

    c = client(await serve(busy), throttle_statuses=(429, 403))
    with pytest.raises(TransientErpError) as caught:
        await c.request("GET", "/x")
    await c.close()
    assert caught.value.retry_after_s == 5.0 and "SSS_REQUEST_LIMIT_EXCEEDED" in caught.value.detail


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_5xx_is_transient(serve, status: int) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=status, text="upstream trouble")

    c = client(await serve(broken))
    with pytest.raises(TransientErpError) as caught:
        await c.request("POST", "/x", body=b"{}")
    await c.close()
    assert caught.value.status == status and c.limiter.rate == 100  # not a throttle


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_other_4xx_is_permanent_with_the_erps_words(serve, status: int) -> None:
    async def invalid(request: web.Request) -> web.Response:
        return web.json_response({"message": "Quantity must be positive"}, status=status)

    c = client(await serve(invalid))
    with pytest.raises(PermanentErpError) as caught:
        await c.request("PUT", "/doc/1", body=b"{}")
    await c.close()
    assert caught.value.status == status
    assert "Quantity must be positive" in caught.value.detail and "PUT /doc/1" in caught.value.detail


async def test_a_timeout_is_transient(serve) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="late")

    c = client(await serve(slow), timeout_s=0.2)
    with pytest.raises(TransientErpError) as caught:
        await c.request("GET", "/x")
    await c.close()
    assert caught.value.status is None and "no answer within 0.2 s" in caught.value.detail
    assert c.limiter.in_flight == 0


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = client(f"http://127.0.0.1:{port}")
    with pytest.raises(TransientErpError) as caught:
        await c.request("GET", "/x")
    await c.close()
    assert caught.value.status is None and "GET /x" in caught.value.detail


async def test_the_key_never_appears_in_an_error_even_if_the_erp_echoes_it(serve, caplog) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=400, text=f"bad header {request.headers['Authorization']}")

    caplog.set_level("DEBUG")
    c = client(await serve(echo))
    with pytest.raises(PermanentErpError) as caught:
        await c.request("GET", "/x")
    await c.close()
    assert KEY not in str(caught.value) and KEY not in repr(caught.value) and "***" in caught.value.detail
    assert KEY not in caplog.text


async def test_the_in_flight_cap_holds_under_concurrency(serve) -> None:
    state = {"now": 0, "max": 0}

    async def tracked(request: web.Request) -> web.Response:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return web.Response(text="{}")

    c = client(await serve(tracked), policy=RatePolicy(rate_per_s=1000, burst=50, max_in_flight=3))
    await asyncio.gather(*(c.request("GET", "/x") for _ in range(20)))
    await c.close()
    assert state["max"] == 3


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(email.utils.formatdate(now + 7, usegmt=True), now) == 7.0
    assert parse_retry_after(email.utils.formatdate(now - 7, usegmt=True), now) == 0.0
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) == 0.0


class FlakyPort:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    async def post(self, milestone: dict) -> PostResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return PostResult("posted", "doc,1")

    async def read_state(self, milestone: dict) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_post_with_retry_backs_off_but_never_less_than_retry_after() -> None:
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    port = FlakyPort([TransientErpError(429, 3.0, "throttled"), TransientErpError(503, None, "down")])
    result = await post_with_retry(port, {}, max_retries=5, backoff_base_s=0.5, backoff_cap_s=30,
                                   rand=lambda: 0.5, sleep=sleep)
    assert result.outcome == "posted" and port.calls == 3
    assert sleeps == [3.0, 0.5]  # max(0.25, Retry-After 3), then 0.5 * 2 * 0.5


async def test_post_with_retry_gives_up_and_never_retries_permanent_errors() -> None:
    async def sleep(s: float) -> None:
        return None

    port = FlakyPort([TransientErpError(None, None, "refused")] * 3)
    with pytest.raises(TransientErpError):
        await post_with_retry(port, {}, max_retries=2, backoff_base_s=0.1, backoff_cap_s=1, rand=lambda: 0.1,
                              sleep=sleep)
    assert port.calls == 3
    port = FlakyPort([PermanentErpError(400, "bad")])
    with pytest.raises(PermanentErpError):
        await post_with_retry(port, {}, max_retries=5, backoff_base_s=0.1, backoff_cap_s=1, rand=lambda: 0.1,
                              sleep=sleep)
    assert port.calls == 1
