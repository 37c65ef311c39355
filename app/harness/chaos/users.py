"""The ERP's users in a chaos run: they work in Tryton directly (not through the gateway).

- ``add_warehouses``: the extra sites (``WH2``, ``WH3``, ...) with their input, output,
  storage and lost-and-found locations, as an administrator would set them up;
- ``new_sale``: enter, quote, confirm and process a sale shipped from a given warehouse
  (``app.erp.sales.new_order`` for any site); its customer shipment waits for the warehouse;
- ``change_order``: before picking, reset the shipment to draft, change line quantities and
  wait it again (the source connector publishes ``OrderChanged``);
- ``cancel_order``: before picking, cancel the shipment (``OrderCancelled``).

Tryton refuses a change or a cancellation once the warehouse has picked; callers only do
them while the warehouse work of the order is held back.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from app.erp.sales import shipment
from app.erp.tryton import SHIPMENT, TrytonRest


async def warehouse_ids(rest: TrytonRest) -> dict[str, int]:
    """Warehouse code -> stock.location id."""
    return {w["code"]: w["id"] for w in await rest.search("stock.location", [("type", "=", "warehouse")], ["code"])}


async def add_warehouses(rest: TrytonRest, codes: Sequence[str]) -> dict[str, int]:
    """Create the warehouses of ``codes`` that Tryton does not have yet; return code -> id."""
    known = await warehouse_ids(rest)
    for code in codes:
        if code in known:
            continue
        locations: dict[str, int] = {}
        for role in ("input", "output", "storage", "lost_found"):
            kind = "lost_found" if role == "lost_found" else "storage"
            created = await rest.create("stock.location", {"name": f"{code} {role.replace('_', ' ')}", "type": kind},
                                        fields=("id",))
            locations[role] = created["id"]
        wh = await rest.create("stock.location", {
            "name": f"Warehouse {code}", "code": code, "type": "warehouse",
            "input_location": locations["input"], "output_location": locations["output"],
            "storage_location": locations["storage"], "lost_found_location": locations["lost_found"],
        }, fields=("id",))
        known[code] = wh["id"]
    return known


async def new_sale(rest: TrytonRest, lines: Sequence[tuple[str, int]], *, customer: str,
                   warehouse: int | None = None) -> dict[str, Any]:
    """Enter, quote, confirm and process a sale of ``lines`` ((sku, qty), ...) shipped from
    ``warehouse`` (a stock.location id; None: Tryton's default); return its customer shipment."""
    ctx = await rest.context()
    party, = await rest.search("party.party", [("name", "=", customer)], ["addresses"])
    products = {p["code"]: p for p in await rest.search(
        "product.product", [("code", "in", [sku for sku, _ in lines])], ["code", "default_uom"])}
    values: dict[str, Any] = {
        "party": party["id"], "company": ctx["company"],
        "invoice_address": party["addresses"][0], "shipment_address": party["addresses"][0],
        "lines": [["create", [
            {"product": products[sku]["id"], "quantity": float(qty), "unit": products[sku]["default_uom"],
             "unit_price": Decimal("10")} for sku, qty in lines]]],
    }
    if warehouse is not None:
        values["warehouse"] = warehouse
    sale = await rest.create("sale.sale", values)
    for button in ("quote", "confirm", "process"):
        await rest.button("sale.sale", sale["id"], button)
    found, = await rest.search("sale.sale", [("id", "=", sale["id"])], ["shipments"])
    return await shipment(rest, found["shipments"][0])


async def change_order(rest: TrytonRest, shipment_id: int, quantities: Mapping[int, int]) -> dict[str, Any]:
    """Draft, new quantities for outgoing moves (move id -> qty), wait again; return the shipment."""
    await rest.button(SHIPMENT, shipment_id, "draft")
    await rest.write(SHIPMENT, shipment_id, {
        "outgoing_moves": [["write", [move_id], {"quantity": float(qty)}] for move_id, qty in sorted(quantities.items())],
    })
    await rest.button(SHIPMENT, shipment_id, "wait")
    return await shipment(rest, shipment_id)


async def cancel_order(rest: TrytonRest, shipment_id: int) -> dict[str, Any]:
    await rest.button(SHIPMENT, shipment_id, "cancel")
    return await shipment(rest, shipment_id)
