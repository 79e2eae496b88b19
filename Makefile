# Playpulse: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test up down status bench lint deps clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)
	deploy/install.sh

## The whole stack plus simulated players in the foreground; Ctrl-C stops everything.
demo: deps
	deploy/demo.sh

## Lint, then the whole test suite against real Kafka and Redis started for the run.
test: deps lint
	deploy/test.sh

up: deps
	deploy/stack.sh up

down:
	deploy/stack.sh down

status:
	deploy/stack.sh status

bench: deps
	deploy/bench.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy ingest aggregator api

clean: down
	rm -rf .state
