"""OAuth2 client credentials (RFC 6749 section 4.4) for the generic adapter.

:class:`ClientCredentials` fetches an access token from the token endpoint, keeps it and
fetches the next one before it expires (at three quarters of its lifetime, at most 60 s
before ``expires_in``; a token without ``expires_in`` is kept until the ERP refuses it).
Concurrent callers share one fetch. :class:`OAuthHttpClient` is the ERP client with such a
token in the auth header: a 401 answer drops the token and the request is sent once more
with a fresh one (a token revoked or expired early); a second 401 is the ERP's answer.

The client secret and every token are secrets: never logged, scrubbed from every error
detail. A token endpoint that fails (refused credentials included) is a transient ERP
error: the milestone waits and is retried, it is never dead-lettered for the credentials.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from app.erp.client import ErpHttpClient, HttpAnswer
from app.erp.port import PermanentErpError, TransientErpError

log = logging.getLogger(__name__)

#: How many recent tokens the client keeps scrubbing from details (one may still be in flight).
_KEEP_SCRUBBING = 4


class ClientCredentials:
    """Access tokens from one token endpoint for one client."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, *, scope: str = "",
                 client_auth: str = "basic", timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.client_auth = client_auth  # "basic" (client_secret_basic) or "post" (client_secret_post)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self._token: str | None = None
        self._refresh_at = math.inf
        self._lock = asyncio.Lock()
        self.fetched = 0  # tokens fetched so far

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def token(self) -> str:
        """A token that is not due for refresh (fetched if needed; one fetch for all waiters)."""
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """The ERP refused ``token``: the next :meth:`token` fetches a new one (unless another
        caller already did)."""
        if self._token == token:
            self._token = None

    def scrub(self, text: str) -> str:
        for secret in (self.client_secret, self._token):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        headers = {"Accept": "application/json"}
        if self.client_auth == "post":
            form.update(client_id=self.client_id, client_secret=self.client_secret)
        else:  # RFC 6749 2.3.1: form-encoded, then HTTP Basic
            pair = f"{urllib.parse.quote_plus(self.client_id)}:{urllib.parse.quote_plus(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = self._clock()
        where = f"token endpoint {self.token_url}"
        try:
            async with self._session.post(self.token_url, data=form, headers=headers,
                                          timeout=self._timeout) as response:
                status, raw = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientErpError(None, None, self.scrub(f"{where}: {type(exc).__name__}: {exc}")) from None
        text = self.scrub(raw.decode("utf-8", "replace").strip())[:500]
        if status != 200:
            raise TransientErpError(status, None, f"{where}: {status} {text} (check ERP_OAUTH_CLIENT_ID and "
                                                  "ERP_OAUTH_CLIENT_SECRET)" if status in (400, 401) else
                                    f"{where}: {status} {text}")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TransientErpError(status, None, f"{where}: the answer has no access_token")
        kind = str(body.get("token_type") or "bearer")
        if kind.lower() != "bearer":
            raise TransientErpError(status, None, f"{where}: token_type {kind!r}, only bearer tokens are supported")
        expires = body.get("expires_in")
        self._token = token
        self.fetched += 1
        if isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires > 0:
            self._refresh_at = started + expires - min(60.0, expires / 4)
        else:
            self._refresh_at = math.inf
        log.info("ERP OAuth2: new access token (expires in %s s)", expires if expires is not None else "?")


class OAuthHttpClient(ErpHttpClient):
    """The ERP client with an OAuth2 bearer token: taken once the rate limit lets the request
    go (a request that waited for its slot never carries a token that expired meanwhile),
    renewed and sent once more on a 401."""

    def __init__(self, base_url: str, *, credentials: ClientCredentials, header: str = "Authorization",
                 scheme: str = "Bearer", **kwargs: Any) -> None:
        super().__init__(base_url, secret=credentials.client_secret, **kwargs)
        self.credentials = credentials
        self._header = header
        self._scheme = scheme
        self._recent: list[str] = []

    async def close(self) -> None:
        await self.credentials.close()
        await super().close()

    async def _slot(self) -> None:
        """A rate slot, and the sender's fence run (as ``request`` would)."""
        await self.acquire()
        fence = self.before_send
        if fence is not None:
            try:
                fence()
            except BaseException:
                self.release_unsent()
                raise

    async def _bearer(self) -> tuple[str, dict[str, str]]:
        try:
            token = await self.credentials.token()
        except BaseException:
            self.release_unsent()
            raise
        if token not in self._recent:
            self.add_secret(token)
            self._recent.append(token)
            while len(self._recent) > _KEEP_SCRUBBING:
                self._more_secrets.discard(self._recent.pop(0))
        return token, {self._header: f"{self._scheme} {token}".strip()}

    async def request(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
                      body: bytes | None = None, headers: Mapping[str, str] | None = None, acquired: bool = False,
                      auth: Mapping[str, str] | None = None) -> HttpAnswer:
        if auth is not None:  # the caller brings its own credentials
            return await super().request(method, path, params=params, body=body, headers=headers,
                                         acquired=acquired, auth=auth)
        if not acquired:
            await self._slot()
        token, header = await self._bearer()
        try:
            return await super().request(method, path, params=params, body=body, headers=headers, acquired=True,
                                         auth=header)
        except PermanentErpError as exc:
            if exc.status != 401:
                raise
            log.info("ERP answered 401 to %s %s: renewing the OAuth2 token and sending it once more", method, path)
        self.credentials.invalidate(token)
        await self._slot()
        _, header = await self._bearer()
        return await super().request(method, path, params=params, body=body, headers=headers, acquired=True,
                                     auth=header)
