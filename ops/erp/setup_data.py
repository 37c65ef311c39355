"""Load the demo/test master data into a freshly initialised Tryton database.

Runs inside the Tryton venv (``.venv-erp``) through proteus:
company (EUR), warehouse (code ``--warehouse``) with its storage and
lost-and-found (inventory) locations, products ``SKU-0001``..``SKU-NNNN``
(goods, cost and list price, 1000 units on hand), customers, carriers, sale
configuration (manual invoicing), shipment number prefixes and a REST key for ``admin`` written to
``--key-file`` with mode 0600.
"""
from __future__ import annotations

import argparse
import datetime
import os
from decimal import Decimal
from pathlib import Path

from proteus import Model, Wizard, config

CUSTOMERS = ("Acme Retail", "Globex Stores", "Initech Supplies", "Umbrella Shop")
CARRIERS = ("DHL", "UPS", "DPD")
ON_HAND = 1000
BATCH = 20
#: Shipment numbers: OUT-000001 is an order_id, RET-/INT- are returns/adjustments.
SEQUENCE_PREFIXES = {
    "shipment_out_sequence": "OUT-",
    "shipment_out_return_sequence": "RET-",
    "shipment_internal_sequence": "INT-",
}


def _company(currency_code: str):
    Currency = Model.get("currency.currency")
    Party = Model.get("party.party")
    User = Model.get("res.user")
    Rate = Model.get("currency.currency.rate")
    currency = Currency(name=currency_code, symbol=currency_code, code=currency_code, rounding=Decimal("0.01"))
    currency.save()
    Rate(date=datetime.date(2000, 1, 1), rate=Decimal("1"), currency=currency).save()
    wizard = Wizard("company.company.config")
    wizard.execute("company")
    party = Party(name="Syncgov Warehouse Co")
    party.save()
    wizard.form.party = party
    wizard.form.currency = currency
    wizard.execute("add")
    config.get_config()._context = User.get_preferences(True, {})
    Company = Model.get("company.company")
    company, = Company.find()
    return company


def _products(count: int):
    Uom = Model.get("product.uom")
    Template = Model.get("product.template")
    unit, = Uom.find([("name", "=", "Unit")])
    templates = []
    for n in range(1, count + 1):
        template = Template(
            name=f"Demo item {n:04d}",
            code=f"SKU-{n:04d}",
            type="goods",
            default_uom=unit,
            salable=True,
            list_price=Decimal("10") + n,
        )
        template.cost_price = Decimal("5") + Decimal(n) / 2
        templates.append(template)
    for start in range(0, len(templates), BATCH):  # SQLite's parser limits one statement's size
        Template.save(templates[start:start + BATCH])
    Product = Model.get("product.product")
    return Product.find([("type", "=", "goods")], order=[("code", "ASC")])


def _stock(warehouse, products) -> None:
    Inventory = Model.get("stock.inventory")
    inventory = Inventory(location=warehouse.storage_location)
    for product in products:
        line = inventory.lines.new()
        line.product = product
        line.quantity = ON_HAND
    inventory.click("confirm")


def _parties() -> None:
    Party = Model.get("party.party")
    customers = []
    for i, name in enumerate(CUSTOMERS, 1):
        party = Party(name=name)
        address, = party.addresses
        address.street = f"{i} Market Street"
        address.postal_code = f"1000{i}"
        address.city = "Springfield"
        customers.append(party)
    Party.save(customers)


def _carriers() -> None:
    Party = Model.get("party.party")
    Template = Model.get("product.template")
    Uom = Model.get("product.uom")
    Carrier = Model.get("carrier")
    unit, = Uom.find([("name", "=", "Unit")])
    for name in CARRIERS:
        party = Party(name=name)
        party.save()
        template = Template(
            name=f"{name} delivery", type="service", default_uom=unit,
            salable=True, list_price=Decimal("7"))
        template.save()
        product, = template.products
        Carrier(party=party, carrier_product=product).save()


def _sequences() -> None:
    StockConfig = Model.get("stock.configuration")
    stock_config = StockConfig(1)
    for name, prefix in SEQUENCE_PREFIXES.items():
        sequence = getattr(stock_config, name)
        sequence.prefix = prefix
        sequence.padding = 6
        sequence.save()


def _rest_key(key_file: Path) -> None:
    User = Model.get("res.user")
    Application = Model.get("res.user.application")
    admin, = User.find([("login", "=", "admin")])
    application = Application(user=admin, application="rest")
    application.save()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(application.key)
    os.chmod(key_file, 0o600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="trytond.conf")
    parser.add_argument("--database", default="erp")
    parser.add_argument("--key-file", required=True, type=Path)
    parser.add_argument("--warehouse", default="WH1", help="warehouse code (= warehouse_id)")
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--currency", default="EUR")
    args = parser.parse_args()

    config.set_trytond(database=args.database, config_file=args.config)
    company = _company(args.currency)

    Location = Model.get("stock.location")
    warehouse, = Location.find([("type", "=", "warehouse")])
    warehouse.code = args.warehouse
    warehouse.name = f"Warehouse {args.warehouse}"
    warehouse.save()

    SaleConfig = Model.get("sale.configuration")
    sale_config = SaleConfig(1)
    sale_config.sale_invoice_method = "manual"
    sale_config.save()

    _sequences()
    products = _products(args.products)
    _stock(warehouse, products)
    _parties()
    _carriers()
    _rest_key(args.key_file)
    print(f"company {company.rec_name}: {len(products)} products, warehouse {args.warehouse}")


if __name__ == "__main__":
    main()
