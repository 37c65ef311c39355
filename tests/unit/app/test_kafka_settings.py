"""Kafka client settings: SASL OAUTHBEARER for librdkafka (oidc) and for Faust/aiokafka (a
token provider), and the KAFKA_CLIENT_CONFIG pass-through."""
from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from app.kafka import security as kafka_settings
from app.kafka.clients import client_config
from app.settings import load
from tests.fixtures.http_server import serving

OAUTH = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
         "KAFKA_SASL_MECHANISM": "OAUTHBEARER", "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "syncgov",
         "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "s3cret-0auth", "KAFKA_SASL_OAUTHBEARER_SCOPE": "kafka.write",
         "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp.example.com/oauth2/token"}


def test_librdkafka_oauthbearer_uses_oidc_and_no_password() -> None:
    s = load({**OAUTH, "KAFKA_SASL_USERNAME": "ignored"})
    conf = client_config(s.kafka.bootstrap_servers, s.kafka)
    assert conf["sasl.mechanism"] == "OAUTHBEARER" and conf["sasl.oauthbearer.method"] == "oidc"
    assert conf["sasl.oauthbearer.client.id"] == "syncgov" and conf["sasl.oauthbearer.client.secret"] == "s3cret-0auth"
    assert conf["sasl.oauthbearer.scope"] == "kafka.write"
    assert conf["sasl.oauthbearer.token.endpoint.url"] == "https://idp.example.com/oauth2/token"
    assert "sasl.username" not in conf and "sasl.password" not in conf


def test_librdkafka_accepts_the_config() -> None:
    from confluent_kafka import Producer

    s = load({**OAUTH, "KAFKA_CLIENT_CONFIG": '{"socket.keepalive.enable": true, "client.rack": "eu-1a"}'})
    Producer({**client_config(s.kafka.bootstrap_servers, s.kafka), "log_level": 0})  # raises on an unknown property


def test_pass_through_applies_to_every_client_config_and_the_code_keeps_its_own_keys() -> None:
    s = load({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_CLIENT_CONFIG": '{"client.rack": "eu-1a", "linger.ms": 7}'})
    conf = client_config(s.kafka.bootstrap_servers, s.kafka)
    logger = conf.pop("logger")
    assert conf == {"bootstrap.servers": "k:9092", "client.rack": "eu-1a", "linger.ms": "7"}
    assert logger.name == "librdkafka"  # librdkafka's log lines go through LOG_FORMAT
    assert client_config("k:9092") == {"bootstrap.servers": "k:9092"}  # no settings, nothing added
    plain = load({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                  "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})
    assert kafka_settings.librdkafka({"a": 1}, plain.kafka).keys() == {"a", "logger"}  # PLAIN/SCRAM untouched


def test_faust_credentials_are_oauth_with_tls_when_sasl_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # the app module is imported, never connected
    from faust.auth import OAuthCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from app.faust_app import broker_credentials

    s = load({**OAUTH, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    creds = broker_credentials(s)
    assert isinstance(creds, OAuthCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    from aiokafka.abc import AbstractTokenProvider

    assert isinstance(auth["sasl_oauth_token_provider"], AbstractTokenProvider)
    plain = credentials_to_aiokafka_auth(broker_credentials(load(OAUTH)))
    assert plain["security_protocol"] == "SASL_PLAINTEXT" and plain["ssl_context"] is None


@pytest.fixture
async def idp() -> AsyncIterator[dict[str, Any]]:
    state: dict[str, Any] = {"requests": [], "status": 200, "expires_in": 3600}

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        state["requests"].append((request.headers.get("Authorization"), dict(form)))
        if state["status"] != 200:
            return web.json_response({"error": "invalid_client"}, status=state["status"])
        n = len(state["requests"])
        return web.json_response({"access_token": f"token-{n}", "token_type": "bearer",
                                  "expires_in": state["expires_in"]})

    async with serving(token, method="POST", path="/oauth2/token") as url:
        state["url"] = f"{url}/oauth2/token"
        yield state


async def test_token_provider_fetches_caches_and_refreshes(idp: dict[str, Any]) -> None:
    now = [0.0]
    s = load({**OAUTH, "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": idp["url"]})
    provider = kafka_settings.OidcTokenProvider(s.kafka, clock=lambda: now[0])
    assert await provider.token() == "token-1"
    now[0] = 3000.0
    assert await provider.token() == "token-1"  # cached
    now[0] = 3600.0 - 300.0  # within the last tenth of its life
    assert await provider.token() == "token-2"
    auth, form = idp["requests"][0]
    assert form == {"grant_type": "client_credentials", "scope": "kafka.write"}
    assert auth == "Basic " + base64.b64encode(b"syncgov:s3cret-0auth").decode()


async def test_token_provider_error_names_the_endpoint_not_the_secret(idp: dict[str, Any]) -> None:
    idp["status"] = 401
    s = load({**OAUTH, "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": idp["url"]})
    with pytest.raises(kafka_settings.TokenError) as err:
        await kafka_settings.OidcTokenProvider(s.kafka).token()
    assert idp["url"] in str(err.value) and "401" in str(err.value) and "s3cret" not in str(err.value)


def test_send_waits_while_the_local_queue_is_full() -> None:
    """The one "produce until no BufferError" loop: it serves deliveries and retries, it
    never drops or duplicates the record."""
    from app.kafka.clients import send

    class Full:
        def __init__(self) -> None:
            self.refusals, self.polls, self.sent = 2, 0, []

        def produce(self, topic, value, key, partition, on_delivery=None):  # type: ignore[no-untyped-def]
            if self.refusals:
                self.refusals -= 1
                raise BufferError("Local: Queue full")
            self.sent.append((topic, value, key, partition, on_delivery))

        def poll(self, timeout):  # type: ignore[no-untyped-def]
            self.polls += 1
            return 0

    producer = Full()
    send(producer, "t", b"v", b"k", 3, print)  # type: ignore[arg-type]
    assert producer.sent == [("t", b"v", b"k", 3, print)]
    assert producer.polls == 2
