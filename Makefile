# api-gateway — see README.md.
SHELL := /bin/bash
GO ?= go
GOFLAGS_TAGS ?=
BIN := bin/api-gateway
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Packages whose tests need the tools installed by test-deps.
TEST_TIMEOUT ?= 25m
GRPCJS_DIR := e2e/xds/grpcjs

.PHONY: all build run test test-deps vet fmt-check bench clean

all: build

build:
	$(GO) build $(GOFLAGS_TAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/api-gateway

# Runs the gateway with embedded defaults: the store is a file under ./data, limits are in
# memory, the admin token is generated on first start and printed (also in ./data/admin-token).
run: build
	./$(BIN) serve

# Installs what the tests need and is not Go: redis-server (and redis-cli for the cluster
# tests) from Debian's packages, promtool built from source through the Go module proxy, and
# the Node client of e2e/xds (@grpc/grpc-js-xds from npm; Node.js and npm from Debian's
# packages when the machine has none).
test-deps:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
		echo "installing redis-server"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q redis-server redis-tools </dev/null; \
	fi
	@if [ -x deploy/prometheus/promtool.sh ]; then deploy/prometheus/promtool.sh install; fi
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo "installing nodejs and npm"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q nodejs npm </dev/null; \
	fi
	@# The grpc-js xDS client of e2e/xds, exactly as its committed lockfile pins it; installed
	@# again when the lockfile changed since the last install, or when what is installed no
	@# longer matches it or does not load (a package deleted or cut short: npm ci starts from
	@# an empty node_modules). No package of it needs an install script (protobufjs's only
	@# checks versions), so none runs.
	@cd $(GRPCJS_DIR) && if ! cmp -s package-lock.json node_modules/.installed-lock.json \
		|| ! npm ls --all --offline --no-update-notifier >/dev/null 2>&1 </dev/null \
		|| ! node -e 'require("@grpc/grpc-js"); require("@grpc/grpc-js-xds")' >/dev/null 2>&1 </dev/null; then \
		rm -f node_modules/.installed-lock.json; \
		npm ci --no-audit --no-fund --ignore-scripts --no-update-notifier </dev/null && cp package-lock.json node_modules/.installed-lock.json; \
	fi

vet:
	$(GO) vet $(GOFLAGS_TAGS) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Every test that can run here: unit, golden, conformance, Redis, e2e against the built binary;
# then the race detector over every package that is not an e2e driver (those drive the built
# binary from outside; their own code is the test). Under -race the WAF suite runs a sample of
# the CRS replays (waf/race_on_test.go) and -short trims its randomized screen test.
RACE_PKGS = $(shell $(GO) list ./... | grep -v '/e2e/')
test: test-deps fmt-check vet
	CI=$${CI:-} $(GO) test $(GOFLAGS_TAGS) -count=1 -timeout $(TEST_TIMEOUT) ./...
	CI=$${CI:-} $(GO) test $(GOFLAGS_TAGS) -race -short -count=1 -timeout $(TEST_TIMEOUT) $(RACE_PKGS)
	@# The differential test against envoyproxy/ratelimit is its own module (the reference
	@# needs an older otelgrpc than ours); -mod=mod keeps its go.sum in step with ours.
	cd e2e/ratelimitref && CI=$${CI:-} $(GO) test -mod=mod -count=1 -timeout 10m ./...

bench:
	$(GO) test $(GOFLAGS_TAGS) -run '^$$' -bench . -benchmem -timeout 60m ./...
	cd e2e/ratelimitref && $(GO) test -mod=mod -run '^$$' -bench . -benchmem -timeout 30m ./...

clean:
	rm -rf bin
