# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/bayesmix: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch; an unpinned torch would download a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/bayesmix

setup: $(BIN)/bayesmix

demo: setup
	$(BIN)/bayesmix demo

test: setup
	$(BIN)/ruff check bayesmix tests studies
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check bayesmix tests studies
