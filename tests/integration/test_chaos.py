"""The CI-sized chaos run (a few minutes): the whole pipeline — Tryton sales, `syncgov source`,
two workers with the ERP sink, Tryton behind the fault proxy behind nginx — with a kill -9
and restart of a worker, an ERP outage (Tryton stopped, started again on the same port and
database), ERP 500s and answers lost after the ERP committed, poison records and picks
from an older Avro writer schema. Then Tryton's own documents are compared with the
expected result: nothing lost, nothing posted twice, every poison record dead-lettered
with a reason. ``make chaos`` (``python -m app.chaos.run``) is the full-size run.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from app.chaos.faults import POISON_KINDS
from app.chaos.run import Chaos, ChaosConfig, Say

pytestmark = [pytest.mark.chaos, pytest.mark.erp, pytest.mark.kafka, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def chaos_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    cfg = ChaosConfig(
        orders=16, seed=3, workdir=tmp_path_factory.mktemp("chaos"), bootstrap=kafka_bootstrap,
        prefix=f"chaos{int(time.time())}", kills=2, outage_s=20, storm_s=0, errors_s=6, scale=False,
        poison_rate=0.02, old_schema_share=0.3, drain_timeout_s=300)
    chaos = Chaos(cfg, Say())
    started = time.monotonic()
    try:
        chaos.verdict = asyncio.run(chaos.run())
        print(f"chaos CI run: {time.monotonic() - started:.0f} s")
        yield chaos
    finally:
        chaos.stop()


def test_faults_were_injected(chaos_run: Chaos) -> None:
    counts = chaos_run.faults.counts
    assert counts["(a) kill -9 + restart"] == 2
    assert counts["(b) ERP outage"] == 1
    assert counts["(d) the ERP answers 500/502/503"] == 1
    assert counts["(d) the ERP commits, then its answer is lost"] == 1
    assert chaos_run.pool is not None and chaos_run.pool.kills == 2
    assert chaos_run.sent["old-schema picks (v1 writer)"] > 0


def test_every_released_order_is_done_once_with_its_tracking_number(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None
    assert v.not_released == []
    assert v.orders_released >= chaos_run.cfg.orders
    assert v.orders_done == v.orders_released, v.orders_wrong


def test_nothing_lost(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None and v.expected > 4 * chaos_run.cfg.orders
    assert v.lost == []
    assert v.posted == v.expected
    assert v.missing_in_kafka == []


def test_nothing_posted_twice(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None
    assert v.twice == []
    assert v.unexplained_documents == []
    assert v.erp_dead_letters == []


def test_every_poison_record_is_dead_lettered_with_a_reason(chaos_run: Chaos) -> None:
    v = chaos_run.verdict
    assert v is not None
    assert set(v.poison_sent) == set(POISON_KINDS)
    assert v.poison_missing == []
    assert v.poison_found == v.poison_sent
    assert v.unexpected_dead_letters == []


def test_workers_only_stop_when_killed(chaos_run: Chaos) -> None:
    """A worker that exits by itself (e.g. a batch that raised) is a crash."""
    assert chaos_run.pool is not None
    assert [(e.name, e.code) for e in chaos_run.pool.exits] == []


def test_source_survives_erp_errors(chaos_run: Chaos) -> None:
    """`syncgov source` keeps polling through ERP outages and 5xx answers (a crash loop delays
    every order release by the restart back-off)."""
    assert chaos_run.source is not None
    exits = [(e.code, time.strftime("%H:%M:%S", time.localtime(e.at))) for e in chaos_run.source.exits]
    assert exits == [], f"syncgov source exited {len(exits)} times; see {chaos_run.source.log}"
