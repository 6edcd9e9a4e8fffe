# podtls — run `make help` for the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
BIN := $(CURDIR)/bin
export K8S_VERSION ?= v1.37.2
FUZZTIME ?= 10s
# make test already runs the envtest suites under e2e/; CI narrows this to the node suites.
E2E_PKGS ?= ./e2e/...
E2E_COUNT ?= 1
# Integration tests start a real kube-apiserver + etcd from these assets.
export KUBEBUILDER_ASSETS ?= $(BIN)/k8s
# Every podtls build is static and -trimpath (internal/gobuild), so vet, make build, the
# images, the demo and the tests that build real binaries share one Go build cache.
GOBUILD_FLAGS := -trimpath
# The time make started: hack/step.sh stamps its progress lines with the time since.
ifndef PODTLS_T0
export PODTLS_T0 := $(shell date +%s)
endif
# STEP NAME "TITLE" "FIRST TIME" CMD...: one progress line before and after a long step.
STEP := @bash hack/step.sh
CMDS = $(shell $(GO) list ./... | grep '/cmd/')
# The podtls CLI runs on the user's machine, not in the cluster: no image.
IMAGE_CMDS = $(filter-out %/cli/cmd/podtls,$(CMDS))

.PHONY: help all build images test unit lint fuzz bench bench-go bench-sidecar bench-memory e2e e2e-multinode node-assets demo envtest-assets acme-assets helm manifests manifests-check test-deps clean clean-cache clean-go-cache

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

all: lint build test ## lint, build and test

build: ## build every binary into bin/
	CGO_ENABLED=0 $(GO) build $(GOBUILD_FLAGS) -ldflags '-s -w -X github.com/podtls/podtls/controller/options.Version=$(VERSION)' -o $(BIN)/ $(CMDS)

IMAGE_TAG ?= dev
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
images: build ## OCI image tarballs of every binary in bin/images (no Docker needed)
	@mkdir -p $(BIN)/images
	@for cmd in $(notdir $(IMAGE_CMDS)); do \
	  name="localhost/podtls/$${cmd#podtls-}:$(IMAGE_TAG)"; \
	  $(GO) run ./hack/ociimage -name "$$name" -file "$(BIN)/$$cmd=/$$cmd" -entrypoint "/$$cmd" -out "$(BIN)/images/$$cmd.tar"; \
	done

lint: ## gofmt and go vet
	@out="$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(STEP) vet "go vet ./... (downloads the Go modules and compiles every package)" "~4 min" env CGO_ENABLED=0 $(GO) vet $(GOBUILD_FLAGS) ./...

test: lint test-deps envtest-assets acme-assets helm manifests-check ## unit + integration tests (real kube-apiserver via envtest, Pebble + BIND9, helm), with -race; installs what they need
	$(STEP) --announce "go test -race ./... (unit + integration: envtest, Pebble + BIND9, helm)" "~8 min on 2 cores"
	PODTLS_REQUIRE_ENVTEST=1 PODTLS_REQUIRE_ACME=1 PODTLS_REQUIRE_TOOLS=1 $(GO) test -race -count=1 -timeout 30m ./...

unit: ## unit tests only (skips anything needing the API server)
	$(GO) test -race -count=1 -short ./...

fuzz: ## run every fuzz target for FUZZTIME each
	bash hack/fuzz.sh $(FUZZTIME)

bench: bench-go bench-sidecar bench-memory ## all benchmarks, printed as ratios measured side by side

bench-go: envtest-assets ## Go benchmarks: CA signing via HTTP vs raw x509, pod certificates through the API server, webhook admissions
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $$($(GO) list ./ca/... ./webhook/... ./sidecar/...)

bench-sidecar: test-deps ## sidecar (tcp and http mode) vs direct vs nginx (wrk, fortio, h2load), handshakes, RSS
	@if [ -d bench/cmd/podtls-bench ]; then $(GO) run ./bench/cmd/podtls-bench; else echo "bench-sidecar: not yet (bench/cmd/podtls-bench missing)"; fi

