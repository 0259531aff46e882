// Package datapath owns moat's kernel datapath: the bpf2go output for the
// programs in bpf/ (moat_bpfel.go and moat_bpfel.o, committed), loading them
// with maps pinned under a root (default /sys/fs/bpf/moat), attaching them to
// endpoints' host-side veths (TCX, falling back to legacy tc clsact filters),
// writing a policy.Plan into the maps (Sync), reading events from the ringbuf
// and counters from per-CPU maps, and removing everything again (Cleanup).
// The endpoint plumbing (netns, veth, routes, proxy routing rule) lives in
// endpoint*.go and netns*.go. Two more programs live beside the tc ones:
// the cgroup sock_ops program that reports TCP health (unanswered SYNs,
// retransmissions, RTT, resets: sockops*.go, bpf/sockops.c) and the XDP
// prefilter that drops a CIDR deny list before the stack (prefilter*.go,
// bpf/xdp.c).
//
// Enforcement never stops on its own account: a restarted agent adopts the
// pinned maps and links and swaps programs in place (link.Update); Sync
// writes additions before deletions, so a flow that both the old and new
// policy allow is never dropped and one that both deny never passes; a
// redirect without a proxy listener drops (fail closed).
//
// The datapath must never decide policy itself (that is the policy
// compiler's job), never import dnsproxy, and never run iptables or shell
// commands.
//
// Endpoint id: the ifindex of the endpoint's host-side veth. The programs
// read it from skb->ifindex, so one loaded program serves every endpoint.
package datapath
