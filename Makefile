# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs flowcallback, trains a small CNN with the callback
#   make test   creates .venv with the test extras, installs chromium and mcl (Debian), runs pytest
SHELL := /bin/bash
VENV ?= .venv
# First interpreter between 3.9 and 3.11 (iNNvestigate 2.x and TensorFlow <2.15 need it).
PYTHON ?= $(shell for p in python3.11 python3.10 python3.9 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
PYTEST_ARGS ?=

.PHONY: demo test system-deps clean

$(VENV)/.stamp-base: setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.9-3.11 is required (python3.11, python3.10 or python3.9 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $@

# Debian packages: chromium (browser tests, never a downloaded browser) and mcl (reference MCL program).
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v mcl >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium mcl; \
	fi

demo: $(VENV)/.stamp-base
	$(VENV)/bin/flowcallback demo

test: system-deps $(VENV)/.stamp-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) flows .pytest_cache .hypothesis
