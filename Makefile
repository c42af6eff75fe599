# Everyday commands. `make help` lists them.
PYTHON ?= .venv/bin/python

.PHONY: help setup train sweep test test-fast lint bench ui

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## create .venv with the pinned dependencies
	python3.11 -m venv .venv && .venv/bin/pip install -r requirements.lock -e .

train:  ## one run of the default config
	$(PYTHON) src/train.py

sweep:  ## the default sweep: rf over its wide space (50 trials)
	$(PYTHON) src/train.py -m model=rf sweep=wide

test:  ## every test, the end-to-end sweeps included (as CI)
	$(PYTHON) -m pytest

test-fast:  ## the tests without the slow end-to-end ones
	$(PYTHON) -m pytest -m "not slow"

lint:  ## ruff and mypy
	$(PYTHON) -m ruff check src tests bench && $(PYTHON) -m mypy

bench:  ## framework overhead vs a raw Optuna loop, and the 1M-row data path (bench/results/)
	$(PYTHON) bench/overhead.py && $(PYTHON) bench/data_pipeline.py

ui:  ## the MLflow UI on 127.0.0.1:5000
	$(PYTHON) -m tabflow ui
