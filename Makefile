# The two commands a new machine needs: `make chat` and `make test` (each does all set-up first).
VENV ?= $(or $(EDGELLM_VENV),.venv)
PY := $(VENV)/bin/python

.PHONY: setup setup-test chat test test-fast lint bench
setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

chat: setup
	@$(VENV)/bin/edgellm chat default

test: setup-test
	$(PY) -m ruff check edgellm quantize tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup-test
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup-test
	$(PY) -m ruff check edgellm quantize tests bench
	$(PY) -m ruff format --check edgellm quantize tests bench
