package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

// TestReport: medians, per-round ratios against direct and the goals from
// synthetic runs.
func TestReport(t *testing.T) {
	cfg := DefaultConfig()
	rep := newReport(cfg)
	lat := func(p50, p99 time.Duration) []time.Duration {
		out := make([]time.Duration, 100)
		for i := range out {
			out[i] = p50
		}
		out[98], out[99] = p99, p99
		return out
	}
	hold := histogram{bounds: []float64{0.001, 0.002, math.Inf(1)}, counts: []float64{50, 100, 100}, count: 100, sum: 0.1}
	run := func(sc string, rate int, qps float64, cpu time.Duration, l []time.Duration, h histogram) runResult {
		return runResult{Scenario: sc, Rate: rate, Perf: &perfResult{QPS: qps, Completed: int(qps) * 10, Sent: int(qps) * 10, Latencies: l}, AgentCPU: cpu, Hold: h}
	}
	for range 2 {
		rep.addRound([]runResult{
			run("direct", 0, 20000, 100*time.Millisecond, nil, histogram{}),
			run("direct", 5000, 5000, 0, lat(200*time.Microsecond, time.Millisecond), histogram{}),
			run("proxy", 0, 10000, 5*time.Second, nil, histogram{}),
			run("proxy", 5000, 5000, 0, lat(400*time.Microsecond, 1500*time.Microsecond), histogram{}),
			run("proxy+learn", 0, 5000, 5*time.Second, nil, hold),
			run("proxy+learn", 5000, 5000, 0, lat(time.Millisecond, 3*time.Millisecond), hold),
		})
	}
	rep.finish()
	byName := map[string]ScenarioReport{}
	for _, s := range rep.Scenarios {
		byName[s.Name] = s
	}
	// proxy: 5 s of CPU for 100,000 queries = 50 ms per 1k = 20k q/s/core.
	if p := byName["proxy"]; p.MaxQPS != 10000 || math.Abs(p.AgentCPUMsPer1k-50) > 1e-9 || math.Abs(p.QPSPerAgentCore-20000) > 1e-6 {
		t.Fatalf("proxy %+v", p)
	}
	if d := byName["direct"]; d.QPSPerAgentCore != 0 {
		t.Fatalf("direct has a per-core figure: %+v", d)
	}
	if l := byName["proxy+learn"]; math.Abs(l.HoldP50Ms-1) > 1e-9 || math.Abs(l.HoldMeanMs-1) > 1e-9 || l.Holds != 100 {
		t.Fatalf("learn hold %+v", l)
	}
	if r := rep.Ratios[0]; r.Scenario != "proxy" || r.QPSRatio[0] != 0.5 || math.Abs(r.AddedP99Ms[0]-0.5) > 1e-9 || math.Abs(r.AddedP50Ms[0]-0.2) > 1e-9 {
		t.Fatalf("proxy ratios %+v", r)
	}
	met := map[string]bool{}
	for _, g := range rep.Goals {
		met[g.Scenario+" "+g.Goal] = g.Met
	}
	if !met["proxy qps per agent core >="] || met["proxy+learn qps per agent core >="] || !met["proxy added p99 at 5000 qps (ms) <="] || met["proxy+learn added p99 at 5000 qps (ms) <="] {
		t.Fatalf("goals %v", met)
	}
	var b bytes.Buffer
	rep.WriteTable(&b)
	for _, want := range []string{"proxy+learn", "x0.50", "PASS", "MISS", "q/s/core"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, b.String())
		}
	}
}
