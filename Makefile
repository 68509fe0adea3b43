# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv on the newest supported Python, installs flowcallback, trains a small CNN with the callback
#   make test   installs chromium and mcl (Debian), then runs the suite on two stacks:
#                 .venv      newest Python 3.12/3.13 (else 3.9-3.11), newest TensorFlow (Keras 3, NumPy 2), native LRP
#                 .venv-inn  Python 3.9-3.11, TensorFlow 2.14 (Keras 2), NumPy 1, iNNvestigate 2.1 (the LRP reference):
#                            the tests marked "both" or "innvestigate" (tests/conftest.py)
#               STACKS=current runs the first stack only (a machine without Python 3.9-3.11).
#   make test-fast  the quick tier: first stack, without the slow and browser tests
SHELL := /bin/bash
VENV ?= .venv
VENV_INN ?= .venv-inn
STACKS ?= both
PYTEST_ARGS ?=

# The first of the given Python versions that runs, on PATH or under pyenv (whose bare
# pythonX.Y shims refuse versions that are not selected).
find_python = $(shell for v in $(1); do \
	for p in python$$v $$(ls -d $$(pyenv root 2>/dev/null)/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V -r); do \
		$$p -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$$v'.split('.'))))" >/dev/null 2>&1 \
		&& { echo $$p; exit 0; }; \
	done; done)
PYTHON ?= $(call find_python,3.13 3.12 3.11 3.10 3.9)
PYTHON_INN ?= $(call find_python,3.11 3.10 3.9)

.PHONY: demo test test-fast test-current test-innvestigate system-deps clean

$(VENV)/.stamp-base: setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.9-3.13 is required (python3.13 ... python3.9 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $@

$(VENV_INN)/.stamp-test: setup.cfg pyproject.toml
	@test -n "$(PYTHON_INN)" || { echo "error: the iNNvestigate stack needs Python 3.9, 3.10 or 3.11 on PATH; 'make test STACKS=current' skips it"; exit 1; }
	$(PYTHON_INN) -m venv $(VENV_INN)
	$(VENV_INN)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_INN)/bin/python -m pip install --quiet -e ".[test,innvestigate]"
	touch $@

# Debian packages: chromium (browser tests, never a downloaded browser) and mcl (reference MCL program).
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v mcl >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium mcl; \
	fi

demo: $(VENV)/.stamp-base
	$(VENV)/bin/flowcallback demo

test-current: system-deps $(VENV)/.stamp-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The quick tier while working: the current stack only, without the tests marked slow (a real
# fit, the LRP worker, numba's first compile, UMAP) or browser; about 3 minutes on 2 cores.
# `make test` still runs everything.
test-fast: system-deps $(VENV)/.stamp-test
	$(VENV)/bin/python -m pytest -m "not slow and not browser" --durations=10 $(PYTEST_ARGS)

test-innvestigate: system-deps $(VENV_INN)/.stamp-test
	$(VENV_INN)/bin/python -m pytest -m "both or innvestigate" $(PYTEST_ARGS)

ifeq ($(STACKS),current)
test: test-current
else
test: test-current test-innvestigate
endif

clean:
	rm -rf $(VENV) $(VENV_INN) flows .pytest_cache .hypothesis
