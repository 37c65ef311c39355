"""A read that races an ERP user's change: Tryton answers 400 "You are trying to read
records ... that don't exist" when a concurrent transaction replaced the document's moves.
Seen in a chaos run as ERP dead letters (an OrderAccepted refused for good); a read changes
nothing, so it is retried as a transient error. A write refused the same way stays final."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.erp.port import PermanentErpError, TransientErpError
from app.erp.tryton import TrytonRest

RACE = ('GET /erp/rest/model/stock.shipment.out: 400 {"status": 400, "message": "You are trying to read records '
        '\\"1209, 1210\\" of \\"Stock Move\\" that don\'t exist."}')


class _Client:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def request(self, method: str, path: str, **_: Any) -> Any:
        raise self.exc

    def scrub(self, text: str) -> str:
        return text


def test_a_read_of_records_a_concurrent_change_deleted_is_retried() -> None:
    rest = TrytonRest(_Client(PermanentErpError(400, RACE)), "erp")  # type: ignore[arg-type]
    with pytest.raises(TransientErpError) as caught:
        asyncio.run(rest._call("GET", "/erp/rest/model/stock.shipment.out"))
    assert caught.value.status == 400 and "don't exist" in str(caught.value)


@pytest.mark.parametrize(("method", "detail"), [("POST", RACE), ("GET", "GET x: 400 {\"message\": \"bad domain\"}")])
def test_other_refusals_stay_final(method: str, detail: str) -> None:
    rest = TrytonRest(_Client(PermanentErpError(400, detail)), "erp")  # type: ignore[arg-type]
    with pytest.raises(PermanentErpError):
        asyncio.run(rest._call(method, "/erp/rest/model/stock.shipment.out"))
