"""``Engine.process_batch`` (the worker's per-batch call) against ``Engine.process`` per record
(``replay``'s): the same outputs for every record, the same dicts for the decoded ones, the
same end state, however a stream is cut into batches."""

from __future__ import annotations

import random

import orjson
import pytest
from core_tracegen import generate

from app.core import Engine
from app.core.model import CoreSettings
from app.core.parse import decode
from app.core.telemetry import read


def _state(engine: Engine) -> tuple[object, ...]:
    return (engine.watermark, engine.counts, dict(engine.seen.store), set(engine.rejected), dict(engine.orders),
            dict(engine.windows.store), dict(engine.returns))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stream_in_batches_gives_what_it_gives_record_by_record(seed: int) -> None:
    rng = random.Random(seed)
    raws = generate(seed=seed, orders=60)
    raws += [b"", b"not json", b"[1]", b'{"type":"ItemScanned"}']  # rule 8 in a batch too
    rng.shuffle(raws[-40:])
    single, batched = Engine(CoreSettings()), Engine(CoreSettings())
    expected = [single.process(raw) for raw in raws]
    got: list[list[object]] = [[] for _ in raws]
    start = 0
    while start < len(raws):
        size = rng.choice([1, 2, 7, 50, 400, 5000])
        batch = raws[start:start + size]
        seen: list[int] = []
        for i, d, outs in batched.process_batch(batch, decode):
            seen.append(i)
            got[start + i] = list(outs)
            raw = batch[i]
            if d is None:
                assert outs, "a record is returned for its dict or for its outputs"
                assert read(raw) is not None or isinstance(decode(raw), str)
            else:
                assert d == orjson.loads(raw)
        assert seen == sorted(set(seen)), "in the batch's order, each record once"
        for i, raw in enumerate(batch):
            if i not in seen:  # left out: accepted telemetry with no outputs
                assert read(raw) is not None and expected[start + i] == []
        start += size
    assert got == expected
    assert _state(batched) == _state(single)
    assert batched.finish() == single.finish()


def test_each_record_that_is_not_accepted_telemetry_comes_back_with_its_dict_or_none() -> None:
    engine = Engine(CoreSettings())
    scan = orjson.dumps({"event_id": "e1", "type": "ItemScanned", "occurred_at": "2026-11-27T10:00:00.000Z",
                         "source": "robotics", "warehouse_id": "WH-1", "barcode": "1", "location": "L",
                         "device_id": "D"})
    release = {"event_id": "e2", "type": "OrderReleased", "occurred_at": "2026-11-27T10:00:01.000Z",
               "source": "erp", "warehouse_id": "WH-1", "order_id": "SO-1",
               "lines": [{"line_no": 1, "sku": "S", "qty": 1}]}
    done = engine.process_batch([scan, orjson.dumps(release), b"{", scan], decode)
    assert [(i, d) for i, d, _ in done] == [(1, release), (2, None)]
    assert [type(o).__name__ for o in done[1][2]] == ["Milestone", "DeadLetter"]  # the undecodable one
    assert engine.counts == {("ItemScanned", "robotics"): 2, ("OrderReleased", "erp"): 1}
