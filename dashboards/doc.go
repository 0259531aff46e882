// Package dashboards owns moat's Grafana dashboards as Go code: one
// definition per dashboard (l7http.go, dns.go, policy.go, tcp.go, agent.go,
// operator.go), built with Grafana's foundation SDK into the JSON that
// charts/moat/dashboards holds (`make generate-dashboards`, run by
// `make generate`; dashboards/gen writes the files). It also reads that
// JSON back (Queries, Variables) and names the metrics a PromQL
// expression uses (MetricNames), so that tests can check every query
// against what moat registers and run it on a real Prometheus.
//
// It must never import moat's components (agent, flow, datapath, ...):
// the dashboards describe metrics by name, and the tests, not this
// package, tie those names to the registries. Every query uses only
// metrics moat exports and Hubble's label names; the HTTP dashboard keeps
// the variables of Hubble's "L7 HTTP Metrics by Workload" dashboard
// (DS_PROMETHEUS, cluster, destination_namespace, destination_workload,
// reporter, source_namespace, source_workload) so that links and habits
// carry over.
package dashboards
