package dashboards

import "fmt"

// tcpBoard shows TCP health: the sock_ops program's events
// (moat_tcp_events_total by kind, moat_tcp_rtt_seconds) and Hubble's tcp
// handler (hubble_tcp_flags_total; workloads need its labelsContext).
func tcpBoard() board {
	sel := re("cluster")
	events := "moat_tcp_events_total"
	flags := "hubble_tcp_flags_total"
	return board{
		file:        "tcp-health.json",
		uid:         "moat-tcp-health",
		title:       "moat / TCP health",
		description: "Unanswered SYNs, resets, retransmits and round-trip times of TCP connections on the node.",
		vars: []variable{
			{name: "cluster", label: "Cluster", query: `label_values(moat_tcp_events_total, cluster)`},
		},
		rows: []row{
			{title: "Connections", panels: []panel{
				ts("Unanswered SYNs", "ops", "Connection attempts that got no SYN-ACK before the client gave up (sock_ops), and SYNs minus SYN-ACKs among reported flows.",
					q(fmt.Sprintf(`sum(rate(%s{%s, kind="syn-timeout"}%s))`, events, sel, rate), "connect timeouts"),
					q(fmt.Sprintf(`sum(rate(%s{%s, flag="SYN"}%s)) - sum(rate(%s{%s, flag="SYN-ACK"}%s))`, flags, sel, rate, flags, sel, rate), "SYN without SYN-ACK (flows)")),
				ts("Resets", "ops", "Connections refused (RST to a SYN) or reset, and RST flags in reported flows.",
					q(fmt.Sprintf(`sum by (kind) (rate(%s{%s, kind=~"refused|reset"}%s))`, events, sel, rate), "{{kind}}"),
					q(fmt.Sprintf(`sum(rate(%s{%s, flag="RST"}%s))`, flags, sel, rate), "RST (flows)")),
				ts("Retransmits", "ops", "", q(fmt.Sprintf(`sum(rate(%s{%s, kind="retransmit"}%s))`, events, sel, rate), "retransmits")),
				ts("Round-trip time", "s", "Sampled smoothed RTT of sockets on the node.",
					quantiles("moat_tcp_rtt_seconds_bucket", sel, "le", "", "0.50", "0.99")...),
				ts("TCP events by kind", "ops", "", q(fmt.Sprintf(`sum by (kind) (rate(%s{%s}%s))`, events, sel, rate), "{{kind}}")),
				ts("TCP flags in flows", "ops", "", q(fmt.Sprintf(`sum by (flag) (rate(%s{%s}%s))`, flags, sel, rate), "{{flag}}")),
				tableOf("SYN and SYN-ACK by workload pair in the last 10 minutes", "A pair with SYNs and no SYN-ACK got no answer (needs workloads in the tcp handler's labelsContext).",
					q(fmt.Sprintf(`sum by (source_namespace, source_workload, destination_namespace, destination_workload, flag) %s > 0`, added(fmt.Sprintf(`%s{%s, flag=~"SYN|SYN-ACK"}`, flags, sel), "10m")),
						"{{source_workload}} → {{destination_workload}} {{flag}}")).wide(),
			}},
		},
	}
}
