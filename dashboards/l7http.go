package dashboards

import (
	"fmt"
	"strings"
)

// matchers joins label matchers into a selector body.
func matchers(ms ...string) string { return strings.Join(ms, ", ") }

// re is a regex matcher on a dashboard variable.
func re(label string) string { return fmt.Sprintf(`%s=~"${%s}"`, label, label) }

const rate = "[$__rate_interval]"

// added is how much the counters of a selector grew over window, counting a
// series that appeared inside the window from zero. increase() needs two
// samples of a series, so it never sees the first count of a new one: with
// per-name or per-workload labels that is most of what "what failed in the
// last 10 minutes" asks about (a name that failed once).
func added(series, window string) string {
	return fmt.Sprintf(`((%[1]s - %[1]s offset %[2]s) or %[1]s)`, series, window)
}

// quantiles is one query per quantile of a histogram's buckets.
func quantiles(bucket, sel, by, legend string, qs ...string) []query {
	var out []query
	for _, qv := range qs {
		out = append(out, q(fmt.Sprintf(`histogram_quantile(%s, sum by (%s) (rate(%s{%s}%s)))`, qv, by, bucket, sel, rate),
			legend+"p"+strings.TrimPrefix(strings.TrimPrefix(qv, "0."), "0")))
	}
	return out
}

