package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

const metricsText = `# HELP moat_dnsproxy_hold_seconds x
# TYPE moat_dnsproxy_hold_seconds histogram
moat_dnsproxy_hold_seconds_bucket{le="0.001"} 50
moat_dnsproxy_hold_seconds_bucket{le="0.002"} 90
moat_dnsproxy_hold_seconds_bucket{le="0.004"} 100
moat_dnsproxy_hold_seconds_bucket{le="+Inf"} 100
moat_dnsproxy_hold_seconds_sum 0.1
moat_dnsproxy_hold_seconds_count 100
moat_dnsproxy_processing_seconds_bucket{protocol="tcp",le="0.001"} 1
moat_dnsproxy_processing_seconds_bucket{protocol="tcp",le="+Inf"} 1
moat_dnsproxy_processing_seconds_bucket{protocol="udp",le="0.001"} 9
moat_dnsproxy_processing_seconds_bucket{protocol="udp",le="+Inf"} 19
moat_dnsproxy_rejected_total{reason="hold_timeout",result="released"} 3
moat_dnsproxy_rejected_total{reason="policy_denied",result="refused"} 7
`

func TestMetrics(t *testing.T) {
	s, err := parseMetrics(strings.NewReader(metricsText))
	if err != nil {
		t.Fatal(err)
	}
	h := s.histogram("moat_dnsproxy_hold_seconds")
	if h.count != 100 || len(h.bounds) != 4 || !math.IsInf(h.bounds[3], 1) {
		t.Fatalf("%+v", h)
	}
	if q := h.quantile(0.5); math.Abs(q-0.001) > 1e-12 {
		t.Fatalf("p50 %v, want 0.001", q)
	}
	if q := h.quantile(0.7); math.Abs(q-0.0015) > 1e-12 {
		t.Fatalf("p70 %v, want 0.0015 (linear in the bucket)", q)
	}
	if q := h.quantile(0.99); math.Abs(q-0.0038) > 1e-12 {
		t.Fatalf("p99 %v, want 0.0038", q)
	}
	p := s.histogram("moat_dnsproxy_processing_seconds")
	if p.counts[0] != 10 || p.counts[1] != 20 {
		t.Fatalf("summed over protocol: %+v", p)
	}
	if q := p.quantile(0.99); q != 0.001 {
		t.Fatalf("p99 in +Inf: %v, want the last finite bound", q)
	}
	// A delta: before had 40 observations under 1ms.
	before := histogram{bounds: h.bounds, counts: []float64{40, 40, 40, 40}, count: 40}
	d := h.sub(before)
	if d.count != 60 || d.counts[0] != 10 || d.counts[3] != 60 {
		t.Fatalf("delta %+v", d)
	}
	if !math.IsNaN((histogram{}).quantile(0.5)) {
		t.Fatal("empty histogram quantile is not NaN")
	}
	if v := s.sum("moat_dnsproxy_rejected_total", map[string]string{"reason": "hold_timeout"}); v != 3 {
		t.Fatalf("hold timeouts %v", v)
	}
	if v := s.sum("moat_dnsproxy_rejected_total", nil); v != 10 {
		t.Fatalf("all rejected %v", v)
	}
}

func TestParseStatCPU(t *testing.T) {
	// comm with a space and a parenthesis; utime 250, stime 50 ticks.
	stat := "1234 (moat agent) (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	d, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if d != 3*time.Second {
		t.Fatalf("cpu %v, want 3s", d)
	}
	if _, err := parseStatCPU("garbage"); err == nil {
		t.Fatal("garbage parsed")
	}
}

func TestPerfTop(t *testing.T) {
	rep := "# Samples\n#\n    12.50%  [.] runtime.mallocgc  -  -  \n     3.00%  [k] _raw_spin_lock\n\n"
	got := perfTop(rep, 5)
	if len(got) != 2 || got[0] != "12.50% [.] runtime.mallocgc" {
		t.Fatalf("%q", got)
	}
}
