# Targets mirror the README. `make test` is what CI runs (through .ci/run).
GO      ?= go
# Recipes run in bash with pipefail, so that `go test -json | testreport`
# fails when either side fails.
SHELL       := bash
.SHELLFLAGS := -o pipefail -c
PKGS    ?= ./...
EXAMPLE ?= examples/starwars

.PHONY: all build demo policy-demo bench-l4 bench-k8s bench-dns e2e test test-unit vet tidy-check generate generate-api generate-dashboards generate-check bench clean k8s-bins \
	cluster-up cluster-down cluster-status e2e-cluster

all: build

build:
	$(GO) build -o bin/ ./cmd/...

## demo: run the standalone agent on the Star Wars example and show allowed and denied traffic (root)
demo:
	scripts/demo.sh $(EXAMPLE)

## policy-demo: the policy tooling alone (no root): validate, compile and trace an example
policy-demo: build
	./bin/moat policy validate examples/*/policies
	./bin/moat policy trace --policies $(EXAMPLE)/policies --endpoints $(EXAMPLE)/endpoints.yaml \
		--from default/tiefighter --to default/deathstar --port 80/TCP \
		--http-method POST --http-path /v1/request-landing
	-./bin/moat policy trace --policies $(EXAMPLE)/policies --endpoints $(EXAMPLE)/endpoints.yaml \
		--from default/tiefighter --to default/deathstar --port 80/TCP \
		--http-method PUT --http-path /v1/exhaust-port

vet:
	$(GO) vet $(PKGS)

## tidy-check: fail when go.mod or go.sum is not what `go mod tidy` makes
tidy-check:
	$(GO) mod tidy -diff

## test: tidy go.mod, vet, unit tests, fuzz seeds, and (with MOAT_PRIVILEGED_TESTS=1, as root) privileged tests
# -p 1: the privileged tests of datapath, e2e and e2e/benchl4 share the host's
# root netns, cgroup and tc state; run packages one at a time so that they do
# not disturb each other's timing-sensitive checks (restart without loss).
# The output goes through internal/cmd/testreport: failed tests with their
# output, every skip with its reason, and a last line "N passed, N failed,
# N skipped"; it fails on a skip outside its short allowlist.
# The Kubernetes control-plane tests (internal/k8stest) run a real etcd and
# kube-apiserver that scripts/k8s-bins.sh builds from e2e/cluster/tools and
# caches on the machine (minutes the first time, instant after).
test: tidy-check vet
	$(GO) build -o bin/testreport ./internal/cmd/testreport
	bins="$$(scripts/k8s-bins.sh)" && MOAT_K8S_BINS="$$bins" $(GO) test -json -race -count=1 -p 1 -timeout 20m $(PKGS) | bin/testreport

## k8s-bins: build (or find cached) etcd, kube-apiserver and kubectl for the Kubernetes tests
k8s-bins:
	scripts/k8s-bins.sh

# The local multi-node cluster (e2e/cluster/harness, shared/CLUSTER.md):
# control plane on the host, each node in its own netns (containerd,
# kubelet, kube-proxy), CoreDNS; binaries from scripts/k8s-bins.sh.
CLUSTER_STATE ?= /var/run/moat-cluster
CLUSTER_NODES ?= 2
CLUSTER_FLAGS ?=
CLUSTER_KUBECONFIG = $(CLUSTER_STATE)/etc/admin.kubeconfig

bin/moat-cluster: FORCE
	$(GO) build -o $@ ./e2e/cluster/cmd/moat-cluster

## cluster-up: start the local multi-node Kubernetes cluster (root; CLUSTER_NODES=2); prints its kubeconfig
cluster-up: bin/moat-cluster
	bins="$$(scripts/k8s-bins.sh)" && bin/moat-cluster up -bins "$$bins" -state-dir $(CLUSTER_STATE) -nodes $(CLUSTER_NODES) $(CLUSTER_FLAGS)

## cluster-down: stop the local cluster and restore the host as it was (root)
cluster-down: bin/moat-cluster
	bin/moat-cluster down -state-dir $(CLUSTER_STATE)

## cluster-status: the local cluster's daemons and nodes
cluster-status: bin/moat-cluster
	bins="$$(scripts/k8s-bins.sh)" && bin/moat-cluster status -bins "$$bins" -state-dir $(CLUSTER_STATE)

## e2e-cluster: the cluster suite (e2e/cluster) against KUBECONFIG (default: the local cluster's)
e2e-cluster:
	$(GO) build -o bin/testreport ./internal/cmd/testreport
	bins="$$(scripts/k8s-bins.sh)" && KUBECONFIG="$${KUBECONFIG:-$(CLUSTER_KUBECONFIG)}" MOAT_CLUSTER_TESTS=1 MOAT_K8S_BINS="$$bins" \
		$(GO) test -json -count=1 -timeout 15m ./e2e/cluster | bin/testreport

FORCE:

## e2e: the netns end-to-end suite alone (root)
e2e:
	MOAT_PRIVILEGED_TESTS=1 $(GO) test -count=1 -timeout 10m ./e2e/...

test-unit:
	bins="$$(scripts/k8s-bins.sh)" && MOAT_K8S_BINS="$$bins" $(GO) test -count=1 $(PKGS)

## generate: rebuild the committed generated code: bpf2go output from bpf/ (clang-14), the API deepcopy and CRDs, and the Grafana dashboards
generate: generate-api generate-dashboards
	$(GO) generate ./datapath/...

## generate-api: regenerate api/ deepcopy functions and the CRD manifests (charts/moat/crds, charts/moat/extra-crds) with controller-gen
generate-api:
	$(GO) tool controller-gen object paths=./api/...
	rm -f charts/moat/crds/moat.io_*.yaml charts/moat/extra-crds/cilium/cilium.io_*.yaml
	$(GO) tool controller-gen crd:crdVersions=v1 paths=./api/v1alpha1/... output:crd:artifacts:config=charts/moat/crds
	$(GO) tool controller-gen crd:crdVersions=v1 paths=./api/ciliumv2/... output:crd:artifacts:config=charts/moat/extra-crds/cilium

## generate-dashboards: regenerate the Grafana dashboards (charts/moat/dashboards/*.json) from their Go definitions in dashboards/
generate-dashboards:
	$(GO) run ./dashboards/gen -out charts/moat/dashboards

GENERATED := datapath/ api/ charts/moat/crds/ charts/moat/extra-crds/ charts/moat/dashboards/

## generate-check: fail when the committed generated code differs from a fresh build (changed or new files)
generate-check: generate
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		git status --short -- $(GENERATED) >&2; git diff --stat -- $(GENERATED) >&2; \
		echo "generated code is stale: run make generate and commit" >&2; exit 1; \
	fi

## bench: Go benchmarks (policy compile, translation, xDS push, matchers)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3x $(PKGS)

## bench-l4: L3/L4 datapath benchmark (root): no policy vs moat vs iptables at 1k and 10k rules
bench-l4:
	$(GO) run ./e2e/benchl4 -json bench-l4.json $(BENCH_L4_FLAGS)

## bench-k8s: Kubernetes control-plane benchmark (root): apply-to-Plan latency, agent RSS, idle API requests
bench-k8s:
	$(GO) build -o bin/moat-agent ./cmd/moat-agent
	bins="$$(scripts/k8s-bins.sh)" && MOAT_K8S_BINS="$$bins" $(GO) run ./e2e/benchk8s -agent bin/moat-agent -json bench-k8s.json $(BENCH_K8S_FLAGS)

## bench-dns: DNS proxy benchmark (root, needs dnsperf): dnsperf direct vs through moat's proxy with 1,000 DNS rules, with and without toFQDNs learning
bench-dns:
	@command -v dnsperf >/dev/null || { echo "bench-dns needs dnsperf: apt-get install dnsperf" >&2; exit 1; }
	$(GO) build -o bin/moat-agent ./cmd/moat-agent
	$(GO) run ./e2e/benchdns -agent bin/moat-agent -json bench-dns.json $(BENCH_DNS_FLAGS)

clean:
	rm -rf bin/