bench-memory: ## sidecar memory model: RSS per 1,000 open mTLS connections, idle and under load (real binary, medians, slopes)
	$(GO) run ./bench/cmd/podtls-bench memory

node-assets: ## Debian packages and binaries of the real single-node cluster (root)
	$(STEP) node-deps "Debian packages of the local node (containerd, runc, CNI plugins, iptables)" "under a minute" bash hack/node-deps.sh
	$(STEP) k8s "Kubernetes $(K8S_VERSION) (kube-apiserver, controller-manager, scheduler, kube-proxy, kubelet, kubectl) and etcd, compiled from the Go module proxy" "~8 min on 2 cores" bash hack/k8s-binaries.sh all
	$(STEP) coredns "CoreDNS with the local cluster's plugins, compiled from the Go module proxy" "~2 min" bash hack/coredns.sh

# -p 1: the packages take turns. Their clusters exclude each other (one node lock), and
# run side by side a package waiting for the lock can time out while another package's
# tests take it back between them (CI saw the demo wait 15 min behind e2e/mesh).
e2e: node-assets acme-assets helm test-deps ## end-to-end suites under e2e/, including the real single-node cluster (root)
	PODTLS_REQUIRE_ENVTEST=1 PODTLS_REQUIRE_NODE=1 PODTLS_REQUIRE_ACME=1 $(GO) test -p 1 -race -count=1 -timeout 60m $(E2E_PKGS)

e2e-multinode: node-assets helm test-deps ## the two-node suite alone: cross-node mTLS, controller spread, drains held by the PDB, leader failover (root); E2E_COUNT=3 runs it three times
	PODTLS_REQUIRE_NODE=1 $(GO) test -count=$(E2E_COUNT) -timeout 60m -run '^TestMultiNode$$' -v ./e2e/mesh/

demo: node-assets acme-assets helm ## customer -> preference -> recommendation over mTLS on a real local node (root); DEMO_FLAGS=-keep keeps it up
	$(STEP) demo-build "the demo program (it then builds podtls's binaries and images before starting the node)" "~1 min" env CGO_ENABLED=0 $(GO) build $(GOBUILD_FLAGS) -o $(BIN)/demo ./hack/demo
	$(BIN)/demo $(DEMO_FLAGS)

acme-assets: ## BIND9 (Debian) and Pebble (Go module proxy) for the ACME tests (root for apt)
	$(STEP) acme "BIND9 (Debian) and Pebble (compiled from the Go module proxy), the DNS and ACME servers of the tests and demo" "under a minute" bash hack/acme-deps.sh

helm: ## build helm from the Go module proxy into bin/tools/helm (cached)
	$(STEP) helm "helm, compiled from the Go module proxy" "~2 min" bash hack/helm.sh

manifests: ## regenerate manifests/install.yaml from charts/podtls
	bash hack/manifests.sh

manifests-check: ## fail if manifests/install.yaml is stale
	bash hack/manifests.sh --check

envtest-assets: ## build etcd, kube-apiserver, kubectl $(K8S_VERSION) from the Go module proxy into bin/k8s
	$(STEP) envtest "Kubernetes $(K8S_VERSION) kube-apiserver and kubectl, and etcd, for envtest, compiled from the Go module proxy" "~7 min on 2 cores" bash hack/k8s-binaries.sh

test-deps: ## install Debian packages and Go tools the tests and benches use (root)
	$(STEP) test-deps "Debian packages (openssl, curl, nginx, wrk, h2load, a JDK) and fortio that the tests and benches run" "about a minute" bash hack/install-test-deps.sh

clean: ## remove built binaries (keeps the machine-level cache)
	rm -rf $(BIN)

clean-cache: clean ## empty every cache podtls writes: bin/ and the machine-level cache (~/.cache/podtls or PODTLS_CACHE_DIR)
	rm -rf "$${PODTLS_CACHE_DIR:-$${HOME:-/root}/.cache/podtls}"

clean-go-cache: clean-cache ## clean-cache, and Go's own build and module caches (shared with every Go project of this user): a truly cold start
	$(GO) clean -cache -modcache
