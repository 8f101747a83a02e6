# Two commands for a fresh machine (each creates .venv and installs what it needs):
#   make run    start the service and two local workers on SQLite, run the quickstart study
#   make test   lint and run the whole test suite
#
# TORCH is installed first so that the package's plain `torch>=2.4` is already satisfied:
# here it is the CPU build. On a GPU host, `make run TORCH=torch` takes the default CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PORT ?= 8000
BIN := $(VENV)/bin

.PHONY: run test lint bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[worker]"
	touch $@

$(VENV)/.dev-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

run: $(VENV)/.run-deps
	$(BIN)/hps up --port $(PORT) --workers 2 --submit examples/quickstart.yaml --exit-when-done

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian's headless Chromium (the report and dashboard browser tests) and PostgreSQL (the
# end-to-end and reliability suites run on it too; the tests start a throw-away cluster on
# loopback). Installed when missing and apt-get is usable; otherwise those tests skip, saying why.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
	   || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq \
	      chromium chromium-driver postgresql >/dev/null; \
	  else \
	    echo "note: chromium, chromedriver or postgresql missing and apt-get unusable:" \
	         "the browser and PostgreSQL tests will skip"; \
	  fi; \
	fi
	@# docker compose 2 (`docker compose config` checks docker-compose.yml) and kubectl (`kubectl
	@# kustomize` builds deploy/kubernetes): from Debian trixie, since bookworm's are too old.
	@missing=""; \
	docker compose version 2>/dev/null | grep -q 'version v\?2' \
	  || docker-compose version 2>/dev/null | grep -q 'version v\?2' || missing="docker-compose"; \
	command -v kubectl >/dev/null || missing="$$missing kubectl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    deploy/install-trixie-debs.sh $$missing; \
	  else \
	    echo "note: $$missing missing and apt-get unusable: the deploy tests will skip"; \
	  fi; \
	fi

# Tests run on every core (pytest-xdist): most of the wall time is real services and workers
# starting and training, which overlap well.
test: lint system-deps
	$(BIN)/python -m pytest -n auto

# Every benchmark in bench/ at its full sizes (about half an hour); figures go in
# BENCHMARKS.md. `make bench BENCH_ARGS=--quick` runs them small, in minutes, to check they work.
bench: $(VENV)/.dev-deps
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) hps.db hps.db-wal hps.db-shm hps.token
