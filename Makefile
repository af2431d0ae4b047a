# candleflow — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/candleflow
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
PYTEST_ARGS ?=

.PHONY: help install lint fmt typecheck test test-unit test-integration demo bench up down status clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed ## create .venv from uv.lock and fetch the Flink Kafka connector jars
	$(CLI) install-jars

lint: install ## ruff lint + format check, mypy on the packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install ## format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test-unit: install ## fast unit tests
	$(VENV)/bin/pytest tests/unit -q $(PYTEST_ARGS)

test-integration: install ## integration tests on real local services (broker, Flink, websockets)
	$(VENV)/bin/pytest tests/integration -q $(PYTEST_ARGS)

test: lint ## everything CI runs: lint, unit and integration tests
	$(VENV)/bin/pytest tests -q $(PYTEST_ARGS)

demo: install ## end to end on local defaults and the real data in ../shared/data
	$(CLI) demo

bench: install ## benchmarks -> bench/results/*.json
	$(PY) -m bench.candles --out bench/results/candles.json
	$(PY) -m bench.features --out bench/results/features.json
	$(PY) -m bench.store --out bench/results/store.json
	$(PY) -m bench.serving --out bench/results/serving.json
	$(PY) -m bench.backtest --out bench/results/backtest.json
	$(PY) -m bench.freshness --out bench/results/freshness.json

up: install ## start the local broker + Redis
	$(CLI) up

down: ## stop the local broker + Redis and the Flink cluster
	-$(CLI) flink stop
	-$(CLI) down

status: ## local services and Flink cluster
	$(CLI) status

clean: down ## remove local state (keeps .venv and jars)
	rm -rf .state
