# ServerlessOS developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv up down test lint proto crds bench bench-start bench-tls bench-migration bench-placement clean

help:
	@echo "make up     - a real local cluster (control plane + kwok nodes + agents + operator)"
	@echo "make down   - remove everything make up made"
	@echo "make test   - install what the tests need, then run the whole suite (CI)"
	@echo "make lint   - ruff + mypy"
	@echo "make proto  - regenerate the gRPC stubs from node-agent/proto"
	@echo "make crds   - regenerate crds/ from the pydantic models"
	@echo "make bench  - node agent benchmarks (hack/bench)"
	@echo "make bench-start - confined StartProcess against crun run of a matching sandbox, side by side (root; Debian crun via hack/install-crun.sh)"
	@echo "make bench-tls - what mutual TLS costs: RPC floor, connection setup, checkpoint transfer (root, CRIU)"
	@echo "make bench-migration - live migration benchmark on the local cluster (after make up)"
	@echo "make bench-placement - placement and rebalancing at 5,000 nodes against baselines (simulated)"

# The venv is rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

up: $(STAMP)
	@hack/up.sh

down:
	@hack/down.sh

test: $(STAMP)
	@hack/test.sh $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check node-agent/serverlessos node-agent/serverlessos_agent operator hack tests e2e
	$(VENV)/bin/mypy

proto: $(STAMP)
	$(PY) hack/gen_proto.py

crds: $(STAMP)
	$(PY) -m serverlessos_operator.api.crdgen
	hack/sync-chart-crds.sh

bench: $(STAMP)
	$(PY) hack/bench/agent.py $(BENCH_ARGS)

bench-start: $(STAMP)
	$(PY) hack/bench/start.py $(BENCH_ARGS)

bench-tls: $(STAMP)
	$(PY) hack/bench/tls.py $(BENCH_ARGS)

bench-migration: $(STAMP)
	KUBECONFIG=$(CURDIR)/.local/kubeconfig PATH=$(HOME)/.cache/serverlessos/bin:$(CURDIR)/.venv/bin:$$PATH \
	  $(PY) hack/bench/migration.py $(BENCH_ARGS)

bench-placement: $(STAMP)
	$(PY) hack/bench/placement.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
