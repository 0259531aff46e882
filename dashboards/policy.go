package dashboards

import "fmt"

// policyBoard shows verdicts and drops: hubble_flows_processed_total (flow
// handler), hubble_drop_total (drop handler; direction and workloads need
// its labelsContext: traffic_direction, source_workload, ...) and the
// agent's policy gauges.
func policyBoard() board {
	sel := re("cluster")
	flows := "hubble_flows_processed_total"
	drops := "hubble_drop_total"
	return board{
		file:        "policy-verdicts-drops.json",
		uid:         "moat-policy-verdicts-drops",
		title:       "moat / Policy verdicts and drops",
		description: "Flow verdicts, drops by reason, direction and workload, and the policies in force.",
		vars: []variable{
			{name: "cluster", label: "Cluster", query: `label_values(hubble_flows_processed_total, cluster)`},
		},
		rows: []row{
			{title: "Verdicts", panels: []panel{
				ts("Flows by verdict", "ops", "Flows moat reported, by verdict (FORWARDED needs verdict events or L7 traffic).",
					q(fmt.Sprintf(`sum by (verdict) (rate(%s{%s}%s))`, flows, sel, rate), "{{verdict}}")),
				ts("L7 verdicts", "ops", "HTTP and DNS exchanges by verdict.",
					q(fmt.Sprintf(`sum by (subtype, verdict) (rate(%s{%s, type="L7"}%s))`, flows, sel, rate), "{{subtype}} {{verdict}}")),
				statOf("Dropped share of flows", "percentunit", "",
					q(fmt.Sprintf(`sum(rate(%s{%s, verdict="DROPPED"}%s)) / sum(rate(%s{%s}%s))`, flows, sel, rate, flows, sel, rate), "")),
				statOf("Policies in force", "short", "", q(fmt.Sprintf(`sum(moat_policies{%s})`, sel), "")),
				statOf("Policy sources failing validation", "short", "The previous version of each stays in force.",
					q(fmt.Sprintf(`sum(moat_policy_errors{%s})`, sel), "")),
			}},
			{title: "Drops", panels: []panel{
				ts("Drops by reason", "pps", "",
					q(fmt.Sprintf(`sum by (reason, protocol) (rate(%s{%s}%s))`, drops, sel, rate), "{{reason}} {{protocol}}")),
				ts("Drops by direction and reason", "pps", "Needs traffic_direction in the drop handler's labelsContext.",
					q(fmt.Sprintf(`sum by (traffic_direction, reason) (rate(%s{%s}%s))`, drops, sel, rate), "{{traffic_direction}} {{reason}}")),
				ts("Drops by workload", "pps", "Needs source and destination workloads in the drop handler's labelsContext.",
					q(fmt.Sprintf(`sum by (source_namespace, source_workload, destination_namespace, destination_workload, reason) (rate(%s{%s}%s))`, drops, sel, rate),
						"{{source_namespace}}/{{source_workload}} → {{destination_namespace}}/{{destination_workload}} {{reason}}")),
				tableOf("Drops in the last 10 minutes", "Why packets were dropped, between which workloads, in which direction.",
					q(fmt.Sprintf(`sum by (source_namespace, source_workload, destination_namespace, destination_workload, traffic_direction, reason, protocol) %s > 0`, added(fmt.Sprintf("%s{%s}", drops, sel), "10m")),
						"{{source_workload}} → {{destination_workload}} {{traffic_direction}} {{reason}} {{protocol}}")),
				ts("HTTP redirects kept fail-closed", "ops", "Reconciliations whose HTTP redirects stayed without a proxy port (that traffic is dropped), by reason.",
					q(fmt.Sprintf(`sum by (reason) (rate(moat_proxy_redirects_fail_closed_total{%s}%s))`, sel, rate), "{{reason}}")),
				ts("XDP prefilter drops", "pps", "Packets the deny-list prefilter dropped, by prefix (only where prefilterInterfaces is set).",
					q(fmt.Sprintf(`sum by (prefix) (rate(moat_prefilter_dropped_packets_total{%s}%s))`, sel, rate), "{{prefix}}")),
			}},
		},
	}
}
