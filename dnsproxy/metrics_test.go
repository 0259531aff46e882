package dnsproxy

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/internal/metricslint"
)

// TestMetricsLint runs promlint over every moat_dnsproxy_* metric.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.reject(ReasonPolicyDenied, resultRefused)
	m.queries.WithLabelValues("udp", "allowed").Inc()
	m.upstream.WithLabelValues("udp").Observe(0.001)
	m.processing.WithLabelValues("udp").Observe(0.0001)
	m.hold.Observe(0.001)
	m.evictions.WithLabelValues("cap").Inc()
	problems, names, err := metricslint.Lint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	want := []string{"moat_dnsproxy_cache_evictions_total", "moat_dnsproxy_cache_ips", "moat_dnsproxy_cache_names", "moat_dnsproxy_hold_seconds",
		"moat_dnsproxy_inflight_queries", "moat_dnsproxy_processing_seconds", "moat_dnsproxy_queries_total", "moat_dnsproxy_rejected_total", "moat_dnsproxy_upstream_seconds"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("linted %v, want %v", names, want)
	}
	// Registering twice on one registry is an error, not a panic.
	if _, err := newMetrics(reg); err == nil {
		t.Error("second registration succeeded; want a duplicate-registration error")
	}
}

// TestHubbleDNSMetrics feeds the proxy's flows to package flow's Hubble
// "dns" handler, as the agent will, and checks Hubble's metrics and labels.
func TestHubbleDNSMetrics(t *testing.T) {
	hreg := prometheus.NewRegistry()
	cfg, err := flow.ParseMetricsConfig("dns:labelsContext=source_namespace")
	if err != nil {
		t.Fatal(err)
	}
	hm, err := flow.NewMetrics(cfg, hreg)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.OnFlow = hm.Process })
	h.up.setZone("www.allowed.test.", []string{"192.0.2.10", "192.0.2.11"})
	h.exchange("udp", mkQuery("www.allowed.test.", dns.TypeA))
	h.exchange("udp", mkQuery("evil.test.", dns.TypeA))
	h.exchange("tcp", mkQuery("gone.allowed.test.", dns.TypeA))
	// As in Hubble, a response flows from the server to the client: its
	// source_namespace is the server's (world here: empty), the client's
	// is destination_namespace.
	want := `
# HELP hubble_dns_queries_total Number of DNS queries observed
# TYPE hubble_dns_queries_total counter
hubble_dns_queries_total{ips_returned="0",qtypes="A",rcode="",source_namespace="default"} 2
hubble_dns_queries_total{ips_returned="0",qtypes="A",rcode="Policy denied",source_namespace="default"} 1
# HELP hubble_dns_response_types_total Number of DNS response records observed, by record type
# TYPE hubble_dns_response_types_total counter
hubble_dns_response_types_total{qtypes="A",source_namespace="",type="A"} 2
# HELP hubble_dns_responses_total Number of DNS responses observed
# TYPE hubble_dns_responses_total counter
hubble_dns_responses_total{ips_returned="0",qtypes="A",rcode="Non-Existent Domain",source_namespace=""} 1
hubble_dns_responses_total{ips_returned="2",qtypes="A",rcode="No Error",source_namespace=""} 1
`
	if err := testutil.GatherAndCompare(hreg, strings.NewReader(want), "hubble_dns_queries_total", "hubble_dns_responses_total", "hubble_dns_response_types_total"); err != nil {
		t.Error(err)
	}
}
