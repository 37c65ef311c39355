# syncgov: `make demo` runs the main job on embedded defaults; `make test` installs and passes the tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps test test-unit demo bench bench-quick bench-erp chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages and the separate ERP/tool venvs the integration tests use (idempotent).
system-deps: install
	bash ops/install-system.sh

# Two lanes: everything on the embedded broker (Tansu), then the Kafka integration tests
# (marker apache_kafka) again on one Apache Kafka broker (ops/kafka, installed by system-deps).
test: install system-deps
	$(BIN)/python -m pytest -q
	KAFKA_IMPL=apache $(BIN)/python -m pytest -q -m apache_kafka

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

demo: install system-deps
	$(BIN)/python -m app.demo

bench: install system-deps
	$(BIN)/python -m benchmarks.run --full

bench-quick: install
	$(BIN)/python -m benchmarks.run --quick

# ERP capacity (issue #16) against real Tryton behind nginx at 10 r/s burst 5: orders and
# warehouse events per ERP request, 429s, backlog drain vs the quota's floor ->
# benchmarks/results/erp.json. Options: make bench-erp ERP_BENCH_ARGS="--orders 200 --drain 10000"
ERP_BENCH_ARGS ?= --orders 120 --drain 1000 --reps 2
bench-erp: install system-deps
	$(BIN)/python -m benchmarks.erp_bench --capacity --rate 10 --burst 5 --mix-orders 1000 \
		--out benchmarks/results/erp.json $(ERP_BENCH_ARGS)

# The whole pipeline under faults (kill -9, ERP outage, 429 storm, 500s/timeouts, poison
# records, scaling, an old Avro writer schema); prints the verifier's table and fails on any
# lost or twice-posted milestone or any poison record missing from the dead-letter topic.
# Options: make chaos CHAOS_ARGS="--orders 500 --seed 11"; on Apache Kafka: CHAOS_ARGS="--broker apache"
# (see python -m app.chaos.run --help)
chaos: install system-deps
	$(BIN)/python -m app.chaos.run $(CHAOS_ARGS)

clean:
	rm -rf var .pytest_cache build *.egg-info  # .kafka/ (the broker's jars) is kept: a cache
