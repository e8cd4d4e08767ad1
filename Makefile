# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv themselves; nothing needs to be installed by hand but Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DURATION ?= 60

.PHONY: demo test lint typecheck unit integration bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/driftline demo --duration $(DEMO_DURATION)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit monitor

integration: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/integration

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/checkpoint.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
