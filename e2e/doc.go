// Package e2e is moat's netns end-to-end suite: it builds the moat-agent and
// moat binaries, runs the agent in standalone mode with real endpoints
// (network namespaces) and sends real TCP, UDP and ICMP packets between them,
// checking what the agent enforces against what `moat policy trace` predicts,
// across policy churn, agent restarts and bad input, and what the agent
// reports (local API flows, Prometheus metrics).
//
// The agent tests are TestPrivileged*: they need root, bpffs and netns, and
// run only with MOAT_PRIVILEGED_TESTS=1. Beside them: the xDS push benchmark
// with real translated resources (xdspush_bench_test.go), the Envoy binary
// test that runs where ENVOY_BIN points at an Envoy (envoy_test.go; its
// prerequisites always run), and the L3/L4 benchmark harness (benchl4/). Each test owns a netns prefix, a pin
// root under /sys/fs/bpf/moat-e2e-*, a pod address range and a metrics port,
// and removes all of them (agent process, netns, links, pins) even when it
// fails.
//
// The package holds tests only: it must never be imported, never talk to
// addresses outside the namespaces it creates and loopback, and never touch
// endpoints, pins or namespaces it did not create.
package e2e
