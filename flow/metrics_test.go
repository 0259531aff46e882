package flow

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

const fullContext = "labelsContext=source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction"

func newTestMetrics(t testing.TB, config string) (*Metrics, *prometheus.Registry) {
	t.Helper()
	cfg, err := ParseMetricsConfig(config)
	if err != nil {
		t.Fatalf("ParseMetricsConfig(%q): %v", config, err)
	}
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(cfg, reg)
	if err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	return m, reg
}

func TestHandlerSeries(t *testing.T) {
	tests := []struct {
		name   string
		config string
		flows  []Flow
		names  []string
		want   string
	}{
		{
			name:   "httpV2 counts responses with inverted context",
			config: "httpV2:" + fullContext,
			flows: []Flow{
				httpRequest(Egress, "GET"), // requests are not counted by httpV2
				httpResponse(Egress, "GET", 200, 30*time.Millisecond, ""),
				httpResponse(Ingress, "POST", 403, 2*time.Second, ""),
			},
			names: []string{"hubble_http_requests_total", "hubble_http_request_duration_seconds"},
			want: `
# HELP hubble_http_request_duration_seconds Quantiles of HTTP request duration in seconds
# TYPE hubble_http_request_duration_seconds histogram
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="0.005"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="0.01"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="0.025"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="0.05"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="0.1"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="0.25"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="0.5"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="1"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="2.5"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="5"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="10"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress",le="+Inf"} 1
hubble_http_request_duration_seconds_sum{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress"} 0.03
hubble_http_request_duration_seconds_count{destination_namespace="shop",destination_workload="api",method="GET",reporter="client",source_namespace="shop",source_workload="frontend",traffic_direction="egress"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="0.005"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="0.01"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="0.025"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="0.05"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="0.1"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="0.25"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="0.5"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="1"} 0
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="2.5"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="5"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="10"} 1
hubble_http_request_duration_seconds_bucket{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress",le="+Inf"} 1
hubble_http_request_duration_seconds_sum{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress"} 2
hubble_http_request_duration_seconds_count{destination_namespace="shop",destination_workload="api",method="POST",reporter="server",source_namespace="shop",source_workload="frontend",traffic_direction="ingress"} 1
# HELP hubble_http_requests_total Count of HTTP requests
# TYPE hubble_http_requests_total counter
hubble_http_requests_total{destination_namespace="shop",destination_workload="api",method="GET",protocol="HTTP/1.1",reporter="client",source_namespace="shop",source_workload="frontend",status="200",traffic_direction="egress"} 1
hubble_http_requests_total{destination_namespace="shop",destination_workload="api",method="POST",protocol="HTTP/1.1",reporter="server",source_namespace="shop",source_workload="frontend",status="403",traffic_direction="ingress"} 1
`,
		},
		{
			name:   "httpV2 without context and unknown direction",
			config: "httpV2",
			flows:  []Flow{httpResponse(DirectionUnknown, "GET", 503, 0, ""), httpResponse(DirectionUnknown, "GET", 503, 0, "")},
			names:  []string{"hubble_http_requests_total"},
			want: `
# HELP hubble_http_requests_total Count of HTTP requests
# TYPE hubble_http_requests_total counter
hubble_http_requests_total{method="GET",protocol="HTTP/1.1",reporter="unknown",status="503"} 2
`,
		},
		{
			name:   "dns queries responses types and policy denied",
			config: "dns:labelsContext=source_namespace,source_app",
			flows: []Flow{
				dnsFlow(Forwarded, ReplyNo, 0, nil, nil),
				dnsFlow(Forwarded, ReplyYes, 0, []string{"192.0.2.1", "192.0.2.2"}, []string{"A", "A"}),
				dnsFlow(Forwarded, ReplyYes, 3, nil, nil),
				dnsFlow(Dropped, ReplyNo, 0, nil, nil),
			},
			names: []string{"hubble_dns_queries_total", "hubble_dns_responses_total", "hubble_dns_response_types_total"},
			want: `
# HELP hubble_dns_queries_total Number of DNS queries observed
# TYPE hubble_dns_queries_total counter
hubble_dns_queries_total{ips_returned="0",qtypes="A",rcode="",source_app="frontend",source_namespace="shop"} 1
hubble_dns_queries_total{ips_returned="0",qtypes="A",rcode="Policy denied",source_app="frontend",source_namespace="shop"} 1
# HELP hubble_dns_response_types_total Number of DNS response records observed, by record type
# TYPE hubble_dns_response_types_total counter
hubble_dns_response_types_total{qtypes="A",source_app="",source_namespace="kube-system",type="A"} 2
# HELP hubble_dns_responses_total Number of DNS responses observed
# TYPE hubble_dns_responses_total counter
hubble_dns_responses_total{ips_returned="0",qtypes="A",rcode="Non-Existent Domain",source_app="",source_namespace="kube-system"} 1
hubble_dns_responses_total{ips_returned="2",qtypes="A",rcode="No Error",source_app="",source_namespace="kube-system"} 1
`,
		},
		{
			name:   "dns query option and ignoreAAAA",
			config: "dns:query;ignoreAAAA",
			flows: func() []Flow {
				a := dnsFlow(Forwarded, ReplyNo, 0, nil, nil)
				aaaa := dnsFlow(Forwarded, ReplyNo, 0, nil, nil)
				aaaa.L7.DNS.Qtypes = []string{"AAAA"}
				return []Flow{a, aaaa}
			}(),
			names: []string{"hubble_dns_queries_total"},
			want: `
# HELP hubble_dns_queries_total Number of DNS queries observed
# TYPE hubble_dns_queries_total counter
hubble_dns_queries_total{ips_returned="0",qtypes="A",query="api.example.com.",rcode=""} 1
`,
		},
		{
			name:   "drop counts dropped flows only",
			config: "drop:labelsContext=destination_namespace,destination_pod",
			flows: []Flow{
				tcpFlow(Dropped, SYN, ReplyNo),
				tcpFlow(Dropped, SYN, ReplyNo),
				tcpFlow(Forwarded, SYN, ReplyNo),
				func() Flow { f := tcpFlow(Dropped, 0, ReplyNo); f.DropReason = ""; f.L4.Protocol = ProtoUDP; return f }(),
			},
			names: []string{"hubble_drop_total"},
			want: `
# HELP hubble_drop_total Number of drops
# TYPE hubble_drop_total counter
hubble_drop_total{destination_namespace="shop",destination_pod="api-5c6d7f8b9-xyz12",protocol="TCP",reason="POLICY_DENIED"} 2
hubble_drop_total{destination_namespace="shop",destination_pod="api-5c6d7f8b9-xyz12",protocol="UDP",reason="DROP_REASON_UNKNOWN"} 1
`,
		},
		{
			name:   "tcp flags of forwarded flows",
			config: "tcp:sourceContext=pod-short;destinationContext=namespace",
			flows: []Flow{
				tcpFlow(Forwarded, SYN, ReplyNo),
				tcpFlow(Forwarded, SYN|ACK, ReplyYes),
				tcpFlow(Redirected, FIN|ACK, ReplyNo),
				tcpFlow(Forwarded, RST, ReplyNo),
				tcpFlow(Forwarded, ACK, ReplyNo),
				tcpFlow(Dropped, SYN, ReplyNo),
			},
			names: []string{"hubble_tcp_flags_total"},
			want: `
# HELP hubble_tcp_flags_total TCP flag occurrences
# TYPE hubble_tcp_flags_total counter
hubble_tcp_flags_total{destination="shop",family="IPv4",flag="FIN",source="shop/frontend"} 1
hubble_tcp_flags_total{destination="shop",family="IPv4",flag="RST",source="shop/frontend"} 1
hubble_tcp_flags_total{destination="shop",family="IPv4",flag="SYN",source="shop/frontend"} 1
hubble_tcp_flags_total{destination="shop",family="IPv4",flag="SYN-ACK",source="shop/frontend"} 1
`,
		},
		{
			name:   "flow processed by type and subtype",
			config: "flow:labelsContext=traffic_direction",
			flows: []Flow{
				tcpFlow(Forwarded, SYN, ReplyNo),
				tcpFlow(Dropped, SYN, ReplyNo),
				httpRequest(Egress, "GET"),
				httpResponse(Egress, "GET", 200, time.Millisecond, ""),
				dnsFlow(Forwarded, ReplyNo, 0, nil, nil),
				{Verdict: Forwarded, Type: TypeL3L4, EventType: EventPolicyVerdict, L4: L4{Protocol: ProtoUDP}, TrafficDirection: Ingress},
			},
			names: []string{"hubble_flows_processed_total"},
			want: `
# HELP hubble_flows_processed_total Total number of flows processed
# TYPE hubble_flows_processed_total counter
hubble_flows_processed_total{protocol="DNS",subtype="DNS",traffic_direction="egress",type="L7",verdict="FORWARDED"} 1
hubble_flows_processed_total{protocol="HTTP",subtype="HTTP",traffic_direction="egress",type="L7",verdict="FORWARDED"} 2
hubble_flows_processed_total{protocol="TCP",subtype="",traffic_direction="egress",type="Drop",verdict="DROPPED"} 1
hubble_flows_processed_total{protocol="TCP",subtype="to-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{protocol="UDP",subtype="",traffic_direction="ingress",type="PolicyVerdict",verdict="FORWARDED"} 1
`,
		},
		{
			name:   "port distribution skips replies and unknown reply state",
			config: "port-distribution:labelsContext=source_ip,destination_ip",
			flows: []Flow{
				tcpFlow(Forwarded, SYN, ReplyNo),
				tcpFlow(Forwarded, SYN|ACK, ReplyYes),
				tcpFlow(Forwarded, ACK, ReplyUnknown),
				tcpFlow(Dropped, SYN, ReplyNo),
				icmpFlow(ProtoICMPv4, 8, 0),
			},
			names: []string{"hubble_port_distribution_total"},
			want: `
# HELP hubble_port_distribution_total Numbers of packets distributed by destination port
# TYPE hubble_port_distribution_total counter
hubble_port_distribution_total{destination_ip="1.1.1.1",port="0",protocol="ICMPv4",source_ip="10.0.0.1"} 1
hubble_port_distribution_total{destination_ip="10.0.0.2",port="8080",protocol="TCP",source_ip="10.0.0.1"} 1
`,
		},
		{
			name:   "icmp types",
			config: "icmp:destinationContext=reserved-identity",
			flows: []Flow{
				icmpFlow(ProtoICMPv4, 8, 0),
				icmpFlow(ProtoICMPv4, 3, 3),
				icmpFlow(ProtoICMPv6, 128, 0),
				icmpFlow(ProtoICMPv4, 200, 1),
				tcpFlow(Forwarded, SYN, ReplyNo),
			},
			names: []string{"hubble_icmp_total"},
			want: `
# HELP hubble_icmp_total Number of ICMP messages
# TYPE hubble_icmp_total counter
hubble_icmp_total{destination="reserved:world",family="IPv4",type="200(1)"} 1
hubble_icmp_total{destination="reserved:world",family="IPv4",type="DestinationUnreachable(Port)"} 1
hubble_icmp_total{destination="reserved:world",family="IPv4",type="EchoRequest"} 1
hubble_icmp_total{destination="reserved:world",family="IPv6",type="EchoRequest"} 1
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newTestMetrics(t, tt.config)
			for _, f := range tt.flows {
				m.Process(f)
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tt.want), tt.names...); err != nil {
				t.Error(err)
			}
		})
	}
}

// recordingRegisterer keeps what is registered, to read label order from
// the descriptors (the exposition format sorts labels, so it cannot show it).
type recordingRegisterer struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func TestMetricLabelOrder(t *testing.T) {
	const ctxOpt = "labelsContext=traffic_direction,destination_workload,source_ip,destination_app,source_namespace"
	ctx := []string{"source_ip", "source_namespace", "destination_workload", "destination_app", "traffic_direction"}
	cat := func(a []string, b ...string) []string { return append(slices.Clone(a), b...) }
	want := map[string][]string{
		"hubble_dns_queries_total":             cat(ctx, "rcode", "qtypes", "ips_returned"),
		"hubble_dns_responses_total":           cat(ctx, "rcode", "qtypes", "ips_returned"),
		"hubble_dns_response_types_total":      cat(ctx, "type", "qtypes"),
		"hubble_drop_total":                    cat(ctx, "reason", "protocol"),
		"hubble_tcp_flags_total":               cat([]string{"flag", "family"}, ctx...),
		"hubble_flows_processed_total":         cat([]string{"protocol", "type", "subtype", "verdict"}, ctx...),
		"hubble_port_distribution_total":       cat([]string{"protocol", "port"}, ctx...),
		"hubble_icmp_total":                    cat([]string{"family", "type"}, ctx...),
		"hubble_http_requests_total":           cat(ctx, "method", "protocol", "status", "reporter"),
		"hubble_http_request_duration_seconds": cat(ctx, "method", "reporter"),
	}
	var words []string
	for _, h := range []string{"dns", "drop", "tcp", "flow", "port-distribution", "icmp", "httpV2:exemplars=true"} {
		if strings.Contains(h, ":") {
			words = append(words, h+";"+ctxOpt)
		} else {
			words = append(words, h+":"+ctxOpt)
		}
	}
	cfg, err := ParseMetricsConfig(strings.Join(words, " "))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingRegisterer{Registerer: prometheus.NewRegistry()}
	if _, err := NewMetrics(cfg, rec); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 4)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read descriptor %s", d)
			}
			got[m[1]] = strings.Split(m[2], ",")
		}
	}
	if len(got) != len(want) {
		t.Errorf("registered %d metrics, want %d: %v", len(got), len(want), slices.Sorted(mapKeys(got)))
	}
	for name, labels := range want {
		t.Run(name, func(t *testing.T) {
			if !slices.Equal(got[name], labels) {
				t.Errorf("labels of %s = %v, want %v", name, got[name], labels)
			}
		})
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestHTTPExemplars(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		traceID string
		want    string // traceID exemplar label expected, "" for none
	}{
		{name: "exemplars on with trace", config: "httpV2:exemplars=true", traceID: "4bf92f3577b34da6a3ce929d0e0e4736", want: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{name: "exemplars on without trace", config: "httpV2:exemplars=true", traceID: "", want: ""},
		{name: "exemplars off", config: "httpV2", traceID: "4bf92f3577b34da6a3ce929d0e0e4736", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newTestMetrics(t, tt.config)
			m.Process(httpResponse(Egress, "GET", 200, 30*time.Millisecond, tt.traceID))
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, mf := range mfs {
				for _, mt := range mf.GetMetric() {
					var got string
					switch mf.GetName() {
					case "hubble_http_requests_total":
						for _, lp := range mt.GetCounter().GetExemplar().GetLabel() {
							if lp.GetName() == "traceID" {
								got = lp.GetValue()
							}
						}
					case "hubble_http_request_duration_seconds":
						for _, b := range mt.GetHistogram().GetBucket() {
							for _, lp := range b.GetExemplar().GetLabel() {
								if lp.GetName() == "traceID" {
									got = lp.GetValue()
								}
							}
						}
					default:
						continue
					}
					seen++
					if got != tt.want {
						t.Errorf("%s exemplar traceID = %q, want %q", mf.GetName(), got, tt.want)
					}
				}
			}
			if seen != 2 {
				t.Errorf("saw %d HTTP series, want 2", seen)
			}
		})
	}
}

func TestPromlint(t *testing.T) {
	m, reg := newTestMetrics(t, "dns;drop;tcp;flow;port-distribution;icmp;httpV2:exemplars=true;"+fullContext)
	// Create a series in every family so that the linter sees them all.
	for _, f := range []Flow{
		httpResponse(Egress, "GET", 200, time.Millisecond, ""), dnsFlow(Forwarded, ReplyYes, 0, []string{"192.0.2.1"}, []string{"A"}),
		dnsFlow(Forwarded, ReplyNo, 0, nil, nil), tcpFlow(Dropped, SYN, ReplyNo), tcpFlow(Forwarded, SYN, ReplyNo), icmpFlow(ProtoICMPv4, 8, 0),
	} {
		m.Process(f)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 10 {
		t.Errorf("gathered %d metric families, want 10", len(mfs))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestNewMetricsRegisterConflict(t *testing.T) {
	cfg, err := ParseMetricsConfig("drop")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(cfg, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(cfg, reg); err == nil || !strings.Contains(err.Error(), "register metrics of handler drop") {
		t.Errorf("second NewMetrics on the same registry: err = %v, want a registration error", err)
	}
}
