# Two commands matter: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck unit compile bench fuzz clean interop-venv

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

# The optional compiled build (mypyc) of the modules listed in eir_compiled/modules.py, written to
# build/mypyc/ and imported only while it matches its sources (eir_compiled/finder.py).
$(VENV)/.installed-compile: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[compile]'
	touch $@ $(VENV)/.installed-run

compile: $(VENV)/.installed-compile
	$(BIN)/python -m eir_compiled.build

# The whole suite on the compiled build (EIR_REQUIRE_COMPILED: an import error if it is not the
# one used), then the compiled modules' own tests and the cross-checks with other implementations
# again on pure Python, what a machine without a C compiler runs. Where no build can be made
# (exit 69: no C compiler or Python headers), the whole suite on pure Python, saying so.
PURE_TESTS ?= tests/compiled tests/diameter tests/e2e/test_s13.py tests/interop tests/fuzz \
	tests/n5g_eir/test_hpack.py tests/n5g_eir/test_http2.py tests/n5g_eir/test_http2_rules.py \
	tests/n5g_eir/test_request.py tests/n5g_eir/test_identities.py \
	tests/gateway/test_classify.py tests/gateway/test_imei.py tests/gateway/test_lists.py \
	tests/gateway/test_tac.py tests/gateway/test_policy.py tests/registry/test_local.py \
	tests/registry/test_bounded.py tests/n5g_eir/test_equipment_status.py \
	tests/gateway/test_s13_lane.py tests/gateway/test_observations.py tests/gateway/test_redis_clone.py \
	tests/gateway/test_resp.py

test: lint typecheck $(INTEROP_VENV)/.installed
	@$(BIN)/python -m eir_compiled.build; built=$$?; \
	if [ $$built -eq 0 ]; then \
	  EIR_REQUIRE_COMPILED=1 $(BIN)/python -m pytest -q \
	  && EIR_PURE_PYTHON=1 $(BIN)/python -m pytest -q $(PURE_TESTS); \
	elif [ $$built -eq 69 ]; then \
	  echo "make test: no compiled build can be made here (above); the suite on pure Python only"; \
	  $(BIN)/python -m pytest -q; \
	else \
	  exit $$built; \
	fi

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
	rm -rf $(VENV) $(INTEROP_VENV) var build .mypy_cache .pytest_cache .ruff_cache
