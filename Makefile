# Two commands on a fresh machine (Python 3.11 + make):
#   make demo   set up .venv and dry-run issues/sampling.md to subscribers.example.csv
#   make test   set up .venv (+ test tools, Debian's chromium and postfix), lint, check formatting
#               and types (mypy --strict), and run every test
#   make test-fast  ruff and the tests marked neither slow nor needing a server (Postfix,
#               PostgreSQL, Dovecot, chromium, moto), on every core: under a minute
# Also: make demo-repair (dry-run issues/issue-2.md, a damaged Medium/Jekyll export that the
# build repairs and warns about), make lint (ruff check), make fmt (ruff format + ruff check
# --fix), make bench, make clean.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo demo-repair test test-fast lint fmt bench clean system caniemail

# The markers (pyproject.toml) of tests that need a real server or take seconds each.
SLOW_MARKERS := postfix or postgres or dovecot or chromium or moto or slow

demo: $(VENV)/.installed
	$(BIN)/mailer send --dry-run sampling
	@echo "See it in a browser: $(BIN)/mailer preview sampling"

demo-repair: $(VENV)/.installed
	$(BIN)/mailer send --dry-run issue-2

test: $(VENV)/.installed-test system
	$(BIN)/ruff check mailer tests bench
	$(BIN)/ruff format --check mailer tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

# One pytest worker per core (pytest-xdist), each taking whole files so that module fixtures
# and the render memo are not built twice; `make test` stays in one process, in order.
test-fast: $(VENV)/.installed-test
	$(BIN)/ruff check mailer tests bench
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not ($(SLOW_MARKERS))"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check mailer tests bench

# Rewrite the code into the house format, then apply ruff's safe fixes.
fmt: $(VENV)/.installed-test
	$(BIN)/ruff format mailer tests bench
	$(BIN)/ruff check --fix mailer tests bench

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py

# Refresh mailer/data/caniemail.json (what `mailer lint` checks) from npm's `caniemail`.
caniemail:
	sh tools/refresh-caniemail.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[test,dev,postgres,ses]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

# Debian packages the tests use for real: chromium (browser tests), postfix (a real MTA).
system:
	@sh tests/install-system.sh

# Generated output and the virtualenv only. State (.mailer/: the ledger, suppressions, DKIM
# keys), .env and subscriber lists are the user's: no target here ever deletes them.
clean:
	rm -rf build $(VENV) *.egg-info
