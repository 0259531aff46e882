// Command benchl4 is moat's L3/L4 datapath benchmark (`make bench-l4`). In
// one run it compares, on this machine, three ways of carrying the same
// client→server traffic through a host network namespace:
//
//	(a) no policy: the plain veth → forward → veth path, no BPF attached;
//	(b) moat: the datapath's programs on both host veths, with a policy.Plan
//	    of N L4 entries across 1,000 identities (the allowed flows among them)
//	    and ipcache entries for every identity's address;
//	(c) iptables: the same N rules as one ACCEPT per (source address, proto,
//	    port) in the FORWARD chain after a conntrack ESTABLISHED,RELATED
//	    accept, the allowed flows last (worst case for linear matching), then
//	    DROP.
//
// Workloads: short-connection HTTP with wrk (a new TCP connection per
// request), iperf3 TCP throughput and 64-byte UDP packets/s. It also reports
// the programs' cost per packet (BPF run-time statistics) and the time a Sync
// takes to replace an N-entry policy with another (until the new policy is
// enforced, one replacement at a time). In each of several rounds a
// workload runs in its scenarios as a palindrome, a b c c b a, and each
// scenario's two runs are averaged, so that a drift over the round weighs
// on every scenario alike; rates are medians over the rounds, and b/a, c/a
// the median of each round's own ratio; the spread of b/a over the rounds
// is shown. The report is a table of
// absolute numbers and ratios (b/a, c/a) with PASS/MISS against the goals;
// -json writes the same as JSON. Goals never fail the run: a shared machine
// is noisy and only ratios measured side by side mean anything.
//
// Everything lives in network namespaces of its own: a scratch "host"
// netns (mbench-host) that holds the host-side veths, routes and the
// iptables rules, and two endpoint netns made by datapath.EndpointManager
// (prefix mbench-). BPF pins live under /sys/fs/bpf/moat-bench. The harness
// removes all of it on exit, on error and on SIGINT/SIGTERM, and removes the
// leftovers of a crashed earlier run before it starts.
//
// It must never touch the machine's own netns (no iptables rules, routes or
// links there), other pin roots than its own, or processes it did not start.
package main
