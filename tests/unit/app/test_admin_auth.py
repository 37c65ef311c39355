"""Admin (mutating) endpoints: off without a token; with one, 401 without it and 403 when wrong."""
from __future__ import annotations

import dataclasses
import importlib

import pytest

from app.settings import Secret


class FakeWeb:
    def json(self, value: dict, status: int = 200) -> tuple[int, dict]:
        return status, value


class FakeRequest:
    def __init__(self, authorization: str | None) -> None:
        self.headers = {"Authorization": authorization} if authorization else {}


@pytest.mark.parametrize(
    ("token", "authorization", "expected"),
    [
        pytest.param("", "Bearer anything", 403, id="off-without-a-configured-token"),
        pytest.param("s3cret", None, 401, id="no-header"),
        pytest.param("s3cret", "Basic s3cret", 401, id="not-bearer"),
        pytest.param("s3cret", "Bearer wrong", 403, id="wrong-token"),
        pytest.param("s3cret", "Bearer s3cret", None, id="right-token"),
    ],
)
def test_admin_denied(monkeypatch, token: str, authorization: str | None, expected: int | None) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # imported, never connected
    web = importlib.import_module("app.web")
    worker = dataclasses.replace(web.SETTINGS.worker, admin_token=Secret(token))
    monkeypatch.setattr(web, "SETTINGS", dataclasses.replace(web.SETTINGS, worker=worker))
    denied = web._admin_denied(FakeWeb(), FakeRequest(authorization))  # type: ignore[arg-type]
    assert (denied[0] if denied else None) == expected
    if denied:
        assert "s3cret" not in str(denied[1])
