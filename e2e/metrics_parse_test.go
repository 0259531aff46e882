package e2e

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	const text = `# HELP hubble_drop_total Number of drops
# TYPE hubble_drop_total counter
hubble_drop_total{protocol="TCP",reason="POLICY_DENIED"} 3
hubble_drop_total{protocol="UDP",reason="POLICY_DENIED"} 1
# TYPE hubble_http_request_duration_seconds histogram
hubble_http_request_duration_seconds_bucket{method="GET",le="0.1"} 2
hubble_http_request_duration_seconds_bucket{method="GET",le="+Inf"} 3
hubble_http_request_duration_seconds_sum{method="GET"} 0.5
hubble_http_request_duration_seconds_count{method="GET"} 3
moat_policies 2
escaped{path="a\"b,c"} 1.5e+00
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		metric string
		labels map[string]string
		want   float64
		found  bool
	}{
		{name: "one series", metric: "hubble_drop_total", labels: map[string]string{"protocol": "TCP"}, want: 3, found: true},
		{name: "sum of series", metric: "hubble_drop_total", labels: map[string]string{"reason": "POLICY_DENIED"}, want: 4, found: true},
		{name: "no labels", metric: "moat_policies", want: 2, found: true},
		{name: "histogram count", metric: "hubble_http_request_duration_seconds_count", labels: map[string]string{"method": "GET"}, want: 3, found: true},
		{name: "histogram bucket", metric: "hubble_http_request_duration_seconds_bucket", labels: map[string]string{"le": "0.1"}, want: 2, found: true},
		{name: "escaped quote unescaped", metric: "escaped", labels: map[string]string{"path": `a"b,c`}, want: 1.5, found: true},
		{name: "absent label value", metric: "hubble_drop_total", labels: map[string]string{"protocol": "ICMPv4"}},
		{name: "absent metric", metric: "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found := m.sum(tt.metric, tt.labels)
			if got != tt.want || found != tt.found {
				t.Errorf("sum(%s, %v) = %v, %v; want %v, %v", tt.metric, tt.labels, got, found, tt.want, tt.found)
			}
		})
	}
	for _, s := range m {
		if s.name == "hubble_drop_total" && !slices.Equal(s.order, []string{"protocol", "reason"}) {
			t.Errorf("label order %v, want [protocol reason]", s.order)
		}
	}
	if _, err := parseMetrics(strings.NewReader("bad{x=\"1\" 3\n")); err == nil || !strings.Contains(err.Error(), "parse metrics") {
		t.Errorf("unbalanced braces: err %v, want a parse error", err)
	}
}
