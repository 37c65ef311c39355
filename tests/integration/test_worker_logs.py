"""LOG_FORMAT=json on a real worker: every line of its output (Faust's, aiokafka's,
librdkafka's and ours, stdout and stderr) is one JSON object with ts, level, logger, msg."""
from __future__ import annotations

import orjson
import pytest

from app.kafka.clients import produce
from tests.integration.conftest import read_milestones, wait_for

pytestmark = pytest.mark.kafka


def test_worker_log_is_json_lines(kafka_bootstrap, worker_factory) -> None:
    worker = worker_factory(LOG_FORMAT="json", LOG_LEVEL="info")
    prefix = worker_factory.prefix
    release = {"event_id": "rel-1", "type": "OrderReleased", "occurred_at": "2026-11-27T10:00:00.000Z",
               "source": "erp", "warehouse_id": "WH1", "order_id": "O-1",
               "lines": [{"line_no": 1, "sku": "SKU-0001", "qty": 2}]}
    produce(kafka_bootstrap, f"{prefix}.events", [(b"WH1|O-1", orjson.dumps(release))])
    wait_for(lambda: len(read_milestones(kafka_bootstrap, prefix)) >= 1, 60, "1 milestone")
    worker.stop()
    lines = worker.log_file.read_bytes().splitlines()
    assert len(lines) > 10
    loggers = set()
    for raw in lines:
        line = orjson.loads(raw)  # every line parses
        assert {"ts", "level", "logger", "msg"} <= set(line), line
        loggers.add(str(line["logger"]))
    assert any(name.startswith("faust.") for name in loggers), loggers  # Faust's own logging included
