#!/usr/bin/env bash
# Prints what a local cluster could leave behind on this host, normalised
# so that two snapshots taken before `make cluster-up` and after
# `make cluster-down` are equal when the host was restored: network
# namespaces, links, routes, the nft ruleset, iptables chains, mounts,
# the global sysctls kubelet rewrites, bpffs propagation, cgroups, the
# directories kubelet and containerd write outside their own, and
# cluster processes. .ci/run diffs the two. Needs root.
set -uo pipefail
section() { printf '\n== %s\n' "$1"; }
section "netns"; ip netns list 2>/dev/null | awk '{print $1}' | sort
section "links"; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
section "routes"; ip route show table all | grep -v ' proto kernel ' | sort
section "ip rules"; ip rule show | sort
section "nft ruleset"; nft list ruleset 2>/dev/null | grep -vE '^\s*$' | sed -E 's/ # handle [0-9]+//'
section "iptables"; for t in iptables ip6tables; do "$t-save" 2>/dev/null | grep -E '^[:*-]' | sed -E 's/\[[0-9]+:[0-9]+\]//' | sort; done
section "mounts"; awk '{print $5, $9}' /proc/self/mountinfo | sort
section "bpffs propagation"; findmnt -no PROPAGATION /sys/fs/bpf
section "sysctls"
for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys \
	kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.bridge.bridge-nf-call-iptables; do
	printf '%s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo absent)"
done
section "cgroups"; for d in /sys/fs/cgroup/*/; do find "$d" -mindepth 1 -maxdepth 1 -type d 2>/dev/null; done | sort
section "dirs"
for d in /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/containerd \
	/opt/containerd /etc/cni /opt/cni /run/netns /etc/kubernetes; do
	if [[ -e $d ]]; then find "$d" -maxdepth 3 2>/dev/null | sort; else echo "$d absent"; fi
done
section "processes"
# Zombies are left out: a daemon the harness stopped has exited, and only
# this machine's PID 1 (not an init that reaps promptly) still holds its
# exit status for a moment.
ps -eo stat=,comm= | awk '$1 !~ /^Z/ {print $2}' | grep -E '^(etcd|kube|containerd|coredns|agnhost|pause|runc)' | sort | uniq -c || true
