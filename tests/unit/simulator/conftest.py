"""Simulated streams shared by the simulator tests (generated once per session)."""
from __future__ import annotations

import pytest
from sim_support import Run, generate


@pytest.fixture(scope="session")
def default_run() -> Run:
    return generate("default", orders=400, seed=11)


@pytest.fixture(scope="session")
def clean_run() -> Run:
    return generate("clean", orders=400, seed=11)
