package dashboards

import "fmt"

// dnsBoard shows the DNS proxy's exchanges through Hubble's dns handler
// (hubble_dns_*). A query refused by policy counts in
// hubble_dns_queries_total with rcode "Policy denied"; a forwarded query
// with rcode ""; its answer in hubble_dns_responses_total with the answer's
// rcode. A response flow goes from the server to the client, so its
// client is the destination: the variables (the asking workload) match
// source_* on queries and destination_* on responses, as in Hubble's DNS
// dashboard. Names need the handler's "query" option (dns:query), the
// workload columns its labelsContext (source_namespace, source_workload,
// destination_namespace, destination_workload).
func dnsBoard() board {
	sel := matchers(re("cluster"), re("source_namespace"), re("source_workload"))
	rsel := matchers(re("cluster"), `destination_namespace=~"${source_namespace}"`, `destination_workload=~"${source_workload}"`)
	queries := "hubble_dns_queries_total"
	responses := "hubble_dns_responses_total"
	return board{
		file:  "dns.json",
		uid:   "moat-dns",
		title: "moat / DNS",
		description: "DNS queries seen by moat's DNS proxy (Hubble's dns metrics): outcomes, failures by rcode, " +
			"the names that failed, the most asked names, and queries left without a response.",
		vars: []variable{
			{name: "cluster", label: "Cluster", query: `label_values(hubble_dns_queries_total, cluster)`},
			{name: "source_namespace", label: "Source Namespace", multi: true,
				query: `label_values(hubble_dns_queries_total{cluster=~"${cluster}"}, source_namespace)`},
			{name: "source_workload", label: "Source Workload", multi: true,
				query: `label_values(hubble_dns_queries_total{cluster=~"${cluster}", source_namespace=~"${source_namespace}"}, source_workload)`},
		},
		rows: []row{
			{title: "Queries", panels: []panel{
				ts("Queries by outcome", "reqps", "Queries forwarded to their server, and queries the proxy refused by policy.",
					q(fmt.Sprintf(`sum(rate(%s{%s, rcode=""}%s))`, queries, sel, rate), "forwarded"),
					q(fmt.Sprintf(`sum(rate(%s{%s, rcode="Policy denied"}%s))`, queries, sel, rate), "refused by policy")),
				ts("Responses by rcode", "reqps", "Answers the clients got for forwarded queries (a SERVFAIL the proxy made after an upstream timeout included).",
					q(fmt.Sprintf(`sum by (rcode) (rate(%s{%s}%s))`, responses, rsel, rate), "{{rcode}}")),
				ts("Queries by source workload", "reqps", "",
					q(fmt.Sprintf(`sum by (source_namespace, source_workload) (rate(%s{%s}%s))`, queries, sel, rate), "{{source_namespace}}/{{source_workload}}")),
				ts("Missing responses", "reqps", "Forwarded queries minus responses (Hubble's definition), and the proxy's upstream exchanges that got no answer in time or failed (the client got SERVFAIL).",
					q(fmt.Sprintf(`sum(rate(%s{%s, rcode=""}%s)) - sum(rate(%s{%s}%s))`, queries, sel, rate, responses, rsel, rate), "forwarded without response"),
					q(fmt.Sprintf(`sum by (reason) (rate(moat_dnsproxy_rejected_total{%s, reason=~"upstream_timeout|upstream_error"}%s))`, re("cluster"), rate), "upstream {{reason}}")),
			}},
			{title: "Failures", panels: []panel{
				tableOf("Failures by rcode in the last 10 minutes", "Answers other than NOERROR, and queries refused by policy, over the last 10 minutes.",
					q(fmt.Sprintf(`sum by (rcode) %s > 0`, added(fmt.Sprintf(`%s{%s, rcode!="No Error"}`, responses, rsel), "10m")), "{{rcode}}"),
					q(fmt.Sprintf(`sum by (rcode) %s > 0`, added(fmt.Sprintf(`%s{%s, rcode="Policy denied"}`, queries, sel), "10m")), "{{rcode}}")),
				tableOf("Names that failed to resolve in the last 10 minutes", "Which names failed, for whom (answers: the destination is the asking workload), and how (needs the dns handler's query option).",
					q(fmt.Sprintf(`sum by (destination_namespace, destination_workload, query, rcode) %s > 0`, added(fmt.Sprintf(`%s{%s, rcode!="No Error"}`, responses, rsel), "10m")), "{{destination_workload}} {{query}} {{rcode}}"),
					q(fmt.Sprintf(`sum by (source_namespace, source_workload, query, rcode) %s > 0`, added(fmt.Sprintf(`%s{%s, rcode="Policy denied"}`, queries, sel), "10m")), "{{source_workload}} {{query}} {{rcode}}")),
				ts("Failures by rcode", "reqps", "",
					q(fmt.Sprintf(`sum by (rcode) (rate(%s{%s, rcode!="No Error"}%s))`, responses, rsel, rate), "{{rcode}}"),
					q(fmt.Sprintf(`sum by (rcode) (rate(%s{%s, rcode="Policy denied"}%s))`, queries, sel, rate), "{{rcode}}")),
			}},
			{title: "Names", panels: []panel{
				tableOf("Top queried names", "The ten names asked most over the dashboard's time range (needs the dns handler's query option).",
					q(fmt.Sprintf(`topk(10, sum by (query) %s)`, added(fmt.Sprintf(`%s{%s}`, queries, sel), "$__range")), "{{query}}")),
				ts("Answer records by type", "ops", "",
					q(fmt.Sprintf(`sum by (type) (rate(hubble_dns_response_types_total{%s}%s))`, rsel, rate), "{{type}}")),
			}},
		},
	}
}
