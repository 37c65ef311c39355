"""The ERP's own users, for the demo and the tests: enter sales in Tryton and look at
the stock documents the way a person in the ERP would.

Not part of the sync path (the worker never imports this); callers pass a ``TrytonRest``
that talks to Tryton directly, outside the gateway's quota.
"""
from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from app.erp.tryton import INTERNAL, SHIPMENT, TrytonRest

_SHIPMENT_VIEW = (
    "number", "state", "shipping_reference", "customer.name", "effective_date",
    "outgoing_moves.product.code", "outgoing_moves.quantity", "outgoing_moves.state",
)
_INTERNAL_VIEW = (
    "number", "reference", "state", "effective_date",
    "moves.product.code", "moves.quantity", "moves.state", "moves.from_location.rec_name",
    "moves.to_location.rec_name",
)


async def new_order(rest: TrytonRest, lines: Sequence[tuple[str, int]],
                    customer: str = "Acme Retail") -> dict[str, Any]:
    """Enter, quote, confirm and process a sale of ``lines`` ((sku, qty), ...); return its
    customer shipment as :func:`shipment` reads it (state ``waiting``: released to the warehouse)."""
    ctx = await rest.context()
    party, = await rest.search("party.party", [("name", "=", customer)], ["addresses"])
    products = {p["code"]: p for p in await rest.search(
        "product.product", [("code", "in", [sku for sku, _ in lines])], ["code", "default_uom"])}
    sale = await rest.create("sale.sale", {
        "party": party["id"], "company": ctx["company"],
        "invoice_address": party["addresses"][0], "shipment_address": party["addresses"][0],
        "lines": [["create", [
            {"product": products[sku]["id"], "quantity": float(qty), "unit": products[sku]["default_uom"],
             "unit_price": Decimal("10")} for sku, qty in lines]]],
    })
    for button in ("quote", "confirm", "process"):
        await rest.button("sale.sale", sale["id"], button)
    found, = await rest.search("sale.sale", [("id", "=", sale["id"])], ["shipments"])
    return await shipment(rest, found["shipments"][0])


async def shipment(rest: TrytonRest, shipment_id: int) -> dict[str, Any]:
    """One customer shipment: number, state, tracking reference and outgoing moves."""
    found, = await rest.search(SHIPMENT, [("id", "=", shipment_id)], [
        "number", "state", "shipping_reference", "outgoing_moves.product.code", "outgoing_moves.quantity",
        "outgoing_moves.state"])
    return found


async def shipments_view(rest: TrytonRest, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Customer shipments ``ids`` as the ERP shows them (customer, state, tracking reference,
    effective date, outgoing moves), in number order."""
    return await rest.search(SHIPMENT, [("id", "in", list(ids))], _SHIPMENT_VIEW, order=[("number", "ASC")])


async def stock_moves_view(rest: TrytonRest, references: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Internal shipments (the stock moves ``InventoryAdjusted`` posts; ``reference`` = milestone id)
    with their moves, in number order: those with one of ``references``, or every referenced one."""
    domain = [("reference", "in", list(references))] if references is not None else [("reference", "!=", None)]
    return await rest.search(INTERNAL, domain, _INTERNAL_VIEW, order=[("number", "ASC")])
