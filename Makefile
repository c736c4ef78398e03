# Two entry points: `make run` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
ARGS ?=
# Tests run in a fresh network namespace with only loopback when the machine allows it.
NETNS := $(shell unshare -n true 2>/dev/null && command -v ip >/dev/null && echo yes)

.PHONY: run test lint setup setup-dev system-deps bench bench-quick fuzz clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The native datapath is built by the install: rebuild when its sources change.
NATIVE_SOURCES := setup.py native/fanout.pyx native/datapath.h

$(RUN_STAMP): pyproject.toml $(NATIVE_SOURCES) | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(NATIVE_SOURCES) | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(RUN_STAMP)

setup: $(RUN_STAMP)
setup-dev: $(DEV_STAMP)

# Real components the tests start: Debian's Chromium (driven by Playwright, which
# downloads nothing), Prometheus, and Janus (the comparison the load harness measures).
SYSTEM_PACKAGES := chromium prometheus janus
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

run: setup
	$(BIN)/sfu serve $(ARGS)

lint: setup-dev
	$(BIN)/ruff check sfu signaling tests benchmarks
	$(BIN)/ruff format --check sfu signaling tests benchmarks
	$(BIN)/mypy

test: setup-dev system-deps lint
ifeq ($(NETNS),yes)
	unshare -n sh -c 'ip link set lo up && exec $(BIN)/pytest -q $(ARGS)'
else
	$(BIN)/pytest -q $(ARGS)
endif

# The property-based tests of every parser with FUZZ_SCALE times their usual examples.
FUZZ_SCALE ?= 50
fuzz: setup-dev
	SFU_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest -q -p no:randomly tests/wire tests/proto tests/signaling

# Load harness against a self-started server on loopback (see benchmarks/RESULTS.md).
bench: setup-dev
	$(BIN)/python -m benchmarks.run --full

bench-quick: setup-dev
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
