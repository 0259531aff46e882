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
hubble_http_requests_total{method="GET",status="200"} 7 # {traceID="abc"} 1 1.7e9
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
		{name: "exemplar ignored", metric: "hubble_http_requests_total", want: 7, found: true},
		{name: "escaped quote", metric: "escaped", labels: map[string]string{"path": `a\"b,c`}, want: 1.5, found: true},
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
	if !slices.Equal(m[0].order, []string{"protocol", "reason"}) {
		t.Errorf("label order %v, want [protocol reason]", m[0].order)
	}
	if _, err := parseMetrics(strings.NewReader("bad{x=\"1\" 3\n")); err == nil {
		t.Error("unbalanced braces parsed without error")
	}
}
