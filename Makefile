# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow test-all lint

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

# The default run leaves out the tests marked slow (pyproject's addopts), on 2 worker
# processes, each test file whole on one worker (its module fixtures, and PostgreSQL's
# tests, stay on one process). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST_PAR = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: setup
	$(BIN)/ruff check bayesmix tests studies
	$(BIN)/lint-imports  # the layers: pyproject's [tool.importlinter]
	$(BIN)/mypy  # the typed core: files and settings in pyproject's [tool.mypy]
	$(BIN)/pytest -q $(PYTEST_PAR)

# Nightly-style: only the slow tests (long NUTS fits, the full fault test, the demo...).
test-slow: setup
	$(BIN)/pytest -q $(PYTEST_PAR) -m slow

# Everything: the default run and the slow tests.
test-all: setup
	$(BIN)/ruff check bayesmix tests studies
	$(BIN)/pytest -q $(PYTEST_PAR) -m "slow or not slow"

lint: setup
	$(BIN)/ruff check bayesmix tests studies
	$(BIN)/lint-imports
	$(BIN)/mypy
