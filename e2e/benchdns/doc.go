// Command benchdns is moat's DNS proxy benchmark (`make bench-dns`, root:
// the agent loads its BPF programs and the bench makes network
// namespaces). In one run, on this machine:
//
//   - the moat-agent binary in standalone mode with two endpoints: a client
//     and a DNS server, each in its own netns made by the agent (prefix
//     mbdns-, pins under /sys/fs/bpf/moat-benchdns);
//   - the upstream: a real miekg/dns server inside the server endpoint's
//     netns, port 53 UDP and TCP, authoritative for bench.test.: A and AAAA
//     for any name under it, -ips addresses per answer, TTL -ttl, the
//     addresses rotating every -rotate so that the FQDN cache churns
//     (learned, expired, collected, learned again); NXDOMAIN outside it;
//   - the policy: rules.dns with -patterns entries (half matchPattern
//     "*.z<i>.bench.test", half matchName) on port 53 to the server, and
//     toFQDNs selecting the first -selected zones;
//   - the load: Debian's dnsperf inside the client netns, in three
//     scenarios:
//     (a) direct: no policy, the client talks to the server;
//     (b) proxy: the policy redirects every query through moat's DNS
//     proxy; the names are allowed but no toFQDNs selector selects them;
//     (c) proxy+learn: the same, but every name is selected, so every
//     answer is learned into the ipcache before it is released.
//
// Each scenario has a max-throughput run (dnsperf without a rate limit)
// and a fixed-rate run (-rate, default 5k qps, dnsperf -Q) whose every
// query latency is read from dnsperf -v. In each round the scenarios run as
// a palindrome, a b c c b a, and a scenario's two runs are averaged, so
// that drift weighs on every scenario alike; the report gives medians over
// the rounds, ratios against (a) measured in the same round, the agent's
// CPU seconds per 1,000 queries (utime+stime from /proc), and the proxy's
// own stage histograms (moat_dnsproxy_hold_seconds, _processing_seconds,
// _upstream_seconds) as p50/p99 from the bucket deltas of each run. After
// the rounds, when perf(1) exists, one more unmeasured run of (b) and (c)
// is profiled with perf record on the agent (the agent has no pprof
// endpoint) and the top symbols go into the report.
//
// Goals (compared, never failing the run: a shared machine is noisy): at
// least 15k qps per agent core through the proxy (completed queries per
// agent CPU second); added p99 at 5k qps at most 1 ms; hold p99 at most
// 10 ms.
//
// It must never touch other agents' netns, pins or processes: its agent
// has its own netns prefix, pin root, run and state directories, ports,
// and is cleaned up (moat-agent cleanup) on exit, on error and on SIGINT.
package main
