"""Kafka client settings beyond bootstrap/TLS/SASL-PLAIN: SASL OAUTHBEARER (OIDC client
credentials) and the ``KAFKA_CLIENT_CONFIG`` pass-through.

- confluent-kafka (librdkafka) clients: :func:`librdkafka` completes the config built by
  ``app.kafka.clients.client_config`` (librdkafka fetches and refreshes the token itself:
  ``sasl.oauthbearer.method=oidc``), then adds the pass-through properties.
- Faust (aiokafka) clients: :class:`OidcTokenProvider` fetches the token from the token
  endpoint (``grant_type=client_credentials``) and refreshes it before it expires;
  :func:`faust_credentials` wraps it for Faust. The pass-through does not apply to them.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from app.settings import KafkaSettings

#: librdkafka keys that only make sense for user/password mechanisms.
_PASSWORD_KEYS = ("sasl.username", "sasl.password")


def librdkafka(conf: dict[str, object], kafka: KafkaSettings | None) -> dict[str, object]:
    """``conf`` with OAUTHBEARER (when configured) and ``KAFKA_CLIENT_CONFIG`` applied."""
    if kafka is None:
        return conf
    conf = dict(conf)
    if kafka.security_protocol.startswith("SASL") and kafka.sasl_mechanism == "OAUTHBEARER":
        for key in _PASSWORD_KEYS:
            conf.pop(key, None)
        conf.update({
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.token.endpoint.url": kafka.oauth_token_endpoint_url,
            "sasl.oauthbearer.client.id": kafka.oauth_client_id,
            "sasl.oauthbearer.client.secret": kafka.oauth_client_secret.value,
        })
        if kafka.oauth_scope:
            conf["sasl.oauthbearer.scope"] = kafka.oauth_scope
    conf.update(dict(kafka.client_config))
    # librdkafka's own log lines through Python logging (LOG_FORMAT), not raw on stderr
    conf.setdefault("logger", logging.getLogger("librdkafka"))
    return conf


class TokenError(RuntimeError):
    """The token endpoint did not give a token."""


class OidcTokenProvider:
    """aiokafka's ``AbstractTokenProvider`` for the OAuth 2.0 client-credentials grant.

    One token is shared by every connection and refreshed when less than a tenth of its
    lifetime (at least 30 s) is left; concurrent callers wait for one request.
    """

    def __init__(self, kafka: KafkaSettings, *, clock: Callable[[], float] = time.monotonic,
                 timeout_s: float = 10.0) -> None:
        self.url = kafka.oauth_token_endpoint_url
        self.client_id = kafka.oauth_client_id
        self._secret = kafka.oauth_client_secret
        self.scope = kafka.oauth_scope
        self._clock = clock
        self._timeout_s = timeout_s
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock: asyncio.Lock | None = None

    async def token(self) -> str:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, lifetime = await self._fetch()
                self._refresh_at = self._clock() + max(lifetime - max(30.0, lifetime / 10), lifetime / 2)
            return self._token

    def extensions(self) -> dict[str, str]:
        return {}

    async def _fetch(self) -> tuple[str, float]:
        import aiohttp

        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        # RFC 6749 2.3.1: HTTP Basic with the form-urlencoded client id and secret
        basic = f"{urllib.parse.quote(self.client_id, safe='')}:{urllib.parse.quote(self._secret.value, safe='')}"
        headers = {"Accept": "application/json", "Authorization": "Basic " + base64.b64encode(basic.encode()).decode()}
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                self.url, data=form, headers=headers
            ) as resp:
                body: Any = await resp.json(content_type=None) if resp.status == 200 else None
                if resp.status != 200:
                    raise TokenError(f"token endpoint {self.url} answered {resp.status}")
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise TokenError(f"token endpoint {self.url}: {exc.__class__.__name__}: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise TokenError(f"token endpoint {self.url} gave no access_token")
        try:
            lifetime = float(body.get("expires_in") or 300)
        except (TypeError, ValueError):
            lifetime = 300.0
        return body["access_token"], lifetime


def faust_credentials(kafka: KafkaSettings, ssl_context: Any = None) -> Any:
    """Faust's OAuth credentials with :class:`OidcTokenProvider` (TLS when SASL_SSL)."""
    import faust
    from aiokafka.abc import AbstractTokenProvider
    from faust.types.auth import AuthProtocol

    class _Provider(OidcTokenProvider, AbstractTokenProvider):  # type: ignore[misc]
        pass

    credentials = faust.OAuthCredentials(oauth_cb=_Provider(kafka), ssl_context=ssl_context)
    # Faust's class always says SASL_PLAINTEXT; with a TLS context it must be SASL_SSL.
    credentials.protocol = AuthProtocol.SASL_SSL if ssl_context is not None else AuthProtocol.SASL_PLAINTEXT
    return credentials
