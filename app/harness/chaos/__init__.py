"""Chaos harness: the whole pipeline (broker, workers, source, Tryton behind nginx) under
injected faults, and a verifier that compares Tryton's own documents with what the
warehouse did. ``python -m app.harness.chaos.run`` (``make chaos``); see docs/chaos.md.

- :mod:`app.harness.chaos.faults`: the stack and every fault (kill -9, ERP outage, 429 storm,
  500s/timeouts, poison records, scaling, old writer schema).
- :mod:`app.harness.chaos.verify`: expected vs. posted, lost, posted twice, poison vs. dead letters.
- :mod:`app.harness.chaos.run`: the scenario and ``main()``.
"""
