# Two entry points: `make run` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
ARGS ?=
# Tests run in a fresh network namespace with only loopback when the machine allows it.
NETNS := $(shell unshare -n true 2>/dev/null && command -v ip >/dev/null && echo yes)

.PHONY: run test lint setup setup-dev browser clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(RUN_STAMP)

setup: $(RUN_STAMP)
setup-dev: $(DEV_STAMP)

# Debian's Chromium drives the browser tests (Playwright uses it; it downloads nothing).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: setup
	$(BIN)/sfu serve $(ARGS)

lint: setup-dev
	$(BIN)/ruff check sfu signaling tests
	$(BIN)/ruff format --check sfu signaling tests
	$(BIN)/mypy

test: setup-dev browser lint
ifeq ($(NETNS),yes)
	unshare -n sh -c 'ip link set lo up && exec $(BIN)/pytest -q $(ARGS)'
else
	$(BIN)/pytest -q $(ARGS)
endif

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
