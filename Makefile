# syncgov: `make demo` runs the main job on embedded defaults; `make test` installs and passes the tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps test test-unit lint demo bench bench-quick bench-erp chaos mutate core-native clean

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
test: install system-deps lint
	$(BIN)/python -m pytest -q
	KAFKA_IMPL=apache $(BIN)/python -m pytest -q -m apache_kafka

# Lint and types (part of `make test`): ruff over the tree, mypy over the code (strict on the
# core, the stages and the runtime; see pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy app agents tables benchmarks

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

demo: install system-deps
	$(BIN)/python -m app.harness.demo

# The governance core compiled by mypyc into build/core-native (outside the source tree; rebuilt
# only when app/core changed). Use it: GOVERNANCE_CORE_BUILD=build/core-native. `make bench`
# builds and uses it itself; the image builds its own.
core-native: install
	$(BIN)/python ops/build_core.py --out build/core-native --if-stale

# The benchmarks' own venv (.venv-quix: the Quix Streams peer and py-spy for --profile) is made
# by benchmarks/quix_bench.py on first use.
bench: install system-deps
	$(BIN)/python -m benchmarks.run --full

bench-quick: install
	$(BIN)/python -m benchmarks.run --quick

# ERP capacity against real Tryton behind nginx at 10 r/s burst 5: orders and
# warehouse events per ERP request, 429s, backlog drain vs the quota's floor ->
# benchmarks/results/erp.json. The sizes (120 orders twice, a 10,000 backlog once) are
# erp_bench.BENCH_ERP, also those of `make bench`'s ERP section.
# Options: make bench-erp ERP_BENCH_ARGS="--orders 200 --drain 10000"
ERP_BENCH_ARGS ?=
bench-erp: install system-deps
	$(BIN)/python -m benchmarks.erp_bench --out benchmarks/results/erp.json $(ERP_BENCH_ARGS)

# The whole pipeline under faults (kill -9, ERP outage, 429 storm, 500s/timeouts, poison
# records, scaling, an old Avro writer schema); prints the verifier's table and fails on any
# lost or twice-posted milestone or any poison record missing from the dead-letter topic.
# Options: make chaos CHAOS_ARGS="--orders 500 --seed 11"; on Apache Kafka: CHAOS_ARGS="--broker apache"
# (see python -m app.harness.chaos.run --help)
# The workers run the compiled core, as the image does.
chaos: install system-deps core-native
	GOVERNANCE_CORE_BUILD=build/core-native $(BIN)/python -m app.harness.chaos.run $(CHAOS_ARGS)

# Mutation testing of app/core against tests/unit/core (not part of `make test`: 20 to 45 min
# on 2 cores). mutmut lives in its own venv over the project's (see pyproject.toml, [mutate]);
# each run starts afresh in mutants/ and ends with the score. Survivors:
# $(MUTATE_VENV)/bin/mutmut results, one of them: $(MUTATE_VENV)/bin/mutmut show NAME.
MUTATE_VENV := .venv-mutate
MUTATE_JOBS ?= 2
mutate:
	test -x $(BIN)/python || $(MAKE) install
	test -x $(MUTATE_VENV)/bin/python || $(BIN)/python -m venv $(MUTATE_VENV)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		> "$$($(MUTATE_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_syncgov_project.pth"
	$(MUTATE_VENV)/bin/python -m pip install -q $$($(MUTATE_VENV)/bin/python -c \
		'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["mutate"])')
	rm -rf mutants
	$(MUTATE_VENV)/bin/mutmut run --max-children $(MUTATE_JOBS)
	$(MUTATE_VENV)/bin/mutmut export-cicd-stats > /dev/null
	$(MUTATE_VENV)/bin/python -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); \
		k = s["killed"] + s["timeout"]; print("mutants %d, killed %d, survived %d, no tests %d: score %.1f%%" \
		% (s["total"], k, s["survived"], s["no_tests"], 100 * k / s["total"]))'

clean:
	rm -rf var .pytest_cache build *.egg-info mutants  # .kafka/ (the broker's jars) is kept: a cache
