"""OAuth2 client credentials for the generic adapter: tokens fetched, refreshed before they
expire and once on a 401, the secret and the tokens never in an error or a log line."""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from app.erp import HttpAdapter, make_port
from app.erp.oauth import OAuthHttpClient
from app.erp.port import PermanentErpError, TransientErpError
from app.settings import SettingsError, load
from tests.fixtures.http_server import serving
from tests.fixtures.oauth import OAuthFront

CLIENT_ID, CLIENT_SECRET, ERP_KEY = "syncgov-client", "cl1ent-s3cret-Zq9", "erp-own-key-77"
ROUTES = json.dumps({"OrderPicked": "POST /orders/{order_id}/picked", "read:OrderPicked": "GET /orders/{order_id}/picked"})
PICKED = {"milestone_id": "m-1", "type": "OrderPicked", "warehouse_id": "WH1", "order_id": "SO-1",
          "occurred_at": "2026-11-27T10:00:00.000Z", "event_ids": ["e"], "lines": [], "short": False}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The ERP behind the gateway: records what reaches it; an order is picked once posted."""
    seen: list[dict[str, Any]] = []
    picked: set[str] = set()

    async def handle(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.path, "auth": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {ERP_KEY}":
            return web.json_response({"error": "not authenticated"}, status=401)
        order = request.path.split("/")[2]
        if request.method == "GET":
            return web.json_response({"ok": True}) if order in picked else web.json_response({}, status=404)
        picked.add(order)
        return web.json_response({"id": f"DOC-{order}"}, status=201)

    async with serving(handle) as url:
        yield url, seen


@pytest.fixture
def front(upstream: tuple[str, list[dict[str, Any]]]) -> Iterator[OAuthFront]:
    gateway = OAuthFront(upstream[0], {"Authorization": f"Bearer {ERP_KEY}"}, client_id=CLIENT_ID,
                         client_secret=CLIENT_SECRET, lifetime_s=100).start()
    yield gateway
    gateway.stop()


def settings(front: OAuthFront, **extra: str) -> Any:
    return load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "ERP_ADAPTER": "http", "ERP_BASE_URL": front.url,
                 "ERP_HTTP_ROUTES": ROUTES, "ERP_OAUTH_TOKEN_URL": f"{front.url}/token",
                 "ERP_OAUTH_CLIENT_ID": CLIENT_ID, "ERP_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
                 "ERP_RATE_PER_S": "100", "ERP_BURST": "10", **extra}).erp


async def test_posts_carry_a_token_renewed_before_it_expires(front: OAuthFront, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    now = [0.0]
    adapter = make_port(settings(front))
    assert isinstance(adapter, HttpAdapter) and isinstance(adapter.client, OAuthHttpClient)
    adapter.client.credentials._clock = lambda: now[0]  # the token's age, under the test's control
    front.lifetime_s = 40
    try:
        assert (await adapter.post(PICKED)).outcome == "posted"
        assert (await adapter.post({**PICKED, "milestone_id": "m-2", "order_id": "SO-2"})).outcome == "posted"
        assert len(front.record.issued) == 1  # one token for both
        now[0] = 29.9  # a quarter of its lifetime before expiry: still used
        await adapter.post({**PICKED, "milestone_id": "m-3", "order_id": "SO-3"})
        assert len(front.record.issued) == 1
        now[0] = 30.0  # three quarters of its 40 s: renewed before it expires
        await adapter.post({**PICKED, "milestone_id": "m-4", "order_id": "SO-4"})
        assert len(front.record.issued) == 2
        tokens = [token for _, token, _ in front.record.forwarded]
        assert tokens[-1] == front.record.issued[1][1] and tokens[0] == front.record.issued[0][1]
        assert front.record.refused == []
    finally:
        await adapter.close()
    for _, token in front.record.issued:
        assert token not in caplog.text
    assert CLIENT_SECRET not in caplog.text


@pytest.mark.parametrize("client_auth", ["basic", "post"])
async def test_a_401_renews_the_token_once(front: OAuthFront, client_auth: str) -> None:
    adapter = make_port(settings(front, ERP_OAUTH_CLIENT_AUTH=client_auth))
    try:
        assert (await adapter.post(PICKED)).outcome == "posted"
        front.revoke_all()  # the ERP side drops the token early
        assert (await adapter.post({**PICKED, "milestone_id": "m-2", "order_id": "SO-2"})).outcome == "posted"
        assert [why for _, why in front.record.refused] == ["revoked"]
        assert len(front.record.issued) == 2
        front.revoke_all()
        front.client_secret = "rotated"  # and the client's credentials no longer work: 401, then no token
        with pytest.raises(TransientErpError, match=r"token endpoint .*401.*ERP_OAUTH_CLIENT_SECRET") as caught:
            await adapter.post({**PICKED, "milestone_id": "m-3", "order_id": "SO-3"})
        assert CLIENT_SECRET not in str(caught.value)
    finally:
        await adapter.close()


async def test_a_second_401_with_a_fresh_token_is_the_erps_answer(upstream) -> None:
    """The ERP refuses even a fresh token (this gateway does not pass the ERP's key on): one
    renewal, then the ERP's 401 is the answer, no endless renewals."""
    url, seen = upstream
    gateway = OAuthFront(url, {}, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, lifetime_s=100).start()
    adapter = make_port(settings(gateway))
    try:
        with pytest.raises(PermanentErpError) as caught:
            await adapter.post(PICKED)
        assert caught.value.status == 401
        assert len(gateway.record.issued) == 2 and gateway.record.refused == []
        assert [r["auth"] for r in seen] == [None, None]  # the read, sent twice; never the post
    finally:
        await adapter.close()
        gateway.stop()


@pytest.mark.parametrize(("extra", "named"), [
    ({"ERP_OAUTH_CLIENT_ID": ""}, "ERP_OAUTH_CLIENT_ID=''"),
    ({"ERP_OAUTH_CLIENT_SECRET": ""}, "ERP_OAUTH_CLIENT_SECRET=''"),
    ({"ERP_OAUTH_TOKEN_URL": "token.example"}, "ERP_OAUTH_TOKEN_URL='token.example'"),
    ({"ERP_ADAPTER": "tryton"}, "only the generic adapter uses OAuth2"),
    ({"ERP_API_KEY": "k"}, "set either ERP_API_KEY or ERP_OAUTH_TOKEN_URL"),
    ({"ERP_OAUTH_CLIENT_AUTH": "jwt"}, "ERP_OAUTH_CLIENT_AUTH='jwt'"),
])
def test_oauth_settings_errors_name_the_setting_and_hide_the_secret(extra: dict[str, str], named: str) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "ERP_ADAPTER": "http", "ERP_HTTP_ROUTES": ROUTES,
           "ERP_OAUTH_TOKEN_URL": "https://idp.example/token", "ERP_OAUTH_CLIENT_ID": CLIENT_ID,
           "ERP_OAUTH_CLIENT_SECRET": CLIENT_SECRET, **extra}
    with pytest.raises(SettingsError) as err:
        load(env)
    assert named in str(err.value), str(err.value)
    assert CLIENT_SECRET not in str(err.value)
