#!/usr/bin/env bash
# Builds the Kubernetes binaries the tests and the local cluster run, from
# the Go module proxy, and caches them on this machine. Prints the directory
# that holds them:
#
#   etcd kube-apiserver kubectl                  (internal/k8stest, bench-k8s)
#   kube-controller-manager kube-scheduler
#   kubelet kube-proxy agnhost                   (e2e/cluster tools module)
#   coredns                                      (e2e/cluster/coredns module)
#   pause                                        (gcc -static, pause.c of k8s.io/kubernetes)
#
# The cache directory is keyed by every input: both modules' go.mod, go.sum
# and Go files, this script, and the Go and gcc versions.
#
#   MOAT_K8S_CACHE   cache root (default /var/cache/moat/k8s-bins)
#
# A cold build takes many minutes on two cores (the apiserver alone about
# 9); a cached one returns at once, so CI pays for it once per machine.
# Concurrent callers wait for each other on a lock instead of building twice.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/e2e/cluster/tools"
coredns="$root/e2e/cluster/coredns"
export PATH="/usr/local/go/bin:$PATH"
gover="$(go env GOVERSION)"
ccver="$(gcc -dumpfullversion 2>/dev/null || echo none)"
key="$(cat "$tools"/go.mod "$tools"/go.sum "$tools"/*.go \
	"$coredns"/go.mod "$coredns"/go.sum "$coredns"/*.go "$0" \
	<(echo "$gover $ccver") | sha256sum | cut -c1-16)"
croot="${MOAT_K8S_CACHE:-/var/cache/moat/k8s-bins}"
cache="$croot/$key"
bins=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler
	kubelet kube-proxy agnhost coredns pause)

complete() {
	local b
	for b in "${bins[@]}"; do [[ -x "$cache/$b" ]] || return 1; done
}
if complete; then
	echo "$cache"
	exit 0
fi

mkdir -p "$croot"
exec 9>"$croot/$key.lock"
flock 9
if complete; then # another caller built it while we waited
	echo "$cache"
	exit 0
fi

tmp="$cache.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
ver=v1.37.2
ld="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	ld+=" -X $p.gitVersion=$ver -X $p.gitMajor=1 -X $p.gitMinor=37"
	ld+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean"
	ld+=" -X $p.buildDate=2026-01-01T00:00:00Z"
done
export CGO_ENABLED=0
build() { # dir name package [ldflags]
	local start=$SECONDS
	echo "k8s-bins: building $2" >&2
	(cd "$1" && go build -trimpath -ldflags "${4:-$ld}" -o "$tmp/$2" "$3") >&2
	echo "k8s-bins: built $2 in $((SECONDS - start))s" >&2
}
build "$tools" etcd go.etcd.io/etcd/server/v3
build "$tools" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build "$tools" kubectl k8s.io/kubernetes/cmd/kubectl
build "$tools" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build "$tools" kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build "$tools" kubelet k8s.io/kubernetes/cmd/kubelet
build "$tools" kube-proxy k8s.io/kubernetes/cmd/kube-proxy
build "$tools" agnhost k8s.io/kubernetes/test/images/agnhost
build "$coredns" coredns . "-s -w"

# pause: the sandbox's init process, from the k8s module's own source. The
# tag in the image (registry.k8s.io/pause:3.10.2) is kubeadm's for 1.37.
kdir="$(cd "$tools" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
echo "k8s-bins: building pause" >&2
gcc -Os -Wall -Werror -static -DVERSION=v3.10.2-local \
	-o "$tmp/pause" "$kdir/build/pause/linux/pause.c" >&2
strip "$tmp/pause"

rm -rf "$cache"
mv "$tmp" "$cache"
echo "$cache"
