# Two commands on a fresh machine (Python 3.11 + make):
#   make demo   set up .venv and dry-run issue-2 to subscribers.example.csv
#   make test   set up .venv (+ test tools, Debian's chromium) and run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean browser

demo: $(VENV)/.installed
	$(BIN)/mailer send --dry-run issue-2

test: $(VENV)/.installed-test browser
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check mailer tests bench

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

# The browser tests drive Debian's chromium (Playwright's own download cannot work offline).
browser:
	@command -v chromium >/dev/null && fc-list | grep -q "Noto Sans CJK" || sh tests/install-browser.sh

clean:
	rm -rf build .mailer $(VENV) *.egg-info
