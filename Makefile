# The two commands the README promises: `make demo` and `make test`.
# Both create .venv with a current pip and install what they need on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ztml-installed

.PHONY: setup demo test lint format policy-test bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# OPA's own Go engine, only to cross-check our policies in the tests (its metadata claims
	# Python >= 3.14, yet it runs on 3.11: hence --ignore-requires-python; never a runtime dep).
	$(BIN)/pip install --quiet --no-deps --ignore-requires-python opa-golib-python-bindings==0.4.4
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	VENV=$(VENV) bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

policy-test: setup
	$(BIN)/ztml policy test

test: lint policy-test
	$(BIN)/pytest

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/gate_bench.py

clean:
	rm -rf $(VENV) .demo build *.egg-info .pytest_cache .ruff_cache
