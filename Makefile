# agentdash: `make run` starts the product, `make test` runs every test, `make bench` measures.
# The first target to run creates .venv from requirements.lock with a Python >= 3.12 found on
# PATH or, failing that, among pyenv's installs.

SHELL := /bin/bash
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

PYTHON ?= $(shell for c in python3.14 python3.13 python3.12 python3 python \
		$$(ls -d $$HOME/.pyenv/versions/3.*/bin/python3 2>/dev/null | sort -rV); do \
	p=$$(command -v $$c 2>/dev/null) || continue; \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: run test test-fast bench lint format lock system-deps clean

$(STAMP): requirements.lock pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
		echo "agentdash needs Python >= 3.12 and found none on PATH or under ~/.pyenv/versions."; \
		echo "Install one (e.g. 'pyenv install 3.13' or your distribution's python3.13), or run"; \
		echo "'make PYTHON=/path/to/python3.13 ...'."; exit 1; fi
	@echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

run: $(STAMP)
	$(PY) manage.py serve --port $(PORT)

# The `postgres`-marked tests run in a second pass against this server (Django creates
# and drops the database test_<name> on it), with the Redis below as channel layer and
# cache: the scale-out configuration. Every other test runs on SQLite first.
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/14

# The whole suite on the embedded default (SQLite, in-memory layer), then every suite that
# touches the database or the channel layer again on PostgreSQL + Redis (with the tests
# only those can run: races, locks, NOTIFY). tests/tools, tests/sandbox and tests/security
# use neither, so they run once.
PG_SUITES := tests/runner tests/governance tests/audit tests/api tests/web tests/live \
	tests/metrics tests/notifications tests/providers tests/faults tests/e2e

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "not postgres"
	@if $(PY) -c 'import sys, psycopg; psycopg.connect(sys.argv[1], dbname="postgres", \
			connect_timeout=3).close()' '$(PG_TEST_URL)' 2>/dev/null; then \
		echo "DATABASE_URL=$(PG_TEST_URL) REDIS_URL=$(REDIS_TEST_URL) $(VENV)/bin/pytest $(PG_SUITES)"; \
		DATABASE_URL='$(PG_TEST_URL)' REDIS_URL='$(REDIS_TEST_URL)' $(VENV)/bin/pytest $(PG_SUITES); \
	else \
		echo "SKIPPED the PostgreSQL pass: no PostgreSQL answers at $(PG_TEST_URL)"; \
	fi

bench: $(STAMP) system-deps
	$(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Re-pin every dependency after a change to pyproject.toml.
lock: $(STAMP)
	$(VENV)/bin/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache
