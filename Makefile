# The two commands a new user needs: `make demo` and `make test`. Both build .venv from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kwx-installed

.PHONY: demo test lint bench clean-demo help

help:
	@echo "make demo   - set up $(VENV) and run the end-to-end demo on the embedded SQLite default"
	@echo "make test   - set up $(VENV) and run the whole test suite (SQLite + PostgreSQL)"
	@echo "make lint   - ruff"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kwx needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/kwx demo

# One pytest worker per core; TEST_WORKERS=0 runs the suite in a single process. Each test file stays on one
# worker (--dist loadfile): some files build state test by test on a module fixture, in file order.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

clean-demo:
	rm -rf kwx.db kwx.db-shm kwx.db-wal mlflow.db mlartifacts acceptance_reports optuna.db simulations kwx-schedule-state.json
