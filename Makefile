# Two commands for a fresh machine: `make run` (the product) and `make test` (every check).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STASK := $(BIN)/stask
# The bundled example workers, unless you point STASK_WORKERS at your own modules.
export STASK_WORKERS ?= stask.examples

.PHONY: run test lint typecheck pytest install dev clean-venv screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

## run: migrate ./storage/stask.db, register the examples, queue a few tasks, process them live
run: $(VENV)/.installed
	$(STASK) migrate
	$(STASK) workers discover
	$(STASK) create product_import import -o rows=300 --priority high
	$(STASK) create product_export export -o rows=400
	$(STASK) create sales_report generate -o rows=250
	$(STASK) create cleanup clean --priority low
	$(STASK) run

## test: ruff, mypy --strict and the whole suite on SQLite, PostgreSQL and MariaDB
test: lint typecheck pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy src

pytest: $(VENV)/.dev-installed
	$(BIN)/pytest -n 2 --durations=10

## screenshots: the browser tests, saving every page at desktop and phone width to docs/screenshots/
screenshots: $(VENV)/.dev-installed
	STASK_SCREENSHOTS=$(CURDIR)/docs/screenshots STASK_TEST_DATABASES=sqlite \
		$(BIN)/pytest -q tests/test_ui_browser.py

clean-venv:
	rm -rf $(VENV)

## bench: stask beside a raw SQL loop, pgqueuer and procrastinate (SQLite + PostgreSQL, ~10 min)
# pgqueuer and procrastinate live in their own virtualenv: never dependencies of stask.
PEERS_VENV := bench/.venv-peers

$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet 'pgqueuer[asyncpg]' procrastinate 'psycopg[binary]'
	touch $@

.PHONY: bench bench-quick bench-soak bench-web
bench: $(VENV)/.dev-installed $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.run

## bench-quick: the same figures with small counts (about 4 min)
bench-quick: $(VENV)/.dev-installed $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.run --quick

## bench-soak: PostgreSQL runner for 10 min at a steady rate over 1,000,000 finished tasks
bench-soak: $(VENV)/.dev-installed
	$(BIN)/python -m bench.soak

## bench-web: p50/p95 of the web API's list, count, search and summary routes over 1,000,000 tasks
bench-web: $(VENV)/.dev-installed
	$(BIN)/python -m bench.web_routes
