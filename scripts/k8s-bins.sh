#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the cluster tests run
# (etcd, kube-apiserver, kubectl) from the tools module in
# e2e/cluster/tools, and caches them on this machine keyed by that module's
# go.mod, go.sum and the Go version. Prints the directory that holds them.
#
#   MOAT_K8S_CACHE   cache root (default /var/cache/moat/k8s-bins)
#
# A cold build takes several minutes on two cores; a cached one returns at
# once, so CI pays for it once per machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/e2e/cluster/tools"
export PATH="/usr/local/go/bin:$PATH"
gover="$(go env GOVERSION)"
key="$(cat "$tools/go.mod" "$tools/go.sum" <(echo "$gover") | sha256sum | cut -c1-16)"
cache="${MOAT_K8S_CACHE:-/var/cache/moat/k8s-bins}/$key"
bins=(etcd kube-apiserver kubectl)

have=1
for b in "${bins[@]}"; do [[ -x "$cache/$b" ]] || have=0; done
if ((have)); then
	echo "$cache"
	exit 0
fi

mkdir -p "$cache.tmp"
ver=v1.37.2
ld="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	ld+=" -X $p.gitVersion=$ver -X $p.gitMajor=1 -X $p.gitMinor=37"
	ld+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean"
	ld+=" -X $p.buildDate=2026-01-01T00:00:00Z"
done
cd "$tools"
export CGO_ENABLED=0
build() { # name package
	echo "k8s-bins: building $1" >&2
	go build -trimpath -ldflags "$ld" -o "$cache.tmp/$1" "$2" >&2
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubectl k8s.io/kubernetes/cmd/kubectl
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache"
