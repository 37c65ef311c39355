"""Benchmarks: `python -m benchmarks.run --quick|--full` (see docs/benchmarks.md).

- ``bench_core``: the pure core and `syncgov replay` (figures 1-2),
- ``worker_bench``: the Faust worker on the embedded broker vs a raw consumer, and
  latency at a fixed rate (figures 3, 4, 7), plus the helpers the others share,
- ``erp_bench``: ERP calls per warehouse event, quota violations, backlog drain (figure 5),
- ``recovery_bench``: restart to ready with a large state (figures 6, 7),
- ``run``: runs them all, writes ``benchmarks/results/latest.{json,md}``.
"""
