package flow

import (
	"testing"
	"time"
)

func BenchmarkProcessHTTPFlow(b *testing.B) {
	m, _ := newTestMetrics(b, "dns;drop;tcp;flow;port-distribution;icmp;httpV2:exemplars=true;"+fullContext)
	f := httpResponse(Egress, "GET", 200, 30*time.Millisecond, "4bf92f3577b34da6a3ce929d0e0e4736")
	b.ReportAllocs()
	for b.Loop() {
		m.Process(f)
	}
}

func BenchmarkRingWrite(b *testing.B) {
	r, err := NewRing(RingConfig{Capacity: 4096})
	if err != nil {
		b.Fatal(err)
	}
	_ = r.Subscribe(b.Context(), Filter{Verdicts: []Verdict{Dropped}})
	f := httpResponse(Egress, "GET", 200, 30*time.Millisecond, "")
	b.ReportAllocs()
	for b.Loop() {
		r.Write(f)
	}
}
