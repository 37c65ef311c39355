"""Admin (mutating) endpoints: off without a token; with one, 401 without it and 403 when wrong."""
from __future__ import annotations

import pytest

from app import settings as settings_module
from app.web import admin_denied


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
def test_admin_denied(token: str, authorization: str | None, expected: int | None) -> None:
    settings = settings_module.load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "WORKER_ADMIN_TOKEN": token})
    denied = admin_denied(settings.worker.admin_token.value, FakeWeb(), FakeRequest(authorization))  # type: ignore[arg-type]
    assert (denied[0] if denied else None) == expected
    if denied:
        assert "s3cret" not in str(denied[1])
