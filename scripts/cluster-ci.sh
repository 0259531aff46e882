#!/usr/bin/env bash
# The local cluster's acceptance, as CI runs it: snapshot the host, make
# cluster-up, make e2e-cluster, make cluster-down, snapshot again and fail
# when the two differ. cluster-down also runs when anything fails, after
# the end of every daemon's log is printed. Needs root and the Debian
# packages .ci/run installs. Prints the time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
state="${CLUSTER_STATE:-/var/run/moat-cluster}"
snap="$(mktemp -d)"
scripts/host-snapshot.sh >"$snap/before"

cleanup() {
	rc=$?
	if ((rc != 0)); then
		for f in "$state"/logs/*.log; do
			[[ -e $f ]] || continue
			echo "=== tail $f"
			tail -n 25 "$f"
		done
	fi
	make cluster-down CLUSTER_STATE="$state" || rc=1
	rm -rf "$snap"
	exit "$rc"
}
trap cleanup EXIT

step() { # name command...
	local start=$SECONDS
	"${@:2}"
	echo "cluster-ci: $1 took $((SECONDS - start))s"
}
step cluster-up make cluster-up CLUSTER_STATE="$state"
step e2e-cluster make e2e-cluster CLUSTER_STATE="$state"
trap - EXIT
step cluster-down make cluster-down CLUSTER_STATE="$state"
scripts/host-snapshot.sh >"$snap/after"
if ! diff -u "$snap/before" "$snap/after"; then
	echo "cluster-ci: make cluster-down left the host different from before make cluster-up (diff above)" >&2
	rm -rf "$snap"
	exit 1
fi
rm -rf "$snap"
echo "cluster-ci: host as before"
