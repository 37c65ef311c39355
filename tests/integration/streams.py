"""Simulated streams for integration tests, and the replay they must equal."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable

import orjson

from app.commands.replay import replay_partitions
from app.core.model import CoreSettings, Milestone
from app.core.timeutil import format_ts, parse_ts
from app.simulator.generate import Simulation
from app.simulator.model import DEFAULT_FAULTS, DEFAULT_INCIDENTS, SimConfig
from app.simulator.work import watermark_flush
from tests.integration.conftest import normalize

Records = list[tuple[bytes, bytes]]
PARTITIONS = 4  # TOPIC_PARTITIONS of the test workers (the default)


def simulate(orders: int, warehouses: int = 1, seed: int = 7, partitions: int = PARTITIONS) -> Records:
    """A default-mix stream that ends about 3 h ago (so no event is `future` for a worker),
    followed per input partition by a telemetry record 1 h after its end that moves every
    watermark past all windows and holds (a worker has no end of input)."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=4)
    config = SimConfig(
        seed=seed,
        orders=orders,
        warehouses=warehouses,
        start=format_ts(int(start.timestamp() * 1000)),
        faults=DEFAULT_FAULTS,
        incidents=DEFAULT_INCIDENTS,
    )
    records: Records = [pair for batch in Simulation(config, on_truth=lambda m: None).batches() for pair in batch]
    last = 0
    for _, raw in records:
        try:
            last = max(last, parse_ts(orjson.loads(raw)["occurred_at"]))
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            pass
    records += [(key, orjson.dumps(ev)) for key, ev in watermark_flush("WH1", last + 3_600_000, partitions, "test")]
    return records


def replay(partitions: list[list[bytes]]) -> list[dict]:  # type: ignore[type-arg]
    """What `syncgov replay` gives for a topic's recorded partitions (every partition,
    in partition order, empty ones included; no end-of-input flush: the worker never
    sees one), as contract dicts."""
    return [normalize(o.to_dict()) for o in replay_partitions(partitions, CoreSettings()) if isinstance(o, Milestone)]


def by_id(milestones: Iterable[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    """Milestones deduplicated by id (the ERP sink's view); a differing copy is an error."""
    seen: dict[str, dict] = {}  # type: ignore[type-arg]
    for m in milestones:
        prior = seen.setdefault(m["milestone_id"], m)
        assert prior == m, f"two different milestones share id {m['milestone_id']}: {prior} / {m}"
    return seen


def counts(milestones: Iterable[dict]) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(m.get("code", m["type"]) for m in milestones)
