package dashboards

import "fmt"

// operatorBoard shows moat-operator (moat_operator_*): identities and their
// garbage collection, policy status and leader election.
func operatorBoard() board {
	sel := re("cluster")
	return board{
		file:        "operator.json",
		uid:         "moat-operator",
		title:       "moat / Operator",
		description: "Identities allocated and collected, policy status and leader changes of moat-operator.",
		vars: []variable{
			{name: "cluster", label: "Cluster", query: `label_values(moat_operator_leader, cluster)`},
		},
		rows: []row{
			{title: "Identities", panels: []panel{
				ts("Identities", "short", "Identity objects in the cluster and those marked unused (waiting for the grace period), as of the leader's last GC pass.",
					q(fmt.Sprintf(`max(moat_operator_identities{%s})`, sel), "allocated"),
					q(fmt.Sprintf(`max(moat_operator_identities_unused{%s})`, sel), "unused")),
				ts("Identities collected", "short", "",
					q(fmt.Sprintf(`sum(increase(moat_operator_identities_gc_total{%s}%s))`, sel, rate), "deleted")),
			}},
			{title: "Policies", panels: []panel{
				ts("Policies by validity", "short", "",
					q(fmt.Sprintf(`max by (valid) (moat_operator_policies{%s})`, sel), "valid={{valid}}")),
				ts("Reconcile errors", "ops", "",
					q(fmt.Sprintf(`sum by (controller) (rate(moat_operator_reconcile_errors_total{%s}%s))`, sel, rate), "{{controller}}")),
			}},
			{title: "Leader election", panels: []panel{
				ts("Leader", "short", "1 for the replica that holds the lease.",
					q(fmt.Sprintf(`max by (instance) (moat_operator_leader{%s})`, sel), "{{instance}}")),
				statOf("Leader changes over the time range", "short", "",
					q(fmt.Sprintf(`sum(changes(moat_operator_leader{%s}[$__range]))`, sel), "")),
			}},
		},
	}
}
