# Two commands matter: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck unit bench fuzz clean interop-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/eir-gateway run

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# python-diameter's top-level package is `diameter`, like ours: it gets its own virtualenv, used by
# tests/interop as a subprocess. Not installable (offline): its interop tests skip with the reason.
INTEROP_VENV ?= .venv-interop

$(INTEROP_VENV)/.installed:
	( $(PYTHON) -m venv $(INTEROP_VENV) && $(INTEROP_VENV)/bin/pip install -q python-diameter==0.9.0 \
	  && touch $@ ) || echo "python-diameter could not be installed; its interop tests will skip"

interop-venv: $(INTEROP_VENV)/.installed

unit: $(VENV)/.installed-test $(INTEROP_VENV)/.installed
	$(BIN)/python -m pytest -q

test: lint typecheck unit

# Benchmarks (not tests): each prints its method and figures; e2e takes a few minutes.
bench: $(VENV)/.installed-test
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/server_path.py
	$(BIN)/python bench/s13_handler.py
	$(BIN)/python bench/fresh_path.py
	$(BIN)/python bench/classify.py
	$(BIN)/python bench/registry.py
	$(BIN)/python bench/registry_faults.py
	$(BIN)/python bench/e2e.py

# Coverage-guided fuzzing (atheris) of framing, decoding, validation, the peer state machine and
# the S13 handler; FUZZ_SECONDS long, corpus and crashes under var/fuzz/ (tests/fuzz/run.py).
FUZZ_SECONDS ?= 600

fuzz: $(VENV)/.installed-test
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) $(INTEROP_VENV) var .mypy_cache .pytest_cache .ruff_cache
