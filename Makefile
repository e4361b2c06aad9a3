# xdplane: `make help` lists the targets. Everything that needs the kernel
# runs as root.
SHELL := /bin/bash
GO    ?= go
BIN   := bin

# Every target builds, vets and tests each module alone, as its own go.mod
# says and as an importer resolves it: GOWORK=off. The committed go.work is
# for working across modules (an editor, or a change to the library seen at
# once by the examples); it merges every module's requirements into one
# build list, which moves versions: there the kube agent builds with
# hack/kube's golang.org/x/net v0.61.0 instead of its own v0.57.0 and
# kube-apiserver with OpenTelemetry v1.47.0 instead of v1.45.0, and a
# module missing a requirement still builds because a neighbour has it.
# Exported, so the scripts and the tests' own `go build`s run the same way.
export GOWORK := off

# The modules with Go code, each vetted and tested on its own, and those
# that only pin tools; `make vet` checks that they and go.work name every
# go.mod in the repository.
MODULES      := . examples/standalone-lb examples/cni-plugin examples/kube-agent bench/kubeproxy
TOOL_MODULES := hack/kube hack/tools

# Modules the library's public packages must not link, as an extended
# regular expression on module paths: importers would build them in. A
# program that needs one is a module of its own (examples/standalone-lb
# for YAML; gopacket builds the tests' packets only).
LIBRARY_FORBIDS := yaml|gopacket

# staticcheck, at the version hack/tools/go.mod pins (with go.sum's hashes),
# so that the library's go.mod, which importers see, does not carry it.
# Built once into bin/, per Go version (it must be built by the Go that
# builds the code it reads); a second `make vet` finds it there.
GOVERSION   := $(shell $(GO) env GOVERSION)
STATICCHECK := $(BIN)/$(GOVERSION)/staticcheck

.DEFAULT_GOAL := help

.PHONY: help deps generate build vet test kube-binaries bench bench-kube-proxy bench-kube-proxy-short demo clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-22s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install what building and testing need (Debian packages, as root)
	@bash internal/scripts/deps.sh

generate: deps ## Regenerate the BPF objects and their Go bindings (needs clang)
	$(GO) generate ./internal/bpf

build: ## Build the standalone load balancer (examples/standalone-lb, a module of its own) into bin/xdplane-lb
	$(GO) -C examples/standalone-lb build -o $(CURDIR)/$(BIN)/xdplane-lb .

vet: $(STATICCHECK) ## gofmt, the module lists, what the library links, then go vet and staticcheck in every module
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	@diff <(printf '%s\n' $(MODULES) $(TOOL_MODULES) | sort) <(git ls-files -- go.mod '*/go.mod' | xargs -n1 dirname | sort) || \
		{ echo "Makefile: MODULES and TOOL_MODULES must name every go.mod (< Makefile, > repository)"; exit 1; }
	@diff <(printf '%s\n' $(MODULES) $(TOOL_MODULES) | sort) <($(GO) work edit -json go.work | sed -n 's/.*"DiskPath": "\(\.\/\)\{0,1\}\(.*\)".*/\2/p' | sort) || \
		{ echo "go.work must use every module (< Makefile, > go.work): go work use DIR"; exit 1; }
	@bad=$$($(GO) list -deps -f '{{with .Module}}{{.Path}}{{end}}' $$($(GO) list ./... | grep -v /internal/) | grep -E '$(LIBRARY_FORBIDS)' | sort -u); \
		test -z "$$bad" || { echo "the library's packages link" $$bad; exit 1; }
	@set -e; for m in $(MODULES); do \
		echo "go vet, staticcheck: $$m"; \
		(cd $$m && $(GO) vet ./... && $(CURDIR)/$(STATICCHECK) ./...); \
	done

$(STATICCHECK): hack/tools/go.mod hack/tools/go.sum
	$(GO) -C hack/tools build -o $(CURDIR)/$@ honnef.co/go/tools/cmd/staticcheck

test: deps vet kube-binaries ## Run every test: unit, golden packets, namespaces, the standalone load balancer, the CNI plugin through libcni, the agent against a real API server (as root)
	$(GO) test -count=1 -timeout 20m ./...
	cd examples/standalone-lb && $(GO) test -count=1 -timeout 10m ./...
	cd examples/cni-plugin && $(GO) test -count=1 -timeout 10m ./...
	cd examples/kube-agent && $(GO) test -count=1 -timeout 10m ./...

kube-binaries: ## Build etcd and kube-apiserver for the agent's test, or find them cached (~/.cache/xdplane)
	@bash hack/kube/build.sh >/dev/null

bench: deps ## Kernel-measured per-packet cost, as a table of ratios
	@bash internal/scripts/bench.sh

KPBENCH := $(BIN)/kpbench

$(KPBENCH): FORCE
	cd bench/kubeproxy && $(GO) build -o ../../$(KPBENCH) .

bench-kube-proxy: deps $(KPBENCH) ## xdplane beside the real kube-proxy (iptables, nftables): tables and charts into docs/benchmarks.md
	$(KPBENCH) -docs docs

bench-kube-proxy-short: deps ## The kube-proxy comparison's tests, and its harness once at 10 services (CI)
	cd bench/kubeproxy && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd bench/kubeproxy && $(GO) build -o ../../$(KPBENCH) .
	$(KPBENCH) -short

demo: deps build ## Build, run xdplane-lb across namespaces, send traffic, clean up
	@bash examples/standalone-lb/demo.sh $(BIN)/xdplane-lb

clean: ## Remove build output
	rm -rf $(BIN)

.PHONY: FORCE
FORCE:
