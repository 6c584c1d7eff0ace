# Each target documented with "## " shows in `make help`.
SHELL := bash
FUZZTIME ?= 10s

# IMAGES picks the Redis and PostgreSQL images for the container tests; it
# prefixes a recipe line.
IMAGES = images=$$(test/images/env.sh) && eval "$$images" &&

.DEFAULT_GOAL := help
.PHONY: help run test test-short lint fuzz bench

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## Run the server (go run ./cmd/wsserver)
	go run ./cmd/wsserver

test: ## Run the whole suite, with Redis and PostgreSQL containers (images from test/images/env.sh)
	@$(IMAGES) set -x && \
	TESTCONTAINERS_RYUK_DISABLED=true go test -race -count=1 -timeout 20m ./...

test-short: ## Run the tests that need no containers (go test -short)
	go test -short -count=1 ./...

lint: ## Check formatting with gofmt and run go vet
	@unformatted=$$(gofmt -l .); if [[ -n $$unformatted ]]; then echo "gofmt -l:"; echo "$$unformatted"; exit 1; fi
	go vet ./...

fuzz: ## Run every Fuzz function of the tree for FUZZTIME each (default 10s; TestMains may start containers)
	@set -euo pipefail; $(IMAGES) export TESTCONTAINERS_RYUK_DISABLED=true; \
	go test -list '^Fuzz' ./... | awk '/^Fuzz/ {f[n++] = $$1; next} /^ok/ {for (i = 0; i < n; i++) print $$2, f[i]} /^(ok|FAIL|\?)/ {n = 0} /^FAIL/ {print > "/dev/stderr"}' | \
	while read -r pkg fn; do \
		echo "== $$pkg $$fn"; \
		go test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 500x "$$pkg" </dev/null; \
	done

bench: ## Run the benchmarks with allocation counts
	go test -run '^$$' -bench . -benchmem ./...
