# Everything runs from .venv, created on first use from pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Development defaults (dev key, dev pseudonym key, local mail sink, demo data) on purpose.
run: $(STAMP)
	RAPPORT_ENVIRONMENT=$${RAPPORT_ENVIRONMENT:-development} $(BIN)/rapport run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian packages the tests use for real: prometheus (and promtool), docker-compose, and a
# JDK with Maven for Apache Kafka (its jars come from Maven Central on first use).
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v java >/dev/null || missing="$$missing default-jdk-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then apt-get update && apt-get install -y $$missing; fi

# Mailpit, the mail server tests send digests through, built from its Go module (needs go).
MAILPIT_VERSION := v1.33.1
$(BIN)/mailpit: $(STAMP)
	GOBIN=$(abspath $(BIN)) go install github.com/axllent/mailpit@$(MAILPIT_VERSION)

# The Node.js producer example's packages, exactly as its lock file pins them (needs npm).
NODE_EXAMPLE := docs/examples/node-producer
$(NODE_EXAMPLE)/node_modules/.package-lock.json: $(NODE_EXAMPLE)/package-lock.json
	npm ci --prefix $(NODE_EXAMPLE) --no-audit --no-fund

# The stress tests alone (they time rebalances under load), then the rest on three workers,
# each with its own brokers (tests/support/brokers.py): most tests wait on brokers and
# processes, so three keep two cores busy; worksteal evens out the long ones.
test: lint system-deps $(BIN)/mailpit $(NODE_EXAMPLE)/node_modules/.package-lock.json
	$(BIN)/pytest -q -m slow
	$(BIN)/pytest -q -m "not slow" -n 3 --dist worksteal

# Not part of `make test`: figures on this machine, into docs/BENCHMARKS.md and docs/benchmarks.json.
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) var $(NODE_EXAMPLE)/node_modules
