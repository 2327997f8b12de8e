# infergate: `make up` runs the router and a scoring server on the demo model,
# `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: test soak up venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(STAMP)

# `make up`: the demo model behind the router. Ports overridable:
# make up ROUTER_PORT=9000 SCORING_PORT=9001 ADMIN_PORT=9002
ROUTER_PORT ?= 8000
SCORING_PORT ?= 8001
ADMIN_PORT ?= 8002
REPLICAS ?= 1
DEMO_MODELS ?= models/generated
STATE_DIR ?= .infergate

up: $(STAMP)
	$(BIN)/python -m scoring.model_zoo $(DEMO_MODELS) demo
	$(BIN)/python -m server.cli up --model-repository $(DEMO_MODELS) --replicas $(REPLICAS) \
		--port $(ROUTER_PORT) --scoring-port $(SCORING_PORT) --admin-port $(ADMIN_PORT) --state-dir $(STATE_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# `make soak`: the reliability suites with long durations and heavy loads (minutes).
soak: $(STAMP)
	INFERGATE_SOAK=1 $(BIN)/python -m pytest -q tests/reliability $(PYTEST_ARGS)
	INFERGATE_SOAK=1 $(BIN)/python benchmarks/reliability.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Benchmarks (docs/benchmarks.md): installs wrk (apt) and each peer in its own venv under benchmarks/.cache/.
.PHONY: bench bench-quick
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)

