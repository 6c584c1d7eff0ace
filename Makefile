# Each target documented with "## " shows in `make help`.
SHELL := bash
FUZZTIME ?= 10s

# IMAGES picks the Redis, PostgreSQL and Go (GO_IMAGE, the Dockerfile's
# builder) images for the container tests; it prefixes a recipe line.
IMAGES = images=$$(test/images/env.sh) && eval "$$images" &&

.DEFAULT_GOAL := help
.PHONY: help run test test-short hostile lint fuzz fuzz-inputs bench

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## Run a development server, open to anyone (DJANGO_DEBUG=1 go run ./cmd/wsserver)
	DJANGO_DEBUG=1 go run ./cmd/wsserver

# The session and chat suites run again on a Redis Cluster (three masters,
# a replica each: test/containers/cluster.go), with plain PUBLISH and the
# failover test, then the session suite and the failover test with sharded
# pub/sub. A new session or chat test on Redis joins by its name here (the
# multitask tests run on memory only, so they are not listed).
E2E_ON_CLUSTER = ^(TestSession.*|TestGracefulShutdown|TestChatOnDefaults|TestChatAcrossInstances|TestThreadBusyAcrossInstances|TestAPIRefusals|TestCancelFromAnotherConnection|TestClusterFailoverMidFanout)$$
E2E_ON_SHARDED = ^(TestSession.*|TestGracefulShutdown|TestChatAcrossInstances|TestCancelFromAnotherConnection|TestClusterFailoverMidFanout)$$

test: ## Run the whole suite, with Redis, PostgreSQL and the Dockerfile's image as containers (test/images/env.sh), then e2e on a Redis Cluster
	@test/browser/ensure-chromium.sh
	@$(IMAGES) set -x && \
	TESTCONTAINERS_RYUK_DISABLED=true go test -race -count=1 -timeout 20m ./... && \
	E2E_REDIS=cluster TESTCONTAINERS_RYUK_DISABLED=true go test -race -count=1 -timeout 10m -run '$(E2E_ON_CLUSTER)' ./test/e2e/ && \
	E2E_REDIS=cluster-sharded TESTCONTAINERS_RYUK_DISABLED=true go test -race -count=1 -timeout 10m -run '$(E2E_ON_SHARDED)' ./test/e2e/

test-short: ## Run the tests that need no containers or Docker (core, in-process adapters, edge, tools)
	go test -count=1 ./core/... ./ports/... ./adapters/config/ ./adapters/local/ ./adapters/memory/ ./adapters/socket/ ./adapters/web/ ./adapters/bedrock/ ./adapters/openai/ ./adapters/internal/... ./cmd/... ./docs/ ./deployments/ ./test/fakebedrock/... ./test/fakeopenai/... ./test/internal/... ./test/hostile/

PROTOFUZZ_TIME ?= 2m

hostile: ## Overload, ping flood and the protocol fuzzer for PROTOFUZZ_TIME (default 2m; `make test` gives it 15s)
	PROTOFUZZ_TIME=$(PROTOFUZZ_TIME) go test -race -count=1 -v -timeout 30m ./test/hostile/

# The fuzz targets of every decoder that takes a client's bytes: frames,
# JSON messages, Host headers, CSRF tokens, API bodies.
FUZZ_INPUTS = ./adapters/socket:FuzzClientBytes ./core/session:FuzzDecode \
	./core/conversation:FuzzDecodeChat ./core/conversation:FuzzDecodersAgree \
	./core/wire:FuzzValidJSONText ./core/wire:FuzzString ./adapters/web:FuzzHostAllowed \
	./adapters/web:FuzzParseCSRF ./adapters/web:FuzzCSRFMutated ./adapters/web:FuzzThreadAPI

fuzz-inputs: ## Fuzz each decoder of client bytes for FUZZTIME (.ci/run: 5s each, after make test)
	@set -euo pipefail; for t in $(FUZZ_INPUTS); do \
		echo "== $${t%%:*} $${t##*:}"; \
		go test -list "^$${t##*:}\$$" "$${t%%:*}" | grep -x "$${t##*:}" >/dev/null || { echo "no $${t##*:} in $${t%%:*}: update FUZZ_INPUTS" >&2; exit 1; }; \
		go test -run '^$$' -fuzz "^$${t##*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 500x "$${t%%:*}" </dev/null; \
	done

GOLANGCI_LINT ?= go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

lint: ## gofmt, go vet, and golangci-lint with .golangci.yml (built from the module proxy on first use)
	@unformatted=$$(gofmt -l .); if [[ -n $$unformatted ]]; then echo "gofmt -l:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	$(GOLANGCI_LINT) run ./...

fuzz: ## Run every Fuzz function of the tree for FUZZTIME each (default 10s; TestMains may start containers)
	@set -euo pipefail; $(IMAGES) export TESTCONTAINERS_RYUK_DISABLED=true; \
	go test -list '^Fuzz' ./... | awk '/^Fuzz/ {f[n++] = $$1; next} /^ok/ {for (i = 0; i < n; i++) print $$2, f[i]} /^(ok|FAIL|\?)/ {n = 0} /^FAIL/ {print > "/dev/stderr"}' | \
	while read -r pkg fn; do \
		echo "== $$pkg $$fn"; \
		go test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 500x "$$pkg" </dev/null; \
	done

bench: ## Run the benchmarks with allocation counts
	go test -run '^$$' -bench . -benchmem ./...
