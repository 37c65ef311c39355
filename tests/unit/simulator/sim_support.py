"""Helpers for the simulator tests: generate a run, decode records, check contract shapes."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.simulator import Simulation, preset
from app.simulator.model import AUTHORITY, COMMON, DISPOSITIONS, OPTIONAL, REQUIRED

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_KINDS = {"str": str, "int": int, "list": list, "float": float}


@dataclass(frozen=True)
class Run:
    sim: Simulation
    records: list[tuple[bytes, bytes]]
    truth: list[dict[str, Any]]


def generate(name: str = "default", **overrides: Any) -> Run:
    sim = Simulation(preset(name, **overrides))
    records = [rec for batch in sim.batches(1000) for rec in batch]
    return Run(sim, records, sim.truth)


def decode(raw: bytes) -> dict[str, Any] | None:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


def shape_problems(d: dict[str, Any]) -> list[str]:
    """What makes ``d`` not a valid, authorized contract event (empty: it is one)."""
    problems = []
    etype = d.get("type")
    if etype not in REQUIRED:
        return [f"unknown type {etype!r}"]
    for name, kind in {**COMMON, **REQUIRED[etype]}.items():
        value = d.get(name)
        if type(value) is not _KINDS[kind]:  # bool is not int here
            problems.append(f"{name}: {type(value).__name__}")
    for name, kind in OPTIONAL.get(etype, {}).items():
        if name in d and type(d[name]) is not _KINDS[kind]:
            problems.append(f"{name}: {type(d[name]).__name__}")
    if problems:
        return problems
    if not TS.match(d["occurred_at"]):
        problems.append("occurred_at format")
    if d["source"] not in AUTHORITY[etype]:
        problems.append(f"source {d['source']} not authorized")
    for line in d.get("lines", []):
        kinds = (type(line.get("line_no")), type(line.get("sku")), type(line.get("qty")))
        if kinds != (int, str, int) or line["qty"] <= 0:
            problems.append(f"bad line {line}")
    for item in d.get("items", []):
        if type(item.get("line_no")) is not int or type(item.get("qty")) is not int or item["qty"] <= 0:
            problems.append(f"bad item {item}")
    if etype in ("PickConfirmed", "ReturnReceived") and d["qty"] <= 0:
        problems.append("qty <= 0")
    if etype == "StockAdjusted" and d["delta"] == 0:
        problems.append("delta 0")
    if etype == "ReturnReceived" and d["disposition"] not in DISPOSITIONS:
        problems.append("disposition")
    if etype == "ShipmentDispatched" and not all(type(p) is str for p in d["package_ids"]):
        problems.append("package_ids")
    return problems