// l7HTTP is the counterpart of Hubble's "L7 HTTP Metrics by Workload",
// with the same variables: hubble_http_requests_total and
// hubble_http_request_duration_seconds from the httpV2 handler with
// labelsContext=source_namespace,source_workload,destination_namespace,destination_workload
// (moat's default). The "cluster" label is the one Prometheus adds (an
// external or target label); without it the variable is empty and the
// matcher cluster=~"" matches every series.
func l7HTTP() board {
	const metric = "hubble_http_requests_total"
	const bucket = "hubble_http_request_duration_seconds_bucket"
	dst := matchers(re("cluster"), re("destination_namespace"), re("destination_workload"), re("reporter"))
	all := matchers(dst, re("source_namespace"), re("source_workload"))
	src := "cluster, source_namespace, source_workload"
	dstBy := "cluster, destination_namespace, destination_workload"
	ratio := func(sel, by string) string {
		return fmt.Sprintf(`sum by (%[3]s) (rate(%[1]s{%[2]s, status!~"5.."}%[4]s)) / sum by (%[3]s) (rate(%[1]s{%[2]s}%[4]s))`, metric, sel, by, rate)
	}
	return board{
		file:  "l7-http-by-workload.json",
		uid:   "moat-l7-http-by-workload",
		title: "moat / L7 HTTP by workload",
		description: "HTTP requests that moat's proxies answered or forwarded (Hubble's httpV2 metrics), " +
			"by source and destination workload. Variables as in Hubble's \"L7 HTTP Metrics by Workload\".",
		vars: []variable{
			{name: "cluster", label: "Cluster", query: `label_values(hubble_http_requests_total, cluster)`},
			{name: "destination_namespace", label: "Destination Namespace", multi: true,
				query: `label_values(hubble_http_requests_total{cluster=~"${cluster}"}, destination_namespace)`},
			{name: "destination_workload", label: "Destination Workload", multi: true,
				query: `label_values(hubble_http_requests_total{cluster=~"${cluster}", destination_namespace=~"${destination_namespace}"}, destination_workload)`},
			{name: "reporter", label: "Reporter", multi: true, query: `label_values(hubble_http_requests_total, reporter)`},
			{name: "source_namespace", label: "Source Namespace", multi: true,
				query: `label_values(hubble_http_requests_total{cluster=~"${cluster}", destination_namespace=~"${destination_namespace}", destination_workload=~"${destination_workload}"}, source_namespace)`},
			{name: "source_workload", label: "Source Workload", multi: true,
				query: `label_values(hubble_http_requests_total{cluster=~"${cluster}", destination_namespace=~"${destination_namespace}", destination_workload=~"${destination_workload}", source_namespace=~"${source_namespace}"}, source_workload)`},
		},
		rows: []row{
			{title: "General", panels: []panel{
				statOf("Incoming request rate", "reqps", "Responses per second to requests for the selected destinations.",
					q(fmt.Sprintf(`sum(rate(%s{%s}%s))`, metric, dst, rate), "")),
				statOf("Incoming success rate (non-5xx)", "percentunit", "Share of responses that are not 5xx (a 403 from policy counts as success, as in Hubble).",
					q(ratio(dst, "cluster"), "")),
				statOf("Incoming failed requests (4xx and 5xx)", "reqps", "Responses per second with a 4xx or 5xx status, including the proxy's 403 for requests that policy denies.",
					q(fmt.Sprintf(`sum(rate(%s{%s, status=~"[45].."}%s))`, metric, dst, rate), "")),
				ts("Request duration", "s", "Quantiles of the time from request to response, over the selected destinations.",
					quantiles(bucket, dst, "le", "", "0.50", "0.95", "0.99")...),
				ts("Requests by method and status", "reqps", "",
					q(fmt.Sprintf(`sum by (method, status) (rate(%s{%s}%s))`, metric, dst, rate), "{{method}} {{status}}")),
			}},
			{title: "Requests by source", panels: []panel{
				ts("Incoming requests by source and status", "reqps", "",
					q(fmt.Sprintf(`sum by (%s, status) (rate(%s{%s}%s))`, src, metric, all, rate), "{{source_namespace}}/{{source_workload}}: {{status}}")),
				ts("Incoming success rate (non-5xx) by source", "percentunit", "",
					q(ratio(all, src), "{{source_namespace}}/{{source_workload}}")),
				ts("Failed requests (4xx and 5xx) by source", "reqps", "Which source workloads' requests fail, and with which status.",
					q(fmt.Sprintf(`sum by (%s, status) (rate(%s{%s, status=~"[45].."}%s))`, src, metric, all, rate), "{{source_namespace}}/{{source_workload}}: {{status}}")),
				ts("Request duration by source", "s", "",
					quantiles(bucket, all, src+", le", "{{source_namespace}}/{{source_workload}} ", "0.50", "0.95", "0.99")...),
			}},
			{title: "Requests by destination", panels: []panel{
				ts("Requests by destination and status", "reqps", "",
					q(fmt.Sprintf(`sum by (%s, status) (rate(%s{%s}%s))`, dstBy, metric, all, rate), "{{destination_namespace}}/{{destination_workload}}: {{status}}")),
				ts("Success rate (non-5xx) by destination", "percentunit", "",
					q(ratio(all, dstBy), "{{destination_namespace}}/{{destination_workload}}")),
				ts("Request duration by destination", "s", "",
					quantiles(bucket, all, dstBy+", le", "{{destination_namespace}}/{{destination_workload}} ", "0.50", "0.95", "0.99")...).wide(),
			}},
			{title: "Between workloads", panels: []panel{
				tableOf("Requests between workloads over the time range", "Requests by source, destination and status over the dashboard's time range: which workload's requests fail most.",
					q(fmt.Sprintf(`sum by (source_namespace, source_workload, destination_namespace, destination_workload, status) %s > 0`, added(fmt.Sprintf("%s{%s}", metric, all), "$__range")), "{{source_workload}} → {{destination_workload}} {{status}}")),
				tableOf("Latency between workloads over the time range", "p50 and p99 of the request duration for each source and destination pair.",
					q(fmt.Sprintf(`histogram_quantile(0.50, sum by (source_namespace, source_workload, destination_namespace, destination_workload, le) (rate(%s{%s}[$__range])))`, bucket, all), "p50"),
					q(fmt.Sprintf(`histogram_quantile(0.99, sum by (source_namespace, source_workload, destination_namespace, destination_workload, le) (rate(%s{%s}[$__range])))`, bucket, all), "p99")),
			}},
		},
	}
}
