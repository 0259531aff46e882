package dashboards

import "fmt"

// agentBoard shows the node agent itself: how fast policy reaches the
// datapath and the proxies, endpoints, xDS, BPF map pressure, the proxies'
// timings and what they lost, and the process.
//
// Not shown because moat does not export them yet: Kubernetes API calls
// and watch events with their latency, and the BPF event ring's lost or
// rate-limited events.
func agentBoard() board {
	sel := matchers(re("cluster"), re("instance"))
	return board{
		file:        "agent.json",
		uid:         "moat-agent",
		title:       "moat / Agent",
		description: "Policy implementation delay, endpoints, xDS sync and NACKs, BPF map pressure, proxy and DNS proxy timings, lost events.",
		vars: []variable{
			{name: "cluster", label: "Cluster", query: `label_values(moat_endpoints, cluster)`},
			{name: "instance", label: "Agent", multi: true, query: `label_values(moat_endpoints{cluster=~"${cluster}"}, instance)`},
		},
		rows: []row{
			{title: "Policy implementation", panels: []panel{
				ts("Policy reconcile duration", "s", "Time to bring the node in line with a new plan (endpoints and BPF maps).",
					quantiles("moat_policy_reconcile_duration_seconds_bucket", sel, "le", "", "0.50", "0.99")...),
				ts("Proxy ACK wait", "s", "Time until a proxy ACKed a new configuration; HTTP redirects wait for it.",
					quantiles("moat_xds_ack_wait_seconds_bucket", sel, "le", "", "0.50", "0.99")...),
				ts("Reconciles by outcome", "ops", "",
					q(fmt.Sprintf(`sum by (outcome) (rate(moat_policy_reconciles_total{%s}%s))`, sel, rate), "{{outcome}}")),
				ts("Policies and failing sources", "short", "",
					q(fmt.Sprintf(`sum(moat_policies{%s})`, sel), "policies"),
					q(fmt.Sprintf(`sum(moat_policy_errors{%s})`, sel), "failing sources")),
			}},
			{title: "Endpoints", panels: []panel{
				ts("Endpoints with programs attached", "short", "",
					q(fmt.Sprintf(`sum by (instance) (moat_endpoints{%s})`, sel), "{{instance}}")),
				ts("Endpoint set-ups by outcome", "ops", "netns, veth and program attach per endpoint.",
					q(fmt.Sprintf(`sum by (outcome) (rate(moat_endpoint_regenerations_total{%s}%s))`, sel, rate), "{{outcome}}")),
			}},
			{title: "xDS", panels: []panel{
				ts("xDS responses, ACKs and NACKs", "ops", "",
					q(fmt.Sprintf(`sum by (type) (rate(moat_xds_responses_total{%s}%s))`, sel, rate), "sent {{type}}"),
					q(fmt.Sprintf(`sum by (type) (rate(moat_xds_acks_total{%s}%s))`, sel, rate), "ACK {{type}}"),
					q(fmt.Sprintf(`sum by (type) (rate(moat_xds_nacks_total{%s}%s))`, sel, rate), "NACK {{type}}")),
				ts("Connected proxies", "short", "",
					q(fmt.Sprintf(`sum(moat_xds_connected_nodes{%s})`, sel), "nodes"),
					q(fmt.Sprintf(`sum(moat_xds_open_streams{%s})`, sel), "streams"),
					q(fmt.Sprintf(`sum(moat_l7proxy_xds_connected{%s})`, sel), "embedded proxy connected")),
				ts("Failed ACK waits", "ops", "Waits for a proxy ACK that failed: the redirect stays absent (fail closed).",
					q(fmt.Sprintf(`sum by (reason) (rate(moat_xds_wait_failures_total{%s}%s))`, sel, rate), "{{reason}}")),
				ts("Embedded proxy xDS updates", "ops", "",
					q(fmt.Sprintf(`sum by (type, result) (rate(moat_l7proxy_xds_updates_total{%s}%s))`, sel, rate), "{{type}} {{result}}")),
			}},
			{title: "BPF maps", panels: []panel{
				ts("Map pressure", "percentunit", "Entries / max entries; for moat_ct the flows not yet expired.",
					q(fmt.Sprintf(`max by (map_name) (moat_bpf_map_pressure{%s})`, sel), "{{map_name}}")),
				ts("Map writes", "ops", "",
					q(fmt.Sprintf(`sum by (map) (rate(moat_datapath_map_updates_total{%s}%s))`, sel, rate), "{{map}}")),
				ts("Connection tracking", "short", "",
					q(fmt.Sprintf(`sum by (protocol) (moat_ct_live_entries{%s})`, sel), "live {{protocol}}"),
					q(fmt.Sprintf(`sum(rate(moat_ct_gc_removed_entries_total{%s}%s))`, sel, rate), "removed by GC per second")),
			}},
			{title: "Proxies", panels: []panel{
				ts("HTTP proxy request duration", "s", "Request to response through the HTTP proxy.",
					quantiles("hubble_http_request_duration_seconds_bucket", sel, "le", "", "0.50", "0.99")...),
				ts("DNS proxy timings", "s", "Time the proxy spent itself, the upstream exchange, and the hold until learned addresses were in the ipcache.",
					append(append(quantiles("moat_dnsproxy_processing_seconds_bucket", sel, "le", "processing ", "0.50", "0.99"),
						quantiles("moat_dnsproxy_upstream_seconds_bucket", sel, "le", "upstream ", "0.50", "0.99")...),
						quantiles("moat_dnsproxy_hold_seconds_bucket", sel, "le", "hold ", "0.99")...)...),
				ts("DNS proxy queries by verdict", "reqps", "",
					q(fmt.Sprintf(`sum by (protocol, verdict) (rate(moat_dnsproxy_queries_total{%s}%s))`, sel, rate), "{{protocol}} {{verdict}}")),
				ts("DNS proxy rejections", "reqps", "Messages the DNS proxy refused, dropped, failed or altered.",
					q(fmt.Sprintf(`sum by (reason, result) (rate(moat_dnsproxy_rejected_total{%s}%s))`, sel, rate), "{{reason}} {{result}}")),
				ts("FQDN cache", "short", "",
					q(fmt.Sprintf(`sum(moat_dnsproxy_cache_names{%s})`, sel), "names"),
					q(fmt.Sprintf(`sum(moat_dnsproxy_cache_ips{%s})`, sel), "name-address pairs"),
					q(fmt.Sprintf(`sum(moat_dnsproxy_inflight_queries{%s})`, sel), "queries in flight")),
				ts("Learned addresses into the maps", "ops", "Addresses the DNS proxy learned written into the ipcache, by path (patch: single entries; plan: a new plan and a full sync).",
					q(fmt.Sprintf(`sum by (path) (rate(moat_fqdn_ipcache_writes_total{%s}%s))`, sel, rate), "{{path}}")),
			}},
			{title: "Lost events", panels: []panel{
				ts("Access-log entries the proxy dropped", "ops", "HTTP exchanges that did not reach flows and metrics.",
					q(fmt.Sprintf(`sum by (reason) (rate(moat_l7proxy_access_log_dropped_total{%s}%s))`, sel, rate), "{{reason}}")),
				ts("Connections closed before HTTP", "ops", "Connections the embedded proxy closed without a matching listener or filter chain.",
					q(fmt.Sprintf(`sum by (reason) (rate(moat_l7proxy_connections_rejected_total{%s}%s))`, sel, rate), "{{reason}}")),
				ts("FQDN cache evictions", "ops", "",
					q(fmt.Sprintf(`sum by (reason) (rate(moat_dnsproxy_cache_evictions_total{%s}%s))`, sel, rate), "{{reason}}")),
			}},
			{title: "Process", panels: []panel{
				ts("CPU", "percentunit", "", q(fmt.Sprintf(`sum by (instance) (rate(process_cpu_seconds_total{%s}%s))`, sel, rate), "{{instance}}")),
				ts("Memory", "bytes", "",
					q(fmt.Sprintf(`sum by (instance) (process_resident_memory_bytes{%s})`, sel), "RSS {{instance}}"),
					q(fmt.Sprintf(`sum by (instance) (go_goroutines{%s})`, sel), "goroutines {{instance}}")),
			}},
		},
	}
}
