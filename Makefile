# The two commands a new user needs: `make demo` and `make test`. Both build .venv from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kwx-installed

.PHONY: demo test lint docs bench clean-demo help

help:
	@echo "make demo   - set up $(VENV) and run the end-to-end demo on the embedded SQLite default"
	@echo "make test   - set up $(VENV) and run the whole test suite (SQLite + PostgreSQL)"
	@echo "make lint   - ruff"
	@echo "make docs   - generate the reference pages and build the documentation site into site/ (offline, strict)"
	@echo "make bench  - run the benchmark suite at quick sizes into bench/results/quick.json (FULL=1: full sizes,"
	@echo "              bench/results/full.json, the figures docs/reference/benchmarks.md is generated from)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kwx needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/kwx demo

# One pytest worker per core; TEST_WORKERS=0 runs the suite in a single process. Each test file stays on one
# worker (--dist loadfile): some files build state test by test on a module fixture, in file order. Files are
# handed out in the collection's order, which starts the minutes-long ones first (tests/conftest.py);
# xdist's default reorder, by tests per file, started them last and left one worker running alone for minutes.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check .

# The reference pages (docs/reference/*.md) are generated from the code on every build (and committed: a test
# fails when they are stale), then the strict build fails
# on any broken link or anchor. NO_MKDOCS_2_WARNING: Material's end-of-life banner on every build.
docs: $(STAMP)
	@start=$$($(BIN)/python -c 'import time; print(time.time())'); \
	$(BIN)/python -m kwx.docs docs/reference && \
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet && \
	$(BIN)/python -c "import time; print(f'docs built into site/ in {time.time() - $$start:.1f} s')"

# Quick sizes by default (a few minutes); FULL=1 runs the documented sizes (about 15 minutes on 2 cores).
FULL ?=
bench: $(STAMP)
	$(BIN)/python bench/suite.py $(if $(FULL),--full)

clean-demo:
	rm -rf kwx.db kwx.db-shm kwx.db-wal mlflow.db mlflow.db-shm mlflow.db-wal mlartifacts acceptance_reports optuna.db simulations kwx-schedule-state.json
