# syncgov: `make demo` runs the main job on embedded defaults; `make test` installs and passes the tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps test test-unit demo bench bench-quick replay-example clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages and the separate ERP/tool venvs the integration tests use (idempotent).
system-deps: install
	bash ops/install-system.sh

test: install system-deps
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

demo: install system-deps
	$(BIN)/python -m app.demo

bench: install
	$(BIN)/python -m benchmarks.run --full

bench-quick: install
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf var .pytest_cache build *.egg-info
