# Two commands on a fresh machine with only Python 3 and make:
#   make demo   - create .venv, install, run the end-to-end demo
#   make test   - create .venv, install the test and bench extras and the dev tools, lint,
#                 type-check and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck format bench reliability screenshot clean

# pip >= 25.1 reads pyproject's [dependency-groups] (--group); a new venv may hold an older one.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade 'pip>=25.1'

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# A .venv made before the dev group existed may hold an older pip: upgrade it here too.
# The bench extra too: tests/test_benchmarks.py runs every benchmark at tiny sizes. The
# Makefile is a prerequisite so that a .venv made before a change to these lines gets it.
$(VENV)/.installed-test: pyproject.toml Makefile | $(BIN)/python
	$(PIP) install --upgrade 'pip>=25.1'
	$(PIP) install -e '.[test,bench]' --group dev
	touch $@ $(VENV)/.installed-bench $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[bench]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/spooler demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run_all.py

reliability: $(VENV)/.installed-test
	$(BIN)/python tests/reliability/report.py

# The README's picture of spooler web, from a real run of about 5 minutes: `spooler demo
# --outage 2m` (a local receiver down for 2 minutes) and spooler web on a temporary spool,
# then headless chromium saves docs/dashboard-outage.png (needs chromium and
# chromedriver, as the browser tests do). Not part of `make test`.
screenshot: $(VENV)/.installed-test
	$(BIN)/python docs/screenshot.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
