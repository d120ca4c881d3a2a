# Set-up and entry points. Every target creates .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev
STAMP_ALL := $(VENV)/.installed-all

.PHONY: demo test test-all bench bench-quick device-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $(STAMP)

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP) $(STAMP_DEV)

demo: $(STAMP)
	$(BIN)/plasticity-dynamics reproduce cloning --scale small --out runs/demo --force

test: $(STAMP_DEV)
	$(BIN)/python -m pytest -n 2 -q

$(STAMP_ALL): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev,ray,parquet]"
	touch $(STAMP) $(STAMP_DEV) $(STAMP_ALL)

test-all: $(STAMP_ALL)
	$(BIN)/python -m pytest -n 2 -q -m ""

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --quick

device-check: $(STAMP)
	$(BIN)/python -m benchmarks.device_check

clean:
	rm -rf $(VENV) runs .pytest_cache
